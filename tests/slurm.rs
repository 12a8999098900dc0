//! The Slurm executor against a real one-node Slurm (munged, slurmctld and slurmd started by
//! `scripts/slurm-local.sh` for each test): the curation stages run as batch jobs and job arrays
//! (one task per input shard) give the local executor's output digests; an array task cancelled
//! from outside (`scancel`) is submitted again and the run completes; a stage that fails by itself
//! is not submitted again; Ctrl-C cancels the run's jobs and commits nothing partial.
//!
//! The stages ask for every core, so Slurm runs one task at a time: a task is running for at
//! least its process start and planning when the test cancels it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{FMNIST, dinoflow, json, named, output_digests, repo_root, write_workflow};

/// A one-node Slurm cluster with its state in a temporary folder, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/slurm-local.sh"))
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slurm-local.sh start failed (run `make setup` for slurmctld, slurmd and munge): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// A Slurm client command (`squeue`, `scancel`) on this cluster.
    fn client(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .env("SLURM_CONF", self.conf())
            .args(args)
            .output()
            .unwrap()
    }

    /// (job id, job name, state) of every job in the queue.
    fn queue(&self) -> Vec<(String, String, String)> {
        let out = self.client("squeue", &["-h", "-o", "%i %j %t"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some((
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                ))
            })
            .collect()
    }

    /// Waits until a job (or array task) called `name` runs and returns its id (`123` or `123_4`).
    fn wait_running(&self, name: &str, run: &mut Child) -> String {
        let started = Instant::now();
        loop {
            if let Some((id, _, _)) = self
                .queue()
                .into_iter()
                .find(|(_, n, state)| n == name && state == "R")
            {
                return id;
            }
            assert!(
                run.try_wait().unwrap().is_none(),
                "the run ended before {name} ran"
            );
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{name} never ran"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/slurm-local.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// Fashion-MNIST → WebAssembly filter → embed → dedup, the curation part of the Fashion-MNIST
/// workflows (stages as in workflows/curate-fashion-mnist.yaml): 2,000 images in 5 shards, so
/// that ingest, the filter and embed run as 5 tasks each.
fn workflow(dir: &Path) -> String {
    workflow_with_filter(dir, "blank.wasm, params: {min_std: 20}")
}

fn workflow_with_filter(dir: &Path, filter: &str) -> String {
    let root = repo_root();
    write_workflow(
        dir,
        "wf.yaml",
        &format!(
            "name: slurm-curation
stages:
  pool:
    kind: ingest@1
    with:
      source: {{idx: {{images: {FMNIST}/t10k-images-idx3-ubyte.gz, labels: {FMNIST}/t10k-labels-idx1-ubyte.gz}}}}
      limit: 2000
      shard_rows: 400
    resources: {{memory_gb: 1}}
  informative:
    kind: filter@1
    inputs: {{images: pool}}
    with: {{plugins: [{{wasm: {root}/plugins/filters/dist/{filter}}}]}}
    resources: {{memory_gb: 1}}
  vectors:
    kind: embed@1
    inputs: {{images: informative.kept}}
    with: {{descriptor: {{block: 16, window: 0.3, weighting: flat, trim_borders: false}}, mirrored: false}}
    resources: {{memory_gb: 1}}
  unique:
    kind: dedup@1
    inputs: {{images: informative.kept, embeddings: vectors}}
    with: {{threshold: 0.995}}
    resources: {{memory_gb: 1}}
",
            root = root.display(),
        ),
    )
}

/// `dinoflow --json run WF --store STORE EXTRA…` on `cluster`, in the background.
fn spawn(cluster: &Cluster, wf: &str, store: &Path, extra: &[&str]) -> Child {
    dinoflow()
        .env("SLURM_CONF", cluster.conf())
        .args(["--json", "run", wf, "--store", store.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stage name → output digests of a finished run.
fn digests(store: &Path, report: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let fp = s["fingerprint"].as_str().unwrap();
            (
                s["name"].as_str().unwrap().to_string(),
                serde_json::to_value(output_digests(store, fp)).unwrap(),
            )
        })
        .collect()
}

#[test]
fn stages_run_as_slurm_jobs_give_the_local_results_and_survive_a_cancelled_job() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let wf = workflow(dir.path());

    let local_store = dir.path().join("local");
    let local = json(
        &dinoflow()
            .args([
                "--json",
                "run",
                &wf,
                "--store",
                local_store.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(local["status"], "ok", "{local}");

    // Every stage a batch job or job array; the first task of `vectors` that runs is cancelled
    // from outside.
    let store = dir.path().join("slurm");
    let mut run = spawn(&cluster, &wf, &store, &["--executor", "slurm"]);
    let victim = cluster.wait_running("dinoflow-vectors", &mut run);
    assert!(victim.contains('_'), "not an array task: {victim}");
    let out = cluster.client("scancel", &[&victim]);
    assert!(out.status.success());
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "ok"),
        "{report}"
    );
    assert_eq!(digests(&store, &report), digests(&local_store, &local));
    // One log per job or array task: ingest, the filter and embed ran as 5 tasks each, and the
    // cancelled task of `vectors` ran again.
    let logs = job_logs(&store);
    let count = |stage: &str| {
        logs.iter()
            .filter(|l| l.starts_with(&format!("{stage}-")))
            .count()
    };
    assert_eq!(
        (
            count("pool"),
            count("informative"),
            count("vectors"),
            count("unique")
        ),
        (5, 5, 6, 1),
        "{logs:?}"
    );
    let cancelled: Vec<&String> = logs
        .iter()
        .filter(|l| l.starts_with(&format!("vectors-{}_", victim.split('_').next().unwrap())))
        .collect();
    assert_eq!(cancelled.len(), 5, "the first array ran 5 tasks: {logs:?}");
    // The merged outputs hold every shard's rows; the stage's metrics add the tasks' counts.
    let stage = |name: &str| named(&report["stages"], name).clone();
    assert_eq!(stage("pool")["rows"]["images"], 2000);
    let kept = stage("informative")["rows"]["kept"].as_u64().unwrap();
    assert_eq!(
        kept + stage("informative")["rows"]["dropped"].as_u64().unwrap(),
        2000
    );
    assert!(kept > 1000, "the filter kept {kept}");
    assert_eq!(stage("vectors")["rows"]["embeddings"], kept);
    assert!(cluster.queue().is_empty(), "{:?}", cluster.queue());
}

/// The names of the job logs in `store`'s log folder.
fn job_logs(store: &Path) -> Vec<String> {
    std::fs::read_dir(store.join("slurm-logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect()
}

#[test]
fn a_stage_that_fails_by_itself_is_not_submitted_again() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let wf = workflow_with_filter(dir.path(), "min_size.wasm, params: {min_side: lots}");
    let store = dir.path().join("slurm");
    let out = spawn(&cluster, &wf, &store, &["--executor", "slurm"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let filter = &report["stages"][1];
    assert_eq!(filter["status"], "failed", "{report}");
    let error = filter["error"].as_str().unwrap();
    assert!(error.contains("min_side"), "{error}");
    assert!(error.contains("log "), "names the task's log: {error}");
    // One array of 5 tasks, not 3 submissions; nothing of the filter committed.
    let logs = job_logs(&store);
    let filter_logs = logs
        .iter()
        .filter(|l| l.starts_with("informative-"))
        .count();
    assert_eq!(filter_logs, 5, "{logs:?}");
    let fp = filter["fingerprint"].as_str().unwrap();
    assert!(
        !store
            .join("objects")
            .join(fp)
            .join("manifest.json")
            .exists()
    );
    assert!(cluster.queue().is_empty(), "{:?}", cluster.queue());
}

#[test]
fn ctrl_c_cancels_the_runs_slurm_jobs_and_commits_nothing_partial() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let wf = workflow(dir.path());
    let store = dir.path().join("slurm");
    let mut run = spawn(&cluster, &wf, &store, &["--executor", "slurm"]);
    cluster.wait_running("dinoflow-pool", &mut run);
    let kill = Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    // The job is gone from the queue and nothing was committed.
    let started = Instant::now();
    while !cluster.queue().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "jobs left: {:?}",
            cluster.queue()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let manifests = std::fs::read_dir(store.join("objects"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("manifest.json").exists())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(manifests, 0);
}
