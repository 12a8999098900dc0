//! The pretrain stage through the CLI: a run killed (SIGKILL) after a checkpoint resumes from it
//! and ends with exactly the weights of an uninterrupted run, also when it goes through a
//! resolution phase and is killed before or after the phase change; its model feeds `embed`;
//! bfloat16 autocast trains and stores a float32 model; bad configurations fail naming the stage
//! and the field.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{dinoflow, fingerprint, json, run, run_ok, stage_report, write_workflow};

const WORKFLOW: &str = "name: pretrain-test
stages:
  train:
    kind: ingest@1
    with:
      source:
        idx:
          images: /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
          labels: /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz
      limit: 512
  dino:
    kind: pretrain@1
    inputs: {images: train}
    with:
      preset: tiny-28
      steps: 8
      batch_size: 16
      local_crops: 2
      checkpoint_every: 2
      seed: 3
      objective: {head: {prototypes: 256, hidden_dim: 64, bottleneck_dim: 32}}
  vectors:
    kind: embed@1
    inputs: {images: train, model: dino.model}
    with: {model: input}
";

fn manifest(store: &Path, fingerprint: &str) -> serde_json::Value {
    let path = store
        .join("objects")
        .join(fingerprint)
        .join("manifest.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The runs compared bit for bit use `--cpus 1`, so the result cannot depend on how a busy
/// machine splits parallel reductions.
const ONE_THREAD: &[&str] = &["--cpus", "1"];

/// The newest checkpoint step written under `store` so far.
fn checkpoint_step(store: &Path) -> Option<usize> {
    let dirs = std::fs::read_dir(store.join("checkpoints")).ok()?;
    dirs.flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter_map(|f| {
            let name = f.file_name().to_string_lossy().to_string();
            name.strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .max()
}

#[test]
fn killed_pretrain_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write_workflow(dir.path(), "wf.yaml", WORKFLOW);
    let clean_store = dir.path().join("clean");
    let killed_store = dir.path().join("killed");

    let clean = run_ok(&wf, &clean_store, ONE_THREAD);
    let fp = stage_report(&clean, "dino")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stage_report(&clean, "dino")["rows"]["metrics"], 8);
    assert_eq!(stage_report(&clean, "vectors")["rows"]["embeddings"], 512);
    assert!(
        !clean_store.join("checkpoints").join(&fp).exists()
            || std::fs::read_dir(clean_store.join("checkpoints").join(&fp))
                .unwrap()
                .next()
                .is_none(),
        "checkpoints are removed once the model is committed"
    );

    let mut child = dinoflow()
        .args([
            "--json",
            "run",
            &wf,
            "--store",
            killed_store.to_str().unwrap(),
            "--cpus",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while checkpoint_step(&killed_store).is_none_or(|s| s < 4) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "training finished before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = checkpoint_step(&killed_store).unwrap();
    assert!(
        !killed_store
            .join("objects")
            .join(&fp)
            .join("manifest.json")
            .exists(),
        "the killed run committed nothing"
    );

    let resumed = run_ok(&wf, &killed_store, ONE_THREAD);
    assert_eq!(stage_report(&resumed, "dino")["fingerprint"], fp.as_str());
    let run_id = resumed["run_id"].to_string();
    let shown = json(&run(&[
        "--json",
        "show",
        &run_id,
        "--store",
        killed_store.to_str().unwrap(),
    ]));
    let dino = shown["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "dino")
        .unwrap();
    let resumed_from = dino["metrics"]["resumed_from_step"].as_u64().unwrap() as usize;
    assert!(resumed_from >= 4 && resumed_from <= killed_at, "{dino}");

    // Same weights (every file's digest), same per-iteration metrics.
    let (a, b) = (manifest(&clean_store, &fp), manifest(&killed_store, &fp));
    assert_eq!(
        a["outputs"]["model"]["files"],
        b["outputs"]["model"]["files"]
    );
    assert_eq!(
        a["outputs"]["model"]["digest"],
        b["outputs"]["model"]["digest"]
    );
    assert_eq!(a["outputs"]["metrics"]["rows"], 8);
    assert_eq!(stage_report(&resumed, "vectors")["rows"]["embeddings"], 512);
}

/// A tiny model (patch 4, 2 blocks of width 32) whose global crops grow from 12 to 20 px for the
/// last 3 of 8 iterations (from iteration ceil(0.6 · 8) = 5), with a checkpoint every 2: those
/// after 2 and 4 iterations come before the phase change, the one after 6 after it.
const PHASED: &str = "name: phase-test
stages:
  train:
    kind: ingest@1
    with:
      source:
        idx:
          images: /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
      limit: 256
  dino:
    kind: pretrain@1
    inputs: {images: train}
    with:
      preset: tiny-28
      embed_dim: 32
      depth: 2
      num_heads: 2
      steps: 8
      batch_size: 32
      local_crops: 2
      crops: {global: [{size: 12}, {size: 12}], local: {size: 8, scale: [0.05, 0.32]}}
      phases: [{from: 0.6, global_size: 20}]
      checkpoint_every: 2
      seed: 3
      objective: {head: {prototypes: 64, hidden_dim: 32, bottleneck_dim: 16}}
";

/// Runs `wf` on one thread into a fresh `store` and kills it (SIGKILL) once its newest
/// checkpoint is one of `wanted`. Returns that checkpoint, or `None` when the run got past
/// `wanted` or committed stage `fingerprint` first: polling can miss the checkpoints of a run
/// this small.
fn kill_at_checkpoint(
    wf: &str,
    store: &Path,
    fingerprint: &str,
    wanted: &[usize],
) -> Option<usize> {
    if store.exists() {
        std::fs::remove_dir_all(store).unwrap();
    }
    let last = wanted.iter().copied().max().unwrap();
    let mut child = dinoflow()
        .args(["--json", "run", wf, "--store", store.to_str().unwrap()])
        .args(ONE_THREAD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let hit = loop {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        match checkpoint_step(store) {
            Some(step) if wanted.contains(&step) => break true,
            Some(step) if step > last => break false,
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let committed = store
        .join("objects")
        .join(fingerprint)
        .join("manifest.json")
        .exists();
    let at = checkpoint_step(store)?;
    (hit && !committed && wanted.contains(&at)).then_some(at)
}

/// The `resumed_from_step` metric of stage `dino` in the run of `report`.
fn resumed_from(store: &Path, report: &serde_json::Value) -> Option<u64> {
    let shown = json(&run(&[
        "--json",
        "show",
        &report["run_id"].to_string(),
        "--store",
        store.to_str().unwrap(),
    ]));
    shown["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "dino")
        .unwrap()["metrics"]["resumed_from_step"]
        .as_u64()
}

#[test]
fn a_run_killed_before_or_after_its_resolution_phase_resumes_to_the_same_digests() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write_workflow(dir.path(), "phased.yaml", PHASED);
    let clean_store = dir.path().join("clean");
    let clean = run_ok(&wf, &clean_store, ONE_THREAD);
    let fp = fingerprint(&clean, "dino");
    assert_eq!(stage_report(&clean, "dino")["rows"]["metrics"], 8);
    let expected = manifest(&clean_store, &fp);

    for (name, wanted) in [("before", &[2, 4][..]), ("after", &[6][..])] {
        let store = dir.path().join(name);
        // A kill can miss its checkpoint (the run went past it): try again, from scratch.
        let killed_at = (0..20)
            .find_map(|_| kill_at_checkpoint(&wf, &store, &fp, wanted))
            .unwrap_or_else(|| panic!("never killed {name} the phase at {wanted:?}"));
        let resumed = run_ok(&wf, &store, ONE_THREAD);
        assert_eq!(fingerprint(&resumed, "dino"), fp);
        assert_eq!(
            resumed_from(&store, &resumed),
            Some(killed_at as u64),
            "killed {name} the phase"
        );
        let got = manifest(&store, &fp);
        for port in ["model", "metrics", "monitor"] {
            assert!(
                expected["outputs"][port]["digest"].is_string(),
                "{expected}"
            );
            assert_eq!(
                got["outputs"][port]["digest"], expected["outputs"][port]["digest"],
                "killed {name} the phase, after {killed_at} iterations: {port}"
            );
        }
        assert_eq!(
            got["outputs"]["model"]["files"],
            expected["outputs"]["model"]["files"]
        );
    }
}

#[test]
fn bad_pretrain_settings_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for (replace, message) in [
        ("batch_size: 16", "`batch_size` is 1; it must be at least 2"),
        ("steps: 8", "`steps` must be at least 1"),
    ] {
        let yaml = WORKFLOW.replace(replace, &replace.replace("16", "1").replace('8', "0"));
        let wf = write_workflow(dir.path(), "bad.yaml", &yaml);
        let out = run(&["run", &wf, "--store", store.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(
            text.contains("bad.yaml:") && text.contains("stage `dino`") && text.contains(message),
            "{text}"
        );
        assert!(!store.exists(), "an invalid workflow wrote to the store");
    }
}

#[test]
fn bfloat16_pretraining_stores_a_float32_model_that_embeds() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = WORKFLOW.replace("seed: 3", "seed: 3\n      precision: bfloat16");
    let wf = write_workflow(dir.path(), "wf.yaml", &yaml);
    let store = dir.path().join("store");
    let report = run_ok(&wf, &store, &[]);
    assert_eq!(stage_report(&report, "dino")["rows"]["metrics"], 8);
    assert_eq!(stage_report(&report, "vectors")["rows"]["embeddings"], 512);
    let model = store
        .join("objects")
        .join(fingerprint(&report, "dino"))
        .join("model/model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let tensors: Vec<_> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .collect();
    assert!(tensors.len() > 10, "{header}");
    for (name, t) in tensors {
        assert_eq!(t["dtype"], "F32", "{name}");
    }
}

#[test]
fn an_unknown_precision_is_refused_naming_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let yaml = WORKFLOW.replace("seed: 3", "seed: 3\n      precision: float16");
    let wf = write_workflow(dir.path(), "bad.yaml", &yaml);
    let out = run(&["run", &wf, "--store", store.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("bad.yaml:")
            && text.contains("precision")
            && text.contains("float16")
            && text.contains("bfloat16"),
        "{text}"
    );
    assert!(!store.exists(), "an invalid workflow wrote to the store");
}
