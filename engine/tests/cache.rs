//! The cache on a local store: hits, misses from damaged outputs, manifest-last commits, garbage
//! collection, failures and `keep_going`, and what the run database records. Output data is read
//! back and compared with values computed here.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::time::{Duration, Instant};

use common::{CHAIN, CHAIN_TOTAL, Env, fp, is_cached, opts, outcome, reasons, serial_opts, status};
use dinoflow_engine::{PlanState, StageStatus};
use dinoflow_storage::{CacheState, MANIFEST_FILE, Miss, OutputKind};

fn chain_values() -> Vec<i64> {
    (-3..17).collect()
}

fn chain_squares() -> Vec<i64> {
    chain_values().iter().map(|v| v * v).collect()
}

fn statuses(report: &dinoflow_engine::RunReport) -> BTreeMap<String, StageStatus> {
    report
        .stages
        .iter()
        .map(|s| (s.name.clone(), s.status))
        .collect()
}

fn all(names: &[&str], st: StageStatus) -> BTreeMap<String, StageStatus> {
    names.iter().map(|n| (n.to_string(), st)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_writes_correct_data_and_second_run_is_fully_cached() {
    let env = Env::new();
    let dag = env.dag(CHAIN);
    let plan = env.engine.plan(&dag).await.unwrap();

    let first = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert!(first.succeeded(), "{first:?}");
    assert_eq!(
        statuses(&first),
        all(&["nums", "squares", "total"], StageStatus::Ok)
    );
    for s in ["nums", "squares", "total"] {
        assert_eq!(env.runs.count(s), 1, "{s}");
        assert_eq!(outcome(&first, s).fingerprint, fp(&plan, s));
    }

    // The data, read back from the store.
    assert_eq!(env.values(&fp(&plan, "nums"), "rows").await, chain_values());
    assert_eq!(
        env.values(&fp(&plan, "squares"), "rows").await,
        chain_squares()
    );
    assert_eq!(env.values(&fp(&plan, "total"), "rows").await, [CHAIN_TOTAL]);
    assert_eq!(
        chain_squares().iter().sum::<i64>(),
        CHAIN_TOTAL,
        "the test's own arithmetic"
    );

    // Shards as configured: 20 rows in 4-row shards, 20 rows in 6-row shards.
    let nums = env.manifest(&fp(&plan, "nums")).await;
    let rows = &nums.outputs["rows"];
    assert_eq!(rows.kind, OutputKind::Dataset);
    assert_eq!(rows.rows, Some(20));
    let shard_rows: Vec<Option<u64>> = rows.files.iter().map(|f| f.rows).collect();
    assert_eq!(shard_rows, [Some(4); 5]);
    let squares = env.manifest(&fp(&plan, "squares")).await;
    let shard_rows: Vec<Option<u64>> = squares.outputs["rows"]
        .files
        .iter()
        .map(|f| f.rows)
        .collect();
    assert_eq!(shard_rows, [Some(6), Some(6), Some(6), Some(2)]);
    for f in &squares.outputs["rows"].files {
        let on_disk = env.object_path(&fp(&plan, "squares")).join(&f.path);
        assert_eq!(std::fs::metadata(&on_disk).unwrap().len(), f.size, "{f:?}");
    }
    assert_eq!(
        outcome(&first, "squares").rows,
        BTreeMap::from([("rows".to_string(), 20)])
    );
    assert_eq!(nums.kind, "numbers");
    assert_eq!(nums.version, "1.2.0");

    // Second run: nothing runs.
    let second = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert!(second.succeeded());
    assert_eq!(
        statuses(&second),
        all(&["nums", "squares", "total"], StageStatus::Cached)
    );
    for s in ["nums", "squares", "total"] {
        assert_eq!(env.runs.count(s), 1, "{s} ran again");
        assert_eq!(outcome(&second, s).fingerprint, fp(&plan, s));
    }
    assert_eq!(
        outcome(&second, "squares").rows,
        BTreeMap::from([("rows".to_string(), 20)])
    );

    // The run database has both runs, newest first, with every stage's status and fingerprint.
    let db = env.engine.db();
    let runs = db.runs(10).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0].id, runs[1].id), (second.run_id, first.run_id));
    for r in &runs {
        assert_eq!(r.workflow, "chain");
        assert_eq!(r.file, "wf.yaml");
        assert_eq!(r.status, "ok");
        assert!(r.finished.is_some() && r.error.is_none(), "{r:?}");
    }
    let rows = db.stages_of_run(first.run_id).unwrap();
    let got: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.stage.as_str(), r.status.as_str(), r.fingerprint.as_str()))
        .collect();
    let nums_fp = fp(&plan, "nums");
    let squares_fp = fp(&plan, "squares");
    let total_fp = fp(&plan, "total");
    assert_eq!(
        got,
        [
            ("nums", "ok", nums_fp.as_str()),
            ("squares", "ok", squares_fp.as_str()),
            ("total", "ok", total_fp.as_str()),
        ]
    );
    // Each stage recorded its row count as a metric.
    assert_eq!(rows[0].metrics, serde_json::json!({"rows": 20}));
    assert_eq!(rows[2].metrics, serde_json::json!({"rows": 1}));
    assert_eq!(rows[0].kind, "numbers");
    assert_eq!(rows[0].version, "1.2.0");
    assert!(
        rows.iter()
            .all(|r| r.seconds.is_some() && r.error.is_none())
    );
    let cached: Vec<(String, String)> = db
        .stages_of_run(second.run_id)
        .unwrap()
        .into_iter()
        .map(|r| (r.stage, r.status))
        .collect();
    assert_eq!(
        cached,
        [
            ("nums".to_string(), "cached".to_string()),
            ("squares".to_string(), "cached".to_string()),
            ("total".to_string(), "cached".to_string()),
        ]
    );
    assert_eq!(db.history_of_stage("squares").unwrap().len(), 2);
}

#[tokio::test]
async fn cache_survives_reopening_the_engine_and_losing_the_database() {
    let env = Env::new();
    let dag = env.dag(CHAIN);
    assert!(
        env.engine
            .run(&dag, &opts(false))
            .await
            .unwrap()
            .succeeded()
    );

    // A new engine on the same folder: still cached.
    let again = Env::open_engine(&env.root());
    let report = again.run(&dag, &opts(false)).await.unwrap();
    assert_eq!(
        statuses(&report),
        all(&["nums", "squares", "total"], StageStatus::Cached)
    );
    assert_eq!(again.db().runs(10).unwrap().len(), 2);
    drop(again);

    // The database is history, not truth: without it the store still gives cache hits.
    for f in ["runs.db", "runs.db-wal", "runs.db-shm"] {
        let _ = std::fs::remove_file(env.root().join(f));
    }
    let fresh = Env::open_engine(&env.root());
    assert!(fresh.db().runs(10).unwrap().is_empty());
    let plan = fresh.plan(&dag).await.unwrap();
    for s in ["nums", "squares", "total"] {
        assert!(is_cached(&plan, s), "{s}");
    }
    assert_eq!(env.runs.total(), 3);
}

#[tokio::test]
async fn deleted_shard_reruns_exactly_that_stage() {
    let env = Env::new();
    let dag = env.dag(CHAIN);
    let plan = env.engine.plan(&dag).await.unwrap();
    assert!(
        env.engine
            .run(&dag, &opts(false))
            .await
            .unwrap()
            .succeeded()
    );

    let squares_fp = fp(&plan, "squares");
    let shard = env
        .object_path(&squares_fp)
        .join("rows")
        .join("part-00001.parquet");
    assert!(shard.is_file(), "{shard:?}");
    std::fs::remove_file(&shard).unwrap();

    let plan2 = env.engine.plan(&dag).await.unwrap();
    assert!(is_cached(&plan2, "nums"));
    assert!(
        is_cached(&plan2, "total"),
        "fingerprints do not depend on the files"
    );
    let why = reasons(&plan2, "squares");
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0].contains(&format!("objects/{squares_fp}/rows/part-00001.parquet"))
            && why[0].contains("missing"),
        "{why:?}"
    );
    // Every stage keeps its fingerprint.
    for s in ["nums", "squares", "total"] {
        assert_eq!(fp(&plan2, s), fp(&plan, s));
    }

    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(status(&report, "nums"), StageStatus::Cached);
    assert_eq!(status(&report, "squares"), StageStatus::Ok);
    assert_eq!(status(&report, "total"), StageStatus::Cached);
    assert_eq!(
        env.runs.snapshot(),
        BTreeMap::from([
            ("nums".to_string(), 1),
            ("squares".to_string(), 2),
            ("total".to_string(), 1),
        ])
    );
    assert!(shard.is_file(), "the shard is written again");
    assert_eq!(env.values(&squares_fp, "rows").await, chain_squares());
}

#[tokio::test]
async fn truncated_shard_is_a_miss() {
    let env = Env::new();
    let dag = env.dag(CHAIN);
    let plan = env.engine.plan(&dag).await.unwrap();
    assert!(
        env.engine
            .run(&dag, &opts(false))
            .await
            .unwrap()
            .succeeded()
    );

    let nums_fp = fp(&plan, "nums");
    let shard = env.object_path(&nums_fp).join("rows/part-00000.parquet");
    let size = std::fs::metadata(&shard).unwrap().len();
    let cut = size / 2;
    OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(cut)
        .unwrap();

    match env.store().check_cached(&nums_fp).await.unwrap() {
        CacheState::Miss(Miss::WrongSize {
            path,
            expected,
            actual,
        }) => {
            assert_eq!(path, format!("objects/{nums_fp}/rows/part-00000.parquet"));
            assert_eq!((expected, actual), (size, cut));
        }
        other => panic!("expected a size mismatch, got {other:?}"),
    }
    let plan2 = env.engine.plan(&dag).await.unwrap();
    let why = reasons(&plan2, "nums");
    assert!(
        why.iter().any(|r| r.contains("part-00000.parquet")
            && r.contains(&cut.to_string())
            && r.contains(&size.to_string())),
        "{why:?}"
    );
    assert!(is_cached(&plan2, "squares") && is_cached(&plan2, "total"));

    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert_eq!(status(&report, "nums"), StageStatus::Ok);
    assert_eq!(status(&report, "squares"), StageStatus::Cached);
    assert_eq!(status(&report, "total"), StageStatus::Cached);
    assert_eq!(env.runs.count("nums"), 2);
    assert_eq!(env.runs.count("squares"), 1);
    assert_eq!(std::fs::metadata(&shard).unwrap().len(), size);
    assert_eq!(env.values(&nums_fp, "rows").await, chain_values());
}

#[tokio::test]
async fn unreadable_manifest_is_a_miss() {
    let env = Env::new();
    let dag = env.dag(CHAIN);
    let plan = env.engine.plan(&dag).await.unwrap();
    assert!(
        env.engine
            .run(&dag, &opts(false))
            .await
            .unwrap()
            .succeeded()
    );
    let total_fp = fp(&plan, "total");
    std::fs::write(
        env.object_path(&total_fp).join(MANIFEST_FILE),
        b"{\"fingerp",
    )
    .unwrap();
    let plan2 = env.engine.plan(&dag).await.unwrap();
    let why = reasons(&plan2, "total");
    assert!(why.iter().any(|r| r.contains("manifest")), "{why:?}");
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert_eq!(status(&report, "total"), StageStatus::Ok);
    assert_eq!(env.values(&total_fp, "rows").await, [CHAIN_TOTAL]);
}

#[tokio::test]
async fn gc_removes_incomplete_outputs_and_keeps_complete_ones() {
    let env = Env::new();
    let dag = env.dag(CHAIN);
    let plan = env.engine.plan(&dag).await.unwrap();
    assert!(
        env.engine
            .run(&dag, &opts(false))
            .await
            .unwrap()
            .succeeded()
    );

    // A run that crashed before its commit: files, no manifest.
    let crashed = "0123456789abcdef0123456789abcdef";
    let dir = env.object_path(crashed).join("rows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("part-00000.parquet"), vec![7u8; 1000]).unwrap();
    std::fs::write(dir.join("part-00001.parquet"), vec![7u8; 234]).unwrap();
    // A committed output damaged by hand: one of its files is gone.
    let total_fp = fp(&plan, "total");
    let shard = env.object_path(&total_fp).join("rows/part-00000.parquet");
    let shard_size = std::fs::metadata(&shard).unwrap().len();
    std::fs::remove_file(&shard).unwrap();
    let manifest_size = std::fs::metadata(env.object_path(&total_fp).join(MANIFEST_FILE))
        .unwrap()
        .len();

    let report = env.engine.gc().await.unwrap();
    let mut removed = report.removed.clone();
    removed.sort();
    let mut expected = vec![crashed.to_string(), total_fp.clone()];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(report.bytes, 1000 + 234 + manifest_size);
    assert!(report.in_use.is_empty());
    assert!(!env.object_path(crashed).exists());
    assert!(!env.object_path(&total_fp).exists());
    assert!(shard_size > 0);

    // Complete outputs are kept, untouched.
    for s in ["nums", "squares"] {
        assert!(
            matches!(
                env.store().check_cached(&fp(&plan, s)).await.unwrap(),
                CacheState::Hit(_)
            ),
            "{s}"
        );
    }
    // A second gc finds nothing.
    let again = env.engine.gc().await.unwrap();
    assert!(again.removed.is_empty() && again.bytes == 0, "{again:?}");

    // The next run rebuilds only what gc removed.
    let run = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert_eq!(status(&run, "nums"), StageStatus::Cached);
    assert_eq!(status(&run, "squares"), StageStatus::Cached);
    assert_eq!(status(&run, "total"), StageStatus::Ok);
    assert_eq!(env.values(&total_fp, "rows").await, [CHAIN_TOTAL]);
}

#[tokio::test]
async fn artifact_outputs_are_committed_and_checked() {
    let env = Env::new();
    let dag = env.dag("name: art\nstages:\n  m:\n    kind: blob\n    with: {size: 300}\n");
    let plan = env.engine.plan(&dag).await.unwrap();
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert!(report.succeeded());
    let m_fp = fp(&plan, "m");
    let m = env.manifest(&m_fp).await;
    let model = &m.outputs["model"];
    assert_eq!(model.kind, OutputKind::Artifact);
    assert_eq!(model.rows, None);
    assert_eq!(model.files.len(), 1);
    assert_eq!(model.files[0].path, "model/weights.bin");
    assert_eq!(model.files[0].size, 300);
    let bytes = std::fs::read(env.object_path(&m_fp).join("model/weights.bin")).unwrap();
    assert_eq!(bytes.len(), 300);
    assert_eq!(bytes[250..253], [250, 0, 1]);
    assert!(outcome(&report, "m").rows.is_empty());

    std::fs::write(env.object_path(&m_fp).join("model/weights.bin"), b"short").unwrap();
    let plan = env.engine.plan(&dag).await.unwrap();
    assert!(
        reasons(&plan, "m")
            .iter()
            .any(|r| r.contains("5 bytes") && r.contains("300")),
        "{plan:?}"
    );
}

/// src → bad (fails after writing a shard) → after.
const FAILING: &str = "\
name: failing
stages:
  src:
    kind: numbers
    with: {count: 3}
  bad:
    kind: check
    inputs: {rows: src}
    with: {fail: true}
  after:
    kind: square
    inputs: {rows: bad}
";

#[tokio::test]
async fn a_failing_stage_commits_nothing_and_its_consumers_are_skipped() {
    let env = Env::new();
    let dag = env.dag(FAILING);
    let plan = env.engine.plan(&dag).await.unwrap();
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();

    assert!(!report.succeeded());
    assert_eq!(report.status, "failed");
    assert_eq!(status(&report, "src"), StageStatus::Ok);
    assert_eq!(status(&report, "bad"), StageStatus::Failed);
    assert_eq!(status(&report, "after"), StageStatus::Skipped);
    let err = outcome(&report, "bad").error.clone().unwrap();
    assert!(err.contains("check was asked to fail"), "{err}");
    assert!(outcome(&report, "bad").rows.is_empty());
    assert_eq!(env.runs.count("bad"), 1);
    assert_eq!(env.runs.count("after"), 0);

    // The shard the stage wrote before failing is there, but no manifest: not visible.
    let bad_fp = fp(&plan, "bad");
    let bad_dir = env.object_path(&bad_fp);
    assert!(bad_dir.join("rows/part-00000.parquet").is_file());
    assert!(!bad_dir.join(MANIFEST_FILE).exists());
    assert!(matches!(
        env.store().check_cached(&bad_fp).await.unwrap(),
        CacheState::Miss(Miss::NoManifest)
    ));
    assert!(!env.object_path(&fp(&plan, "after")).exists());

    // The run database says what happened.
    let run = env.engine.db().run(report.run_id).unwrap().unwrap();
    assert_eq!(run.status, "failed");
    let run_err = run.error.unwrap_or_default();
    assert!(
        run_err.contains("stage `bad`") && run_err.contains("check was asked to fail"),
        "{run_err}"
    );
    let rows = env.engine.db().stages_of_run(report.run_id).unwrap();
    let got: BTreeMap<&str, (&str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.stage.as_str(), (r.status.as_str(), r.error.as_deref())))
        .collect();
    assert_eq!(got["src"], ("ok", None));
    assert_eq!(got["bad"].0, "failed");
    assert!(got["bad"].1.unwrap().contains("check was asked to fail"));
    assert_eq!(got["after"].0, "skipped");
    assert!(got["after"].1.unwrap().contains("input failed"), "{got:?}");

    // A failed stage is still to run; the plan does not claim it was done.
    let again = env.engine.plan(&dag).await.unwrap();
    assert!(is_cached(&again, "src"));
    assert!(matches!(
        planned_state(&again, "bad"),
        PlanState::Run { .. }
    ));

    // gc clears what the failed run left.
    let gc = env.engine.gc().await.unwrap();
    assert_eq!(gc.removed, [bad_fp.as_str()]);
    assert!(!bad_dir.exists());

    // Fixed: the failed stage and its consumer run, the rest is cached.
    let fixed = env.dag(&FAILING.replace("fail: true", "fail: false"));
    let report = env.engine.run(&fixed, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(status(&report, "src"), StageStatus::Cached);
    assert_eq!(status(&report, "bad"), StageStatus::Ok);
    assert_eq!(status(&report, "after"), StageStatus::Ok);
    assert_eq!(
        env.values(&outcome(&report, "after").fingerprint, "rows")
            .await,
        [0, 1, 4]
    );
}

fn planned_state<'a>(plan: &'a [dinoflow_engine::PlannedStage], name: &str) -> &'a PlanState {
    &common::planned(plan, name).state
}

/// A failing branch and an independent one, run one stage at a time in this order.
const BRANCHES: &str = "\
name: branches
stages:
  bad:
    kind: check
    with: {fail: true}
  after_bad:
    kind: square
    inputs: {rows: bad}
  good:
    kind: numbers
    with: {count: 4, start: 2}
  good_sq:
    kind: square
    inputs: {rows: good}
";

#[tokio::test]
async fn fail_fast_stops_independent_branches() {
    let env = Env::new();
    let dag = env.dag(BRANCHES);
    let plan = env.engine.plan(&dag).await.unwrap();
    let report = env.engine.run(&dag, &serial_opts(false)).await.unwrap();
    assert_eq!(report.status, "failed");
    let mut expected = all(&["after_bad", "good", "good_sq"], StageStatus::Skipped);
    expected.insert("bad".into(), StageStatus::Failed);
    assert_eq!(statuses(&report), expected);
    assert_eq!(env.runs.count("good"), 0);
    assert_eq!(env.runs.count("good_sq"), 0);
    assert!(!env.object_path(&fp(&plan, "good")).exists());
    // `after_bad` waits on the failed stage; `good` and `good_sq` were stopped by it.
    let reason = |s: &str| outcome(&report, s).error.clone().unwrap_or_default();
    assert!(reason("after_bad").contains("input failed"), "{report:?}");
    assert!(reason("good").contains("stopped"), "{report:?}");
    assert!(reason("good_sq").contains("stopped"), "{report:?}");
    let db: Vec<String> = env
        .engine
        .db()
        .stages_of_run(report.run_id)
        .unwrap()
        .into_iter()
        .map(|r| format!("{}={}", r.stage, r.status))
        .collect();
    assert_eq!(
        db,
        [
            "bad=failed",
            "after_bad=skipped",
            "good=skipped",
            "good_sq=skipped"
        ]
    );
}

#[tokio::test]
async fn keep_going_finishes_independent_branches() {
    let env = Env::new();
    let dag = env.dag(BRANCHES);
    let plan = env.engine.plan(&dag).await.unwrap();
    let report = env.engine.run(&dag, &serial_opts(true)).await.unwrap();
    assert_eq!(report.status, "failed", "a failed stage fails the run");
    assert_eq!(status(&report, "bad"), StageStatus::Failed);
    assert_eq!(status(&report, "after_bad"), StageStatus::Skipped);
    assert_eq!(status(&report, "good"), StageStatus::Ok);
    assert_eq!(status(&report, "good_sq"), StageStatus::Ok);
    assert_eq!(env.runs.count("after_bad"), 0);
    assert_eq!(
        env.values(&fp(&plan, "good_sq"), "rows").await,
        [4, 9, 16, 25]
    );
    let run = env.engine.db().run(report.run_id).unwrap().unwrap();
    assert_eq!(run.status, "failed");

    // The finished branch is cached next time; the failed one is tried again.
    let again = env.engine.run(&dag, &serial_opts(true)).await.unwrap();
    assert_eq!(status(&again, "good"), StageStatus::Cached);
    assert_eq!(status(&again, "good_sq"), StageStatus::Cached);
    assert_eq!(status(&again, "bad"), StageStatus::Failed);
    assert_eq!(env.runs.count("bad"), 2);
    assert_eq!(env.runs.count("good"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_cancels_stages_already_running() {
    let env = Env::new();
    let yaml = "\
name: cancel
stages:
  slow:
    kind: check
    with: {delay_ms: 5000}
  bad:
    kind: check
    with: {fail: true, delay_ms: 50}
";
    let dag = env.dag(yaml);
    let plan = env.engine.plan(&dag).await.unwrap();
    let t = Instant::now();
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(4000),
        "the slow stage was waited for: {:?}",
        t.elapsed()
    );
    assert_eq!(report.status, "failed");
    assert_eq!(status(&report, "bad"), StageStatus::Failed);
    assert_eq!(status(&report, "slow"), StageStatus::Cancelled);
    assert!(matches!(
        env.store().check_cached(&fp(&plan, "slow")).await.unwrap(),
        CacheState::Miss(Miss::NoManifest)
    ));
    let rows = env.engine.db().stages_of_run(report.run_id).unwrap();
    let slow = rows.iter().find(|r| r.stage == "slow").unwrap();
    assert_eq!(slow.status, "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_going_lets_running_stages_finish() {
    let env = Env::new();
    let yaml = "\
name: cancel
stages:
  slow:
    kind: check
    with: {delay_ms: 300}
  bad:
    kind: check
    with: {fail: true, delay_ms: 10}
";
    let dag = env.dag(yaml);
    let plan = env.engine.plan(&dag).await.unwrap();
    let report = env.engine.run(&dag, &opts(true)).await.unwrap();
    assert_eq!(status(&report, "bad"), StageStatus::Failed);
    assert_eq!(status(&report, "slow"), StageStatus::Ok);
    assert_eq!(env.values(&fp(&plan, "slow"), "rows").await, [1, 2, 3]);
}

#[tokio::test]
async fn a_panicking_stage_fails_cleanly() {
    let env = Env::new();
    let dag = env.dag(
        "\
name: panics
stages:
  boom:
    kind: check
    with: {panic: true}
  after:
    kind: square
    inputs: {rows: boom}
",
    );
    let plan = env.engine.plan(&dag).await.unwrap();
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert_eq!(report.status, "failed");
    assert_eq!(status(&report, "boom"), StageStatus::Failed);
    let err = outcome(&report, "boom").error.clone().unwrap_or_default();
    assert!(
        err.contains("panicked") && err.contains("check was asked to panic"),
        "{err}"
    );
    assert_eq!(status(&report, "after"), StageStatus::Skipped);
    assert!(matches!(
        env.store().check_cached(&fp(&plan, "boom")).await.unwrap(),
        CacheState::Miss(Miss::NoManifest)
    ));
    let run = env.engine.db().run(report.run_id).unwrap().unwrap();
    assert_eq!(run.status, "failed");
}

#[tokio::test]
async fn a_stage_needing_more_gpus_than_the_machine_has_fails_without_running() {
    let env = Env::new();
    let dag = env.dag(
        "\
name: gpu
stages:
  big:
    kind: numbers
    with: {count: 3}
    resources: {gpus: 1}
",
    );
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert_eq!(status(&report, "big"), StageStatus::Failed);
    let err = outcome(&report, "big").error.clone().unwrap_or_default();
    assert!(err.contains("GPU"), "{err}");
    assert_eq!(env.runs.count("big"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_leaves_alone_outputs_that_a_running_stage_is_writing() {
    let env = Env::new();
    let dag = env.dag(
        "\
name: busy
stages:
  slow:
    kind: check
    with: {delay_ms: 1500}
",
    );
    let plan = env.engine.plan(&dag).await.unwrap();
    let slow_fp = fp(&plan, "slow");
    let shard = env.object_path(&slow_fp).join("rows/part-00000.parquet");
    let o = opts(false);
    let (report, gc) = tokio::join!(env.engine.run(&dag, &o), async {
        // Wait until the stage has written its files (it commits 1.5 s later).
        let t = Instant::now();
        while !shard.is_file() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the stage never wrote"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        env.engine.gc().await.unwrap()
    });
    assert_eq!(gc.in_use, [slow_fp.as_str()]);
    assert!(gc.removed.is_empty(), "{gc:?}");
    let report = report.unwrap();
    assert_eq!(status(&report, "slow"), StageStatus::Ok);
    assert_eq!(env.values(&slow_fp, "rows").await, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runs_of_one_workflow_at_once_run_each_stage_once() {
    let env = Env::new();
    let other = Env::open_engine(&env.root());
    let dag = env.dag(
        "\
name: twice
stages:
  slow:
    kind: check
    with: {delay_ms: 400}
  sq:
    kind: square
    inputs: {rows: slow}
",
    );
    let plan = env.engine.plan(&dag).await.unwrap();
    let o = opts(false);
    let (a, b) = tokio::join!(env.engine.run(&dag, &o), other.run(&dag, &o));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.succeeded() && b.succeeded(), "{a:?} {b:?}");
    assert_eq!(env.runs.count("slow"), 1);
    assert_eq!(env.runs.count("sq"), 1);
    for s in ["slow", "sq"] {
        let mut both = [status(&a, s), status(&b, s)];
        both.sort_by_key(|st| format!("{st:?}"));
        assert_eq!(both, [StageStatus::Cached, StageStatus::Ok], "{s}");
    }
    assert_eq!(env.values(&fp(&plan, "sq"), "rows").await, [1, 4, 9]);
    // Both runs are in the one database.
    assert_eq!(env.engine.db().runs(10).unwrap().len(), 2);
}
