//! Shared by the monitor and phase tests: a tiny student, the labelled data stages, a runner of workflows
//! on the engine with one thread, and readers of the outcomes and outputs.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use dinoflow_engine::{
    Dag, Engine, ProgressBar, ProgressSink, Registry, Resources, RunOptions, RunReport, Silent,
    StageEvent, StageOutcome,
};
use dinoflow_pretrain::{Distill, Pretrain};
use dinoflow_storage::{CacheState, Dataset, Manifest, Store};
use futures::TryStreamExt;

/// Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist).
pub const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

/// A tiny student: 1 block of width 32, patch 7 (a 4×4 grid), drop-path, 7 iterations of 8
/// images, a fast-moving EMA, a checkpoint every 2. (Too small to learn: its k-NN accuracy stays
/// near 0.4, above the 0.1 of chance; 200 iterations of 2 blocks of width 64 on 2000 images do
/// not move it either, so the test checks the rows, not learning.)
pub fn student(extra: &str) -> String {
    format!(
        "{{preset: tiny-28, embed_dim: 32, depth: 1, num_heads: 2, patch_size: 7, layerscale: 0.1, \
         drop_path: 0.2, steps: 7, batch_size: 8, local_crops: 1, checkpoint_every: 2, seed: 5, \
         base_lr: 0.02, momentum: [0.6, 0.6], \
         objective: {{head: {{prototypes: 64, hidden_dim: 32, bottleneck_dim: 16}}}}{extra}}}"
    )
}

/// The data stages: `images` (64 unlabelled training images), `bank` (200 labelled train
/// images), `queries` (100 labelled test images).
pub fn data_stages() -> String {
    format!(
        "  images:
    kind: ingest
    with: {{source: {{idx: {{images: {FMNIST}/t10k-images-idx3-ubyte.gz}}}}, limit: 64}}
  bank:
    kind: ingest
    with: {{source: {{idx: {{images: {FMNIST}/train-images-idx3-ubyte.gz, labels: {FMNIST}/train-labels-idx1-ubyte.gz}}}}, limit: 200}}
  queries:
    kind: ingest
    with: {{source: {{idx: {{images: {FMNIST}/t10k-images-idx3-ubyte.gz, labels: {FMNIST}/t10k-labels-idx1-ubyte.gz}}}}, limit: 100}}
"
    )
}

/// A pretrain stage `monitored` on `images` with both monitor inputs; `STUDENT` is its `with:`.
pub const MONITORED: &str = "  monitored:
    kind: pretrain
    inputs: {images: images, monitor_train: bank, monitor_test: queries}
    with: STUDENT
";

/// [`MONITORED`] with the tiny student and `monitor: {every: 3}`.
pub fn monitored() -> String {
    MONITORED.replace("STUDENT", &student(", monitor: {every: 3}"))
}

/// The kinds the tests use: ingest, pretrain, distill, eval.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(dinoflow_ingest::Ingest);
    registry.register(Pretrain);
    registry.register(Distill);
    registry.register(dinoflow_eval::Eval);
    registry
}

/// Runs `yaml` on the engine with the store at `store`, one thread and `sink`, going on after a
/// failed stage.
pub async fn run_with(
    store: &Path,
    yaml: &str,
    sink: Arc<dyn ProgressSink>,
) -> (Engine, RunReport) {
    let dag = Dag::parse("wf.yaml", yaml, &registry()).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::open(Store::create(store.to_str().unwrap()).unwrap(), sink).unwrap();
    let opts = RunOptions {
        keep_going: true,
        // One thread: runs compared bit for bit must sum in the same order.
        limits: Resources {
            cpus: 1,
            gpus: 0,
            memory_gb: 8.0,
        },
        handle_ctrl_c: false,
        executor: Default::default(),
    };
    let report = engine.run(&dag, &opts).await.unwrap();
    (engine, report)
}

/// [`run_with`] showing nothing.
pub async fn run(store: &Path, yaml: &str) -> (Engine, RunReport) {
    run_with(store, yaml, Arc::new(Silent)).await
}

/// Runs `yaml` with `stage` crashing once `at` iterations are done (asserting that it crashed),
/// then runs it again on the same store, which resumes from the newest checkpoint.
pub async fn crash_then_rerun(
    store: &Path,
    yaml: &str,
    stage: &'static str,
    at: u64,
) -> (Engine, RunReport) {
    let (_, crashed) = run_with(store, yaml, Arc::new(CrashAt { stage, at })).await;
    let error = outcome(&crashed, stage).error.clone();
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("training thread")),
        "{error:?}"
    );
    run(store, yaml).await
}

/// The outcome of `stage`.
pub fn outcome<'a>(report: &'a RunReport, stage: &str) -> &'a StageOutcome {
    report
        .stages
        .iter()
        .find(|s| s.name == stage)
        .unwrap_or_else(|| panic!("no stage {stage} in {report:?}"))
}

/// The metrics `stage` recorded in the run database.
pub fn stage_metrics(engine: &Engine, report: &RunReport, stage: &str) -> serde_json::Value {
    engine
        .db()
        .stages_of_run(report.run_id)
        .unwrap()
        .into_iter()
        .find(|r| r.stage == stage)
        .unwrap_or_else(|| panic!("{stage} not in the run database"))
        .metrics
}

/// The committed manifest of `stage`, which must have succeeded.
pub async fn committed(engine: &Engine, report: &RunReport, stage: &str) -> Manifest {
    let o = outcome(report, stage);
    assert!(o.error.is_none(), "{stage}: {o:?}");
    match engine.store().check_cached(&o.fingerprint).await.unwrap() {
        CacheState::Hit(m) => m,
        _ => panic!("{stage} committed nothing"),
    }
}

/// The record batches of dataset output `port` of `stage`, which must have succeeded.
pub async fn output_batches(
    engine: &Engine,
    report: &RunReport,
    stage: &str,
    port: &str,
) -> Vec<RecordBatch> {
    let manifest = committed(engine, report, stage).await;
    let dataset = Dataset::open(
        engine.store().clone(),
        &outcome(report, stage).fingerprint,
        manifest.outputs[port].clone(),
    )
    .unwrap();
    dataset.batches(1024).try_collect().await.unwrap()
}

/// The `monitor` output of `stage`: (step, knn_top1) rows.
pub async fn monitor_rows(engine: &Engine, report: &RunReport, stage: &str) -> Vec<(u64, f64)> {
    let mut rows = Vec::new();
    for b in output_batches(engine, report, stage, "monitor").await {
        let steps = b
            .column_by_name("step")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let top1 = b
            .column_by_name("knn_top1")
            .unwrap()
            .as_primitive::<Float64Type>();
        rows.extend(
            steps
                .values()
                .iter()
                .copied()
                .zip(top1.values().iter().copied()),
        );
    }
    rows
}

/// A progress sink whose bar for `stage` panics at its `at`-th iteration (a crash of the
/// training thread), after the checkpoints before it were written.
pub struct CrashAt {
    /// The stage whose bar panics.
    pub stage: &'static str,
    /// The iteration count at which it panics.
    pub at: u64,
}

struct CrashingBar {
    done: AtomicU64,
    at: u64,
}

impl ProgressBar for CrashingBar {
    fn inc(&self, n: u64) {
        if self.done.fetch_add(n, Ordering::SeqCst) + n >= self.at {
            panic!("simulated crash at iteration {}", self.at);
        }
    }
    fn set_total(&self, _: u64) {}
    fn finish(&self) {}
}

impl ProgressSink for CrashAt {
    fn bar(&self, stage: &str, total: Option<u64>, unit: &str) -> Box<dyn ProgressBar> {
        if stage == self.stage {
            Box::new(CrashingBar {
                done: AtomicU64::new(0),
                at: self.at,
            })
        } else {
            Silent.bar(stage, total, unit)
        }
    }
    fn event(&self, _: &str, _: &StageEvent) {}
}
