//! SIGKILL in the middle of ingest, then run again: the result equals an uninterrupted run's.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{dinoflow, json, run, write_workflow};

const WORKFLOW: &str = "name: kill-test\nstages:\n  photos:\n    kind: ingest\n    with:\n      source:\n        folder:\n          path: data/photos\n      max_side: 224\n      batch_size: 2\n      shard_rows: 2\n";

fn shards_without_manifest(store: &Path) -> bool {
    let Ok(dirs) = std::fs::read_dir(store.join("objects")) else { return false };
    dirs.flatten().any(|d| {
        !d.path().join("manifest.json").exists()
            && std::fs::read_dir(d.path().join("images"))
                .map(|mut f| f.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".parquet"))))
                .unwrap_or(false)
    })
}

fn images_digest(store: &Path, fingerprint: &str) -> String {
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.join("objects").join(fingerprint).join("manifest.json")).unwrap(),
    )
    .unwrap();
    m["outputs"]["images"]["digest"].as_str().unwrap().to_string()
}

#[test]
fn killed_ingest_resumes_to_the_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write_workflow(dir.path(), "wf.yaml", WORKFLOW);
    let killed_store = dir.path().join("killed");
    let clean_store = dir.path().join("clean");

    let mut child = dinoflow()
        .args(["--json", "run", &wf, "--store", killed_store.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !shards_without_manifest(&killed_store) {
        assert!(child.try_wait().unwrap().is_none(), "ingest finished before it could be killed");
        assert!(start.elapsed() < Duration::from_secs(60), "no shard appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(shards_without_manifest(&killed_store), "the partial output must not be committed");

    // The plan after the crash says the stage must run; the re-run completes.
    let plan = json(&run(&["--json", "plan", &wf, "--store", killed_store.to_str().unwrap()]));
    assert_eq!(plan[0]["state"], "run");
    let resumed = json(&run(&["--json", "run", &wf, "--store", killed_store.to_str().unwrap()]));
    assert_eq!(resumed["stages"][0]["status"], "ok");
    let clean = json(&run(&["--json", "run", &wf, "--store", clean_store.to_str().unwrap()]));
    let fp = clean["stages"][0]["fingerprint"].as_str().unwrap();
    assert_eq!(resumed["stages"][0]["fingerprint"].as_str().unwrap(), fp);
    assert_eq!(resumed["stages"][0]["rows"]["images"], clean["stages"][0]["rows"]["images"]);
    assert_eq!(images_digest(&killed_store, fp), images_digest(&clean_store, fp));
    // Nothing is left behind that gc would need to remove.
    let gc = json(&run(&["--json", "gc", "--store", killed_store.to_str().unwrap()]));
    assert_eq!(gc["removed"].as_array().unwrap().len(), 0);
}
