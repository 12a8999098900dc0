//! Crash anywhere: a small full workflow (photos → filter → embed → dedup; Fashion-MNIST →
//! pretrain with checkpoints → eval) is killed with SIGKILL again and again — at spread-out times,
//! while an output is written but not committed, and right after a checkpoint — and re-run until
//! it finishes. After every kill no committed output is damaged (`dinoflow gc --check`); every
//! finished run's output digests equal those of an uninterrupted run; and `dinoflow gc` then
//! leaves nothing behind.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{dinoflow, json, output_digests, photos, run, small_training_stages, write_workflow};

/// Kill points required in all.
const KILLS: usize = 20;

/// 24 photos and an exact copy of the first (for dedup to find).
fn make_pool(pool: &Path) {
    std::fs::create_dir_all(pool).unwrap();
    let photos = photos();
    for p in photos.iter().take(24) {
        std::fs::copy(p, pool.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::copy(&photos[0], pool.join("copy-exact.bin")).unwrap();
}

fn workflow(pool: &Path) -> String {
    format!(
        "name: crash-test
stages:
  photos:
    kind: ingest@1
    with: {{source: {{folder: {{path: {pool}}}}}, max_side: 96, batch_size: 4, shard_rows: 4}}
  informative:
    kind: filter@1
    inputs: {{images: photos}}
    with: {{plugins: [{{wasm: plugins/filters/dist/blank.wasm, params: {{min_std: 5}}}}], batch_rows: 4}}
  vectors:
    kind: embed@1
    inputs: {{images: informative.kept}}
  unique:
    kind: dedup@1
    inputs: {{images: informative.kept, embeddings: vectors}}
    with: {{threshold: 0.93}}
{training}",
        pool = pool.display(),
        training = small_training_stages(24, "      checkpoint_every: 4\n"),
    )
}

/// `dinoflow --json run WF --store STORE --cpus 1` in the background (one thread: pretraining is
/// then bit-for-bit the same after a resume).
fn spawn(wf: &str, store: &Path) -> Child {
    dinoflow()
        .args(["--json", "run", wf, "--store", store.to_str().unwrap()])
        .args(["--cpus", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Stage name → output port → digest, from the manifests of a finished run's report.
fn digests(store: &Path, report: &serde_json::Value) -> BTreeMap<String, BTreeMap<String, String>> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let fp = s["fingerprint"].as_str().unwrap();
            (
                s["name"].as_str().unwrap().to_string(),
                output_digests(store, fp),
            )
        })
        .collect()
}

/// Whether any file under `dir` (recursively) was modified after `since`.
fn changed_since(dir: &Path, since: SystemTime) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            changed_since(&path, since)
        } else {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > since)
        }
    })
}

/// Kill points already used in a pass: object folders killed while being written, checkpoint
/// files killed right after being written.
#[derive(Default)]
struct Seen {
    outputs: BTreeSet<String>,
    checkpoints: BTreeSet<String>,
}

/// The next kill point not used yet: an output being written (an object folder without a
/// manifest, with a file newer than `since`) or a new checkpoint file.
fn next_kill_point(store: &Path, since: SystemTime, seen: &mut Seen) -> Option<&'static str> {
    if let Ok(dirs) = std::fs::read_dir(store.join("objects")) {
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().to_string();
            if !seen.outputs.contains(&name)
                && !d.path().join("manifest.json").exists()
                && changed_since(&d.path(), since)
            {
                seen.outputs.insert(name);
                return Some("output written, not committed");
            }
        }
    }
    if let Ok(dirs) = std::fs::read_dir(store.join("checkpoints")) {
        let files = dirs
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten());
        for file in files {
            let name = file.path().display().to_string();
            if name.ends_with(".safetensors") && seen.checkpoints.insert(name) {
                return Some("checkpoint written");
            }
        }
    }
    None
}

/// When to kill an attempt.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// After this long.
    After(Duration),
    /// At the next kill point of [`next_kill_point`].
    NextPoint,
}

/// Runs the workflow and kills it at `at`. Returns what the kill hit and the stages that were
/// running (none between stages), or `None` when the run finished first (asserting success).
fn attempt(wf: &str, store: &Path, at: KillAt, seen: &mut Seen) -> Option<(String, Vec<String>)> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut child = spawn(wf, store);
    let hit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "a run after a kill failed: {status}");
            return None;
        }
        let hit = match at {
            KillAt::After(d) => (clock.elapsed() >= d).then_some("time"),
            KillAt::NextPoint => next_kill_point(store, started, seen),
        };
        if let Some(hit) = hit {
            break hit;
        }
        assert!(clock.elapsed() < Duration::from_secs(300), "attempt hangs");
        std::thread::sleep(Duration::from_millis(1));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let shown = json(&run(&[
        "--json",
        "show",
        "last",
        "--store",
        store.to_str().unwrap(),
    ]));
    let running = shown["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "running")
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect();
    Some((hit.to_string(), running))
}

/// `dinoflow --json gc --check`: asserts that no committed output is damaged; returns the report.
fn check_store(store: &Path) -> serde_json::Value {
    let out = run(&[
        "--json",
        "gc",
        "--check",
        "--store",
        store.to_str().unwrap(),
    ]);
    let report = json(&out);
    assert!(
        out.status.success() && report["damaged"].as_array().unwrap().is_empty(),
        "damaged outputs after a kill: {report}"
    );
    report
}

#[test]
fn killed_anywhere_and_rerun_the_workflow_ends_with_the_uninterrupted_results() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    make_pool(&pool);
    let wf = write_workflow(dir.path(), "wf.yaml", &workflow(&pool));

    let reference_store = dir.path().join("reference");
    let clock = Instant::now();
    let out = spawn(&wf, &reference_store).wait_with_output().unwrap();
    let uninterrupted = clock.elapsed();
    assert!(out.status.success());
    let reference = digests(
        &reference_store,
        &serde_json::from_slice(&out.stdout).unwrap(),
    );
    assert_eq!(reference.len(), 8);

    let mut kills: Vec<(String, Vec<String>)> = Vec::new();
    let mut finished_runs = 0;
    for pass in 0..6 {
        if kills.len() >= KILLS {
            break;
        }
        let store = dir.path().join(format!("store-{pass}"));
        let mut seen = Seen::default();
        for i in 0.. {
            // Mostly the next output commit or checkpoint; every third attempt at a time from the
            // golden-ratio sequence over the uninterrupted run's duration (spread evenly, other
            // in every pass).
            let at = if i % 3 == 2 {
                let n = (pass * 5 + i) as f64;
                KillAt::After(uninterrupted.mul_f64((n * 0.618_034).fract() * 0.9))
            } else {
                KillAt::NextPoint
            };
            match attempt(&wf, &store, at, &mut seen) {
                Some(kill) => {
                    kills.push(kill);
                    check_store(&store);
                }
                None => break,
            }
        }
        // The last attempt finished by itself: every output equals the uninterrupted run's.
        let out = run(&[
            "--json",
            "run",
            &wf,
            "--store",
            store.to_str().unwrap(),
            "--cpus",
            "1",
        ]);
        assert!(out.status.success());
        let report = json(&out);
        assert!(
            report["stages"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["status"] == "cached"),
            "a finished run left work to do: {report}"
        );
        assert_eq!(digests(&store, &report), reference, "pass {pass}");
        finished_runs += 1;

        // gc leaves nothing behind: no incomplete folder, no checkpoint.
        let gc = run(&["gc", "--store", store.to_str().unwrap()]);
        assert!(gc.status.success());
        let check = check_store(&store);
        assert_eq!(check["incomplete"], serde_json::json!([]), "{check}");
        assert_eq!(check["committed"].as_array().unwrap().len(), 8, "{check}");
        let checkpoints = std::fs::read_dir(store.join("checkpoints"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(checkpoints, 0, "checkpoints left after gc");
    }

    let mut by_stage: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_hit: BTreeMap<String, usize> = BTreeMap::new();
    for (hit, running) in &kills {
        *by_hit.entry(hit.clone()).or_default() += 1;
        for stage in running {
            *by_stage.entry(stage.clone()).or_default() += 1;
        }
        if running.is_empty() {
            *by_stage.entry("(between stages)".into()).or_default() += 1;
        }
    }
    eprintln!(
        "{} kills over {finished_runs} resumed runs (uninterrupted run {:.1} s); by kill point: \
         {by_hit:?}; by running stage: {by_stage:?}",
        kills.len(),
        uninterrupted.as_secs_f64()
    );
    assert!(kills.len() >= KILLS, "only {} kills", kills.len());
    for hit in [
        "output written, not committed",
        "checkpoint written",
        "time",
    ] {
        assert!(by_hit.contains_key(hit), "no kill at {hit}: {by_hit:?}");
    }
    for stage in ["photos", "model"] {
        assert!(
            by_stage.contains_key(stage),
            "never killed in {stage}: {by_stage:?}"
        );
    }
    // Stages of a few milliseconds (embed and dedup of 25 photos) are rarely caught by polling;
    // the long ones always are, and so is usually the filter or the evaluation.
    assert!(by_stage.len() >= 3, "kills in too few stages: {by_stage:?}");
}
