//! Helpers for tests that drive the `dinoflow` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `dinoflow` command run from the repository root.
pub fn dinoflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dinoflow"));
    c.current_dir(repo_root());
    c
}

/// Runs `dinoflow ARGS` and returns its output.
pub fn run(args: &[&str]) -> Output {
    dinoflow().args(args).output().expect("dinoflow runs")
}

/// Writes `yaml` to `dir/name` and returns the path as a string.
#[allow(dead_code)]
pub fn write_workflow(dir: &Path, name: &str, yaml: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p.to_str().unwrap().to_string()
}

/// Runs `dinoflow --json run WF --store STORE EXTRA…`, asserts that it succeeded (showing its
/// output otherwise) and returns the run report.
#[allow(dead_code)]
pub fn run_ok(wf: &str, store: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "run", wf, "--store", store.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(
        out.status.success(),
        "run failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

/// Runs `dinoflow --json run WF --store STORE`, asserts that a stage failed (exit code 1) and
/// returns stdout and stderr together (the JSON report names the error).
#[allow(dead_code)]
pub fn run_failed(wf: &str, store: &Path) -> String {
    let out = run(&["--json", "run", wf, "--store", store.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    text
}

/// Writes `yaml` to `dir/wf.yaml`, runs it with the store `dir/store` and returns the report.
#[allow(dead_code)]
pub fn run_workflow(dir: &Path, yaml: &str) -> serde_json::Value {
    let wf = write_workflow(dir, "wf.yaml", yaml);
    run_ok(&wf, &dir.join("store"), &[])
}

/// Stdout as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The entry called `name` of a list of stages (a run report's `stages`, or a plan).
#[allow(dead_code)]
pub fn named<'a>(stages: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    stages
        .as_array()
        .and_then(|list| list.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no stage `{name}` in {stages}"))
}

/// Runs the project venv's Python with `args` (a script path or `-c CODE`, then its arguments),
/// asserts it succeeded and returns its stdout as JSON.
#[allow(dead_code)]
pub fn python_json<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> serde_json::Value {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup`",
        python.display()
    );
    let out = Command::new(python)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

/// The entry of stage `name` in a `run --json` report.
#[allow(dead_code)]
pub fn stage_report<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no stage {name} in {report}"))
}

/// The fingerprint of stage `name` in a `run --json` report.
#[allow(dead_code)]
pub fn fingerprint(report: &serde_json::Value, name: &str) -> String {
    stage_report(report, name)["fingerprint"]
        .as_str()
        .expect("a fingerprint")
        .to_string()
}

/// The real photos of `data/photos` (put there by `make setup`), sorted by name.
#[allow(dead_code)]
pub fn photos() -> Vec<PathBuf> {
    let dir = repo_root().join("data/photos");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make setup`", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

/// Output port → digest of the outputs committed under `fingerprint` in the local store `store`.
#[allow(dead_code)]
pub fn output_digests(
    store: &Path,
    fingerprint: &str,
) -> std::collections::BTreeMap<String, String> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            store
                .join("objects")
                .join(fingerprint)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    manifest["outputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(port, o)| (port.clone(), o["digest"].as_str().unwrap().to_string()))
        .collect()
}

/// Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist).
#[allow(dead_code)]
pub const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The training end of a small full workflow, as stage entries under `stages:`: `train` (300
/// labelled Fashion-MNIST train images), `test` (100 test images), `model` (tiny-28 cut to 2
/// blocks, `steps` iterations, then the lines `extra`) and `scores` (its k-NN and linear probe).
#[allow(dead_code)]
pub fn small_training_stages(steps: u32, extra: &str) -> String {
    format!(
        "  train:
    kind: ingest@1
    with: {{source: {{idx: {{images: {FMNIST}/train-images-idx3-ubyte.gz, labels: {FMNIST}/train-labels-idx1-ubyte.gz}}}}, limit: 300}}
  test:
    kind: ingest@1
    with: {{source: {{idx: {{images: {FMNIST}/t10k-images-idx3-ubyte.gz, labels: {FMNIST}/t10k-labels-idx1-ubyte.gz}}}}, limit: 100}}
  model:
    kind: pretrain@1
    inputs: {{images: train}}
    with:
      preset: tiny-28
      depth: 2
      steps: {steps}
      batch_size: 8
      local_crops: 2
      objective: {{head: {{prototypes: 256, hidden_dim: 128, bottleneck_dim: 64}}}}
{extra}  scores:
    kind: eval@1
    inputs: {{train: train, test: test, model: model.model}}
    with: {{knn: {{ks: [5, 20]}}, linear: {{epochs: 2}}}}
"
    )
}

/// The image file at `path` decoded (format from its content) and converted to 8-bit RGB.
#[allow(dead_code)]
pub fn open_rgb(path: &Path) -> image::DynamicImage {
    let img = image::ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap()
        .decode()
        .unwrap();
    image::DynamicImage::ImageRgb8(img.to_rgb8())
}
