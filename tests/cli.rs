//! The command line end to end: exit codes, error locations, run/plan/runs/show/stages/dag/schema/gc.

mod common;

use common::{json, run, write_workflow};

const FMNIST_TEST: &str = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
const FMNIST_TEST_LABELS: &str = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";

fn workflow(limit: u32) -> String {
    format!(
        "name: cli-test\nstages:\n  test_set:\n    kind: ingest\n    with:\n      source:\n        idx:\n          images: {FMNIST_TEST}\n          labels: {FMNIST_TEST_LABELS}\n      limit: {limit}\n  photos:\n    kind: ingest\n    with:\n      source:\n        folder:\n          path: data/photos\n          glob: \"b*.jpg\"\n      max_side: 32\n"
    )
}

#[test]
fn invalid_workflow_exits_2_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write_workflow(
        dir.path(),
        "bad.yaml",
        "name: x\nstages:\n  a:\n    kind: ingest\n    with:\n      source: {idx: {images: x}}\n      max_sid: 3\n",
    );
    let out = run(&[
        "run",
        &wf,
        "--store",
        dir.path().join("s").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{wf}:7:7:")), "{err}");
    assert!(err.contains("unknown field `max_sid`"), "{err}");
    assert!(
        err.contains("max_side"),
        "the valid fields are listed: {err}"
    );

    let out = run(&["plan", dir.path().join("missing.yaml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["run"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn run_then_everything_is_cached_and_plan_says_why_things_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    let wf = write_workflow(dir.path(), "wf.yaml", &workflow(300));

    let out = run(&["--json", "run", &wf, "--store", store]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    let stages = report["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert!(stages.iter().all(|s| s["status"] == "ok"));
    assert_eq!(stages[0]["rows"]["images"], 300);
    let photos = std::fs::read_dir(common::repo_root().join("data/photos"))
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name().into_string().unwrap();
            n.starts_with('b') && n.ends_with(".jpg")
        })
        .count() as u64;
    assert!(photos > 0);
    assert_eq!(stages[1]["rows"]["images"], photos);

    let out = run(&["--json", "run", &wf, "--store", store]);
    assert!(out.status.success());
    assert!(
        json(&out)["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "cached")
    );

    let plan = json(&run(&["--json", "plan", &wf, "--store", store]));
    assert!(
        plan.as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "cached"),
        "{plan}"
    );

    // Change one stage's config: only that stage runs, and plan says which field changed.
    let wf2 = write_workflow(dir.path(), "wf.yaml", &workflow(200));
    let plan = json(&run(&["--json", "plan", &wf2, "--store", store]));
    assert_eq!(plan[0]["state"], "run");
    let reasons = plan[0]["reasons"].to_string();
    assert!(reasons.contains("limit: 300 → 200"), "{reasons}");
    assert_eq!(plan[1]["state"], "cached");

    let runs = json(&run(&["--json", "runs", "--store", store]));
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert_eq!(runs[0]["status"], "ok");
    let shown = json(&run(&["--json", "show", "test_set", "--store", store]));
    assert_eq!(shown["outputs"]["outputs"]["images"]["rows"], 300);
    let shown = json(&run(&["--json", "show", "1", "--store", store]));
    assert_eq!(shown["stages"].as_array().unwrap().len(), 2);
    let out = run(&["show", "nope", "--store", store]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no stage or run `nope`"));
}

#[test]
fn stages_dag_and_schema_describe_the_workflow() {
    let stages = json(&run(&["--json", "stages"]));
    let ingest = stages
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "ingest")
        .unwrap();
    assert_eq!(ingest["outputs"][0]["name"], "images");
    assert!(ingest["config"]["properties"]["max_side"].is_object());

    let dir = tempfile::tempdir().unwrap();
    let wf = write_workflow(dir.path(), "wf.yaml", &workflow(10));
    let out = run(&["dag", &wf, "--format", "mermaid"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("flowchart LR"), "{text}");
    assert!(
        text.contains("test_set[") && text.contains("photos["),
        "{text}"
    );
    let out = run(&["dag", &wf, "--format", "dot"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("digraph"));

    let schema = json(&run(&["schema"]));
    let variants = schema["$defs"]["StageSpec"]["oneOf"].as_array().unwrap();
    assert!(
        variants
            .iter()
            .any(|v| v["properties"]["kind"]["enum"][0] == "ingest")
    );
}

#[test]
fn gc_removes_only_uncommitted_output_folders() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let wf = write_workflow(dir.path(), "wf.yaml", &workflow(50));
    assert!(
        run(&["run", &wf, "--store", store.to_str().unwrap()])
            .status
            .success()
    );
    // A crashed run leaves a folder with shards but no manifest.
    let junk = store.join("objects/0123456789abcdef0123456789abcdef/images");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("part-00000.parquet"), vec![0u8; 1000]).unwrap();
    let report = json(&run(&["--json", "gc", "--store", store.to_str().unwrap()]));
    assert_eq!(
        report["removed"],
        serde_json::json!(["0123456789abcdef0123456789abcdef"])
    );
    assert_eq!(report["bytes"], 1000);
    assert!(!junk.exists());
    let out = run(&["--json", "run", &wf, "--store", store.to_str().unwrap()]);
    assert!(
        json(&out)["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "cached")
    );
}

#[test]
fn commands_that_read_a_store_refuse_a_mistyped_path_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("stroe");
    let path = typo.to_str().unwrap();
    for args in [
        vec!["gc", "--store", path],
        vec!["gc", "--check", "--store", path],
        vec!["runs", "--store", path],
        vec!["show", "last", "--store", path],
        vec!["report", "last", "--store", path],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("stroe") && err.contains("no such folder"),
            "{args:?}: {err}"
        );
        assert!(!typo.exists(), "{args:?} created the store");
    }
    // Local-only options with the local executor are a mistake, said before anything runs.
    let wf = write_workflow(dir.path(), "wf.yaml", &workflow(5));
    let out = run(&["run", &wf, "--store", path, "--attempts", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--executor slurm"));
    let out = run(&["run", &wf, "--store", "memory://x", "--executor", "slurm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach it"));
    assert!(!typo.exists());
}

#[test]
fn plugin_new_builds_as_is_and_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "plugin",
        "new",
        "keep-all",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crate_dir = dir.path().join("keep-all");
    assert!(crate_dir.join("src/lib.rs").exists() && crate_dir.join("wit/filter.wit").exists());
    let out = run(&["plugin", "build", crate_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = crate_dir.join("dist/keep_all.wasm");
    let report = json(&run(&["--json", "plugin", "check", wasm.to_str().unwrap()]));
    assert_eq!(report["name"], "keep-all");
    // The template keeps every row of the 10,000-row sample.
    assert_eq!(report["sample"]["codes"]["0"], 10_000);

    let out = run(&[
        "plugin",
        "new",
        "Bad Name",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&[
        "plugin",
        "check",
        crate_dir.join("src/lib.rs").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lib.rs: invalid WebAssembly"));
}

#[test]
fn every_shipped_workflow_is_valid_and_plans() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(common::repo_root().join("workflows")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = run(&[
            "--json",
            "plan",
            path.to_str().unwrap(),
            "--store",
            dir.path().to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            json(&out)
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["state"] == "run")
        );
        seen += 1;
    }
    assert!(seen >= 2);
}
