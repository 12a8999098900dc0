//! The curation workflow (workflows/curate-fashion-mnist.yaml) end to end on the data that
//! scripts/make-curation-data.py generates with known ground truth (run by `make setup`): the
//! scores come from tests/curation_truth.py, which reads the stored datasets with pyarrow and
//! compares them with the generator's truth.json, and the funnel from `dinoflow show last`.

mod common;

use common::{fingerprint, json, python_json, repo_root, run, run_ok};

#[test]
fn curation_workflow_meets_its_ground_truth() {
    let truth = repo_root().join("data/curation/truth.json");
    assert!(
        truth.exists(),
        "{} is missing: run `make setup`",
        truth.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    let report = run_ok(
        "workflows/curate-fashion-mnist.yaml",
        std::path::Path::new(store),
        &[],
    );
    let scores = python_json(&[
        "tests/curation_truth.py",
        store,
        truth.to_str().unwrap(),
        &fingerprint(&report, "pool_informative"),
        &fingerprint(&report, "deduplicated"),
        &fingerprint(&report, "retrieved"),
    ]);
    eprintln!("curation scores: {scores}");

    // Self-dedup: every kind of injected copy is found (slight crops by the geometric
    // verification), and nothing else is removed.
    let (mut found, mut pairs) = (0.0, 0.0);
    for kind in ["exact", "jpeg", "resize", "crop"] {
        let n = scores["pairs"][kind].as_f64().unwrap();
        assert!(
            n >= 90.0,
            "{kind}: only {n} injected pairs survived the filter"
        );
        let recall = scores["recall"][kind].as_f64().unwrap();
        assert!(recall >= 0.95, "{kind}: recall {recall:.3} < 0.95");
        found += recall * n;
        pairs += n;
    }
    assert!(found / pairs >= 0.95, "recall {:.3} < 0.95", found / pairs);
    assert!(
        scores["self_precision"].as_f64().unwrap() >= 0.99,
        "self-dedup precision below 0.99"
    );

    // Relative dedup: every copy of an evaluation image is removed, and almost nothing else.
    for kind in ["exact", "jpeg", "resize", "crop"] {
        assert_eq!(
            scores["eval_removed"][kind].as_f64(),
            Some(1.0),
            "evaluation copies of kind {kind} left in the pool"
        );
    }
    assert!(scores["eval_precision"].as_f64().unwrap() >= 0.99);

    // Retrieval by Fashion-MNIST seeds returns Fashion-MNIST, not digits or photo tiles.
    assert!(scores["retrieved_rows"].as_u64().unwrap() >= 15_000);
    assert!(
        scores["retrieved_fmnist"].as_f64().unwrap() >= 0.95,
        "retrieval precision below 0.95"
    );

    // The funnel: rows in and out of every stage, consistent with the datasets just scored.
    let shown = json(&run(&["--json", "show", "last", "--store", store]));
    let funnel = shown["funnel"].as_array().expect("a funnel");
    assert_eq!(funnel.len(), report["stages"].as_array().unwrap().len());
    let stage = |name: &str| {
        funnel
            .iter()
            .find(|s| s["stage"] == name)
            .unwrap_or_else(|| panic!("no {name} in the funnel"))
    };
    let rows = |ports: &serde_json::Value, port: &str| {
        ports
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == port)
            .and_then(|p| p["rows"].as_u64())
            .unwrap_or_else(|| panic!("no rows for {port} in {ports}"))
    };
    let filtered = stage("pool_informative");
    assert_eq!(rows(&filtered["inputs"], "images"), 40_000);
    assert_eq!(
        rows(&filtered["outputs"], "kept") + rows(&filtered["outputs"], "dropped"),
        40_000
    );
    let dedup = stage("deduplicated");
    assert_eq!(
        rows(&dedup["inputs"], "images"),
        scores["pool_rows"].as_u64().unwrap()
    );
    assert_eq!(
        rows(&dedup["outputs"], "kept"),
        scores["kept_rows"].as_u64().unwrap()
    );
    assert_eq!(
        rows(&stage("retrieved")["outputs"], "retrieved"),
        scores["retrieved_rows"].as_u64().unwrap()
    );
    let text = run(&["show", "last", "--store", store]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("images 40,000 → dropped"),
        "no funnel line for the filter in:\n{text}"
    );
}
