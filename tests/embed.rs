//! The embed stage end to end through the CLI: real Fashion-MNIST and photos, vectors read back by
//! pyarrow, ViT vectors equal to timm's, clear errors for bad models.

mod common;

use std::path::Path;

use common::{
    fingerprint, json, named, python_json, repo_root, run, run_failed, run_workflow, write_workflow,
};

const FMNIST_TRAIN: &str = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
const FMNIST_TRAIN_LABELS: &str = "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz";
const FMNIST_TEST: &str = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
const FMNIST_TEST_LABELS: &str = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";

/// Runs tests/read_embeddings.py and returns its JSON report.
fn read_back(store: &Path, images: &str, embeddings: &str, timm: &[&str]) -> serde_json::Value {
    let script = repo_root().join("tests/read_embeddings.py");
    let mut args = vec![
        script.to_str().unwrap(),
        store.to_str().unwrap(),
        images,
        embeddings,
    ];
    args.extend_from_slice(timm);
    python_json(&args)
}

/// All 70,000 Fashion-MNIST images through the descriptor, the 10,000 test images through a
/// randomly initialised tiny-28 ViT (the 60,000 train images take about 6 minutes on 2 cores: that
/// run is in docs/benchmarks.md).
#[test]
fn descriptor_and_random_vit_embed_fashion_mnist_and_pyarrow_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_workflow(
        dir.path(),
        &format!(
            "name: e\nstages:\n  train:\n    kind: ingest\n    with:\n      source:\n        idx: {{images: {FMNIST_TRAIN}, labels: {FMNIST_TRAIN_LABELS}}}\n  test:\n    kind: ingest\n    with:\n      source:\n        idx: {{images: {FMNIST_TEST}, labels: {FMNIST_TEST_LABELS}}}\n  train_dct:\n    kind: embed\n    inputs: {{images: train}}\n  test_dct:\n    kind: embed\n    inputs: {{images: test}}\n  test_vit:\n    kind: embed\n    inputs: {{images: test}}\n    with:\n      model: {{vit: {{preset: tiny-28, seed: 3}}}}\n      batch_size: 512\n"
        ),
    );
    let store = dir.path().join("store");
    let cases = [
        ("train", "train_dct", 60_000, 80),
        ("test", "test_dct", 10_000, 80),
        ("test", "test_vit", 10_000, 192),
    ];
    for (images, stage, rows, dim) in cases {
        let images = format!("{}:images", fingerprint(&report, images));
        let got = read_back(&store, &images, &fingerprint(&report, stage), &[]);
        assert_eq!(got["rows"], rows, "{stage}: {got}");
        assert_eq!(got["dim"], dim, "{stage}: {got}");
        assert_eq!(got["ids_match"], true, "{stage}: {got}");
        assert_eq!(got["finite"], true, "{stage}: {got}");
        assert_eq!(got["schema"][0], serde_json::json!(["id", "string"]));
        let ty = got["schema"][1][1].as_str().unwrap();
        assert!(
            got["schema"][1][0] == "embedding"
                && ty.starts_with("fixed_size_list<")
                && ty.ends_with(&format!("[{dim}]")),
            "{got}"
        );
        for k in ["min_norm", "max_norm"] {
            let n = got[k].as_f64().unwrap();
            assert!((n - 1.0).abs() < 1e-4, "{stage} {k} = {n}");
        }
    }
}

/// timm-layout weights with random values, written by tests/vit_parity.py (no forward passes).
fn timm_weights(dir: &Path) -> std::path::PathBuf {
    let python = repo_root().join(".venv/bin/python");
    let out = std::process::Command::new(python)
        .arg(repo_root().join("tests/vit_parity.py"))
        .arg(dir)
        .arg("--weights-only")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("vit_small_patch14_dinov2.weights.safetensors")
}

fn photos_workflow(weights: &Path, preset: &str, extra: &str) -> String {
    let photos = repo_root().join("data/photos");
    assert!(
        photos.is_dir(),
        "{} is missing: run `make setup`",
        photos.display()
    );
    format!(
        "name: p\nstages:\n  photos:\n    kind: ingest\n    with:\n      source: {{folder: {{path: {}}}}}\n      max_side: 160\n      limit: 12\n  vit:\n    kind: embed\n    inputs: {{images: photos}}\n    with:\n      model: {{vit: {{preset: {preset}, weights: {}}}}}\n      batch_size: 5\n{extra}",
        photos.display(),
        weights.display()
    )
}

#[test]
fn vit_vectors_from_timm_weights_equal_timms_on_real_photos() {
    let dir = tempfile::tempdir().unwrap();
    let weights = timm_weights(dir.path());
    // Photos of several sizes and aspect ratios: shorter side resized to 112, centre crop.
    let report = run_workflow(
        dir.path(),
        &photos_workflow(&weights, "small", "      image_size: 112\n"),
    );
    let store = dir.path().join("store");
    let images = format!("{}:images", fingerprint(&report, "photos"));
    let got = read_back(
        &store,
        &images,
        &fingerprint(&report, "vit"),
        &["vit_small_patch14_dinov2", weights.to_str().unwrap(), "112"],
    );
    assert_eq!(got["rows"], 12, "{got}");
    assert_eq!(got["dim"], 384, "{got}");
    let diff = got["timm_max_diff"].as_f64().unwrap();
    assert!(diff < 1e-4, "dinoflow and timm vectors differ by {diff}");
}

/// Runs a workflow expected to fail; returns its output (the JSON report names the error) and asserts the embed stage committed nothing.
fn run_failing(dir: &Path, yaml: &str) -> String {
    let wf = write_workflow(dir, "bad.yaml", yaml);
    let store = dir.join("store");
    let text = run_failed(&wf, &store);
    let plan = json(&run(&[
        "--json",
        "plan",
        &wf,
        "--store",
        store.to_str().unwrap(),
    ]));
    let embed = named(&plan, "vit");
    assert_eq!(
        embed["state"], "run",
        "a failed embed must not be cached: {plan}"
    );
    text
}

#[test]
fn bad_models_fail_with_errors_that_say_what_to_fix_and_commit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let weights = timm_weights(dir.path());

    // ViT-S weights named as ViT-B: every mis-shaped key is named with both shapes.
    let err = run_failing(dir.path(), &photos_workflow(&weights, "base", ""));
    assert!(err.contains(weights.to_str().unwrap()), "{err}");
    assert!(
        err.contains("wrong shapes: blocks.0.attn.proj.bias (model [768], file [384])"),
        "{err}"
    );

    // A truncated file is named and called invalid.
    let bytes = std::fs::read(&weights).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = run_failing(dir.path(), &photos_workflow(&cut, "small", ""));
    assert!(
        err.contains("cut.safetensors: not a valid safetensors file"),
        "{err}"
    );

    // An input size the patches do not tile.
    let err = run_failing(
        dir.path(),
        &photos_workflow(&weights, "small", "      image_size: 100\n"),
    );
    assert!(
        err.contains("image_size 100 must be a positive multiple of the model's patch size 14"),
        "{err}"
    );

    // `model: input` with nothing connected.
    let yaml = photos_workflow(&weights, "small", "").replace(
        &format!("{{vit: {{preset: small, weights: {}}}}}", weights.display()),
        "input",
    );
    let err = run_failing(dir.path(), &yaml);
    assert!(
        err.contains("`model: input` needs the `model` input connected"),
        "{err}"
    );

    // A descriptor block larger than the thumbnail.
    let yaml = photos_workflow(&weights, "small", "      descriptor: {block: 40}\n").replace(
        &format!("{{vit: {{preset: small, weights: {}}}}}", weights.display()),
        "dct",
    );
    let err = run_failing(dir.path(), &yaml);
    assert!(
        err.contains("vit") && err.contains("`block` is 40; it must be between 2 and 32"),
        "{err}"
    );
}

#[test]
fn new_weights_bytes_rerun_embed_and_nothing_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let weights = timm_weights(dir.path());
    let yaml = photos_workflow(&weights, "small", "      image_size: 56\n");
    run_workflow(dir.path(), &yaml);
    let wf = dir.path().join("wf.yaml");
    let store = dir.path().join("store");
    let plan = |label: &str| {
        let p = json(&run(&[
            "--json",
            "plan",
            wf.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ]));
        let state = |name: &str| named(&p, name).clone();
        eprintln!("{label}: {p}");
        (state("photos"), state("vit"))
    };
    let (photos, vit) = plan("unchanged");
    assert_eq!(
        (photos["state"].as_str(), vit["state"].as_str()),
        (Some("cached"), Some("cached"))
    );
    // Same path, other bytes (the registers model's weights, loaded with the same preset).
    std::fs::copy(
        dir.path()
            .join("vit_small_patch14_reg4_dinov2.weights.safetensors"),
        &weights,
    )
    .unwrap();
    let (photos, vit) = plan("new weights");
    assert_eq!(photos["state"], "cached");
    assert_eq!(vit["state"], "run");
    assert!(vit["reasons"].to_string().contains("weights"), "{vit}");
}
