//! The run database opens files written by earlier versions: columns added since (the workflow
//! text and preset of each run) are added empty, old rows stay readable, new runs record them.

mod common;

use dinoflow_engine::{Dag, RunDb};

#[test]
fn an_older_database_gains_the_new_columns_and_keeps_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    // The runs table as version 0.1.0 wrote it, with one finished run.
    let old = rusqlite::Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            workflow TEXT NOT NULL, file TEXT NOT NULL, store TEXT NOT NULL,
            started TEXT NOT NULL, finished TEXT, status TEXT NOT NULL, error TEXT);
         INSERT INTO runs (workflow, file, store, started, finished, status)
         VALUES ('old', 'old.yaml', '.dinoflow', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z', 'ok');",
    )
    .unwrap();
    drop(old);

    let db = RunDb::open(&path).unwrap();
    let runs = db.runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].workflow.as_str(), runs[0].status.as_str()),
        ("old", "ok")
    );
    assert_eq!(
        (runs[0].source.clone(), runs[0].preset.clone()),
        (None, None)
    );

    let yaml = "name: new\nstages:\n  nums:\n    kind: numbers\n    with: {count: 3}\n";
    let registry = common::registry(&common::Runs::default());
    let dag = Dag::parse("new.yaml", yaml, &registry).unwrap();
    let id = db.start_run(&dag, ".dinoflow").unwrap();
    let run = db.run(id).unwrap().unwrap();
    assert_eq!(run.source.as_deref(), Some(yaml));
    assert_eq!(run.preset, None);
    // Opening it again (a second process) changes nothing.
    drop(db);
    assert_eq!(RunDb::open(&path).unwrap().runs(10).unwrap().len(), 2);
}
