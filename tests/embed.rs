//! The embed stage end to end through the CLI: real Fashion-MNIST and photos, vectors read back by
//! pyarrow, ViT vectors equal to timm's, clear errors for bad models.

mod common;

use std::path::Path;

use common::{json, repo_root, run, write_workflow};

const FMNIST_TEST: &str = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
const FMNIST_TEST_LABELS: &str = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";

fn run_workflow(dir: &Path, yaml: &str) -> serde_json::Value {
    let wf = write_workflow(dir, "wf.yaml", yaml);
    let store = dir.join("store");
    let out = run(&["--json", "run", &wf, "--store", store.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

fn fingerprint(report: &serde_json::Value, stage: &str) -> String {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .unwrap_or_else(|| panic!("no stage {stage} in {report}"))["fingerprint"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs tests/read_embeddings.py and returns its JSON report.
fn read_back(store: &Path, images: &str, embeddings: &str, timm: &[&str]) -> serde_json::Value {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup`",
        python.display()
    );
    let out = std::process::Command::new(python)
        .arg(repo_root().join("tests/read_embeddings.py"))
        .args([store.to_str().unwrap(), images, embeddings])
        .args(timm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "read_embeddings.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

#[test]
fn descriptor_and_random_vit_embed_fashion_mnist_and_pyarrow_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_workflow(
        dir.path(),
        &format!(
            "name: e\nstages:\n  fm:\n    kind: ingest\n    with:\n      source:\n        idx: {{images: {FMNIST_TEST}, labels: {FMNIST_TEST_LABELS}}}\n  dct:\n    kind: embed\n    inputs: {{images: fm}}\n  vit:\n    kind: embed\n    inputs: {{images: fm}}\n    with:\n      model: {{vit: {{preset: tiny-28, seed: 3}}}}\n      batch_size: 512\n"
        ),
    );
    let store = dir.path().join("store");
    let images = format!("{}:images", fingerprint(&report, "fm"));
    for (stage, dim) in [("dct", None), ("vit", Some(192))] {
        let got = read_back(&store, &images, &fingerprint(&report, stage), &[]);
        assert_eq!(got["rows"], 10_000, "{stage}: {got}");
        assert_eq!(got["ids_match"], true, "{stage}: {got}");
        assert_eq!(got["finite"], true, "{stage}: {got}");
        assert_eq!(got["schema"][0], serde_json::json!(["id", "string"]));
        let ty = got["schema"][1][1].as_str().unwrap();
        assert!(
            got["schema"][1][0] == "embedding" && ty.starts_with("fixed_size_list<"),
            "{got}"
        );
        if let Some(dim) = dim {
            assert_eq!(got["dim"], dim, "{stage}: {got}");
        }
        for k in ["min_norm", "max_norm"] {
            let n = got[k].as_f64().unwrap();
            assert!((n - 1.0).abs() < 1e-4, "{stage} {k} = {n}");
        }
    }
}
