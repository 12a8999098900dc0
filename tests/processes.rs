//! Process-level robustness: SIGKILL mid-ingest then resume, Ctrl-C, two processes on one store.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{dinoflow, json, output_digests, run, write_workflow};

const WORKFLOW: &str = "name: kill-test\nstages:\n  photos:\n    kind: ingest\n    with:\n      source:\n        folder:\n          path: data/photos\n      max_side: 224\n      batch_size: 2\n      shard_rows: 2\n";

/// Whether `dir` or a folder below it holds a Parquet file.
fn holds_parquet(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name().to_string_lossy().ends_with(".parquet") || holds_parquet(&e.path())
        })
    })
}

fn shards_without_manifest(store: &Path) -> bool {
    let Ok(dirs) = std::fs::read_dir(store.join("objects")) else {
        return false;
    };
    dirs.flatten()
        .any(|d| !d.path().join("manifest.json").exists() && holds_parquet(&d.path()))
}

/// Starts `dinoflow --json run WF --store STORE` in the background.
fn spawn_run(wf: &str, store: &Path) -> std::process::Child {
    dinoflow()
        .args(["--json", "run", wf, "--store", store.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until some shard is written but not committed.
fn wait_for_partial_output(child: &mut std::process::Child, store: &Path) {
    let start = Instant::now();
    while !shards_without_manifest(store) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ingest finished before it could be interrupted"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no shard appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn killed_ingest_resumes_to_the_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write_workflow(dir.path(), "wf.yaml", WORKFLOW);
    let killed_store = dir.path().join("killed");
    let clean_store = dir.path().join("clean");

    let mut child = spawn_run(&wf, &killed_store);
    wait_for_partial_output(&mut child, &killed_store);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        shards_without_manifest(&killed_store),
        "the partial output must not be committed"
    );

    // The plan after the crash says the stage must run; the re-run completes.
    let plan = json(&run(&[
        "--json",
        "plan",
        &wf,
        "--store",
        killed_store.to_str().unwrap(),
    ]));
    assert_eq!(plan[0]["state"], "run");
    let resumed = json(&run(&[
        "--json",
        "run",
        &wf,
        "--store",
        killed_store.to_str().unwrap(),
    ]));
    assert_eq!(resumed["stages"][0]["status"], "ok");
    let clean = json(&run(&[
        "--json",
        "run",
        &wf,
        "--store",
        clean_store.to_str().unwrap(),
    ]));
    let fp = clean["stages"][0]["fingerprint"].as_str().unwrap();
    assert_eq!(resumed["stages"][0]["fingerprint"].as_str().unwrap(), fp);
    assert_eq!(
        resumed["stages"][0]["rows"]["images"],
        clean["stages"][0]["rows"]["images"]
    );
    assert_eq!(
        output_digests(&killed_store, fp)["images"],
        output_digests(&clean_store, fp)["images"]
    );
    // Nothing is left behind that gc would need to remove.
    let gc = json(&run(&[
        "--json",
        "gc",
        "--store",
        killed_store.to_str().unwrap(),
    ]));
    assert_eq!(gc["removed"].as_array().unwrap().len(), 0);
}

#[test]
fn ctrl_c_cancels_with_exit_130_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write_workflow(dir.path(), "wf.yaml", WORKFLOW);
    let store = dir.path().join("store");
    let mut child = spawn_run(&wf, &store);
    wait_for_partial_output(&mut child, &store);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(shards_without_manifest(&store));
    let runs = json(&run(&[
        "--json",
        "runs",
        "--store",
        store.to_str().unwrap(),
    ]));
    assert_eq!(runs[0]["status"], "cancelled");
}

#[test]
fn two_processes_on_one_store_write_each_output_once() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write_workflow(dir.path(), "wf.yaml", WORKFLOW);
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let a = spawn_run(&wf, &store);
    let b = spawn_run(&wf, &store);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let (ra, rb): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&a.stdout).unwrap(),
        serde_json::from_slice(&b.stdout).unwrap(),
    );
    let mut statuses = vec![
        ra["stages"][0]["status"].as_str().unwrap().to_string(),
        rb["stages"][0]["status"].as_str().unwrap().to_string(),
    ];
    statuses.sort();
    // One process ran the stage; the other waited for its lock and reused the commit.
    assert_eq!(statuses, vec!["cached", "ok"]);
    let fp = ra["stages"][0]["fingerprint"].as_str().unwrap();
    assert_eq!(fp, rb["stages"][0]["fingerprint"].as_str().unwrap());
    let objects: Vec<_> = std::fs::read_dir(store.join("objects")).unwrap().collect();
    assert_eq!(objects.len(), 1);
}

/// The ingest of [`WORKFLOW`], then `tail` (more stages).
fn with_stages(name: &str, tail: &str) -> String {
    WORKFLOW.replace("name: kill-test", &format!("name: {name}")) + tail
}

#[test]
fn concurrent_runs_of_workflows_sharing_stages_compute_each_output_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    // `dedup` and `filtered` share the ingest and the embedding (same config, same fingerprints).
    let vectors = "  vectors:\n    kind: embed\n    inputs: {images: photos}\n";
    let a = write_workflow(
        dir.path(),
        "a.yaml",
        &with_stages(
            "dedup",
            &format!(
                "{vectors}  unique:\n    kind: dedup\n    inputs: {{images: photos, embeddings: vectors}}\n"
            ),
        ),
    );
    let b = write_workflow(
        dir.path(),
        "b.yaml",
        &with_stages(
            "filtered",
            &format!(
                "{vectors}  kept:\n    kind: filter\n    inputs: {{images: photos}}\n    with: {{plugins: [{{wasm: plugins/filters/dist/min_size.wasm, params: {{min_side: 100}}}}]}}\n"
            ),
        ),
    );
    // Two processes of one workflow and one of the other, all at once.
    let children = [
        spawn_run(&a, &store),
        spawn_run(&a, &store),
        spawn_run(&b, &store),
    ];
    let reports: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    // Per fingerprint: computed once ("ok"), reused by every other run that needs it.
    let mut by_fp: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in &reports {
        for s in r["stages"].as_array().unwrap() {
            by_fp
                .entry(s["fingerprint"].as_str().unwrap().to_string())
                .or_default()
                .push(s["status"].as_str().unwrap().to_string());
        }
    }
    let counts: Vec<(usize, usize)> = by_fp
        .values()
        .map(|v| (v.iter().filter(|s| *s == "ok").count(), v.len()))
        .collect();
    // photos and vectors (3 runs each), unique (2 runs), kept (1 run).
    let mut expected = vec![(1, 3), (1, 3), (1, 2), (1, 1)];
    let mut got = counts.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "{by_fp:?}");
    let objects = std::fs::read_dir(store.join("objects")).unwrap().count();
    assert_eq!(objects, by_fp.len());
    let check = run(&["gc", "--check", "--store", store.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
}
