//! Resolution phases (`phases:`): from the phase's iteration on the global crops are cut at its
//! size (the `global_size` column of `metrics`), the iterations before it are those of a run
//! without phases, in pretraining and in distillation; a run crashed before the phase change or
//! after it resumes to the uninterrupted run's outputs. The CLI's SIGKILL test of a run through a
//! phase is in tests/pretrain.rs at the repository root; the refused settings are in the crate's
//! unit tests (src/phases.rs) and in tests/malformed_workflows.rs.

mod common;

use std::sync::LazyLock;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use common::{
    committed, crash_then_rerun, data_stages, output_batches, run, stage_metrics, student,
};
use dinoflow_engine::{Engine, RunReport};
use tokio::sync::Mutex;

/// Held by each test that trains: libtorch's generator is one per process, so two trainings at
/// once in this test binary would draw from each other's streams.
static TRAINING: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

/// The tiny student (patch 7, 28 px global crops, 7 iterations, a checkpoint every 2) with
/// global crops of 42 px from iteration ceil(0.6 · 7) = 5 on.
const PHASES: &str = ", phases: [{from: 0.6, global_size: 42}]";

/// The first iteration at 42 px.
const PHASE_START: usize = 5;

/// The tiny student without drop-path, for distillation.
fn distill_student(extra: &str) -> String {
    student(&format!(", drop_path: 0.0{extra}")).replace("drop_path: 0.2, ", "")
}

/// Pretraining with and without the phase, and the distillation of the plain model with and
/// without it.
fn workflow() -> String {
    format!(
        "name: phases-test
stages:
{data}  plain:
    kind: pretrain
    inputs: {{images: images}}
    with: {plain}
  phased:
    kind: pretrain
    inputs: {{images: images}}
    with: {phased}
  distilled:
    kind: distill
    inputs: {{images: images, teacher: plain.model}}
    with: {{student: {distilled}}}
  distilled_phased:
    kind: distill
    inputs: {{images: images, teacher: plain.model}}
    with: {{student: {distilled_phased}}}
",
        data = data_stages(),
        plain = student(""),
        phased = student(PHASES),
        distilled = distill_student(""),
        distilled_phased = distill_student(PHASES),
    )
}

/// The `metrics` output of `stage`: each row's `global_size` and its float columns.
async fn metric_rows(engine: &Engine, report: &RunReport, stage: &str) -> Vec<(u64, Vec<f64>)> {
    let mut rows = Vec::new();
    for b in output_batches(engine, report, stage, "metrics").await {
        let sizes = b
            .column_by_name("global_size")
            .unwrap_or_else(|| panic!("{stage}: no global_size column in {:?}", b.schema()))
            .as_primitive::<UInt64Type>();
        let floats: Vec<_> = b
            .columns()
            .iter()
            .filter_map(|c| c.as_primitive_opt::<Float64Type>())
            .collect();
        assert!(floats.len() >= 11, "{stage}: {:?}", b.schema());
        for (i, size) in sizes.values().iter().enumerate() {
            rows.push((*size, floats.iter().map(|f| f.value(i)).collect()));
        }
    }
    rows
}

/// Asserts that `phased` cut its global crops at 28 px, then at 42 px from [`PHASE_START`] on,
/// that its rows before the phase are those of `plain` (bit for bit) and that the phase changed
/// the rows after it.
fn assert_phase_rows(stage: &str, phased: &[(u64, Vec<f64>)], plain: &[(u64, Vec<f64>)]) {
    let sizes: Vec<u64> = phased.iter().map(|r| r.0).collect();
    assert_eq!(sizes, [28, 28, 28, 28, 28, 42, 42], "{stage}");
    assert!(plain.iter().all(|r| r.0 == 28), "{stage}: {plain:?}");
    assert_eq!(
        phased[..PHASE_START],
        plain[..PHASE_START],
        "{stage}: the iterations before the phase"
    );
    for (step, (a, b)) in phased.iter().zip(plain).enumerate().skip(PHASE_START) {
        assert!(a.1.iter().all(|v| v.is_finite()), "{stage} {step}: {a:?}");
        assert_ne!(a.1, b.1, "{stage}: iteration {step} did not change");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_phase_cuts_its_global_crops_at_its_size_and_leaves_the_iterations_before_it() {
    let _training = TRAINING.lock().await;
    let store = tempfile::tempdir().unwrap();
    let (engine, report) = run(store.path(), &workflow()).await;
    for (phased, plain) in [("phased", "plain"), ("distilled_phased", "distilled")] {
        assert_phase_rows(
            phased,
            &metric_rows(&engine, &report, phased).await,
            &metric_rows(&engine, &report, plain).await,
        );
        let (a, b) = (
            committed(&engine, &report, phased).await,
            committed(&engine, &report, plain).await,
        );
        assert_ne!(a.outputs["model"].digest, b.outputs["model"].digest);
        let m = stage_metrics(&engine, &report, phased);
        assert!(m["loss_last"].as_f64().is_some_and(f64::is_finite), "{m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_crashed_before_or_after_the_phase_change_resumes_to_the_uninterrupted_outputs() {
    let _training = TRAINING.lock().await;
    let yaml = format!(
        "name: phases-resume\nstages:\n{}  phased:\n    kind: pretrain\n    inputs: {{images: \
         images}}\n    with: {}\n",
        data_stages(),
        student(PHASES)
    );
    let clean = tempfile::tempdir().unwrap();
    let (clean_engine, clean_report) = run(clean.path(), &yaml).await;
    let expected = committed(&clean_engine, &clean_report, "phased").await;
    let expected_rows = metric_rows(&clean_engine, &clean_report, "phased").await;

    // Crashed after 5 iterations: resumed from the checkpoint after 4, before the phase, which
    // begins in the resumed process. Crashed after 7 (the last, before the outputs): resumed
    // from the checkpoint after 6, which has one iteration at 42 px behind it.
    for (crash_at, resumed_from) in [(5, 4), (7, 6)] {
        let store = tempfile::tempdir().unwrap();
        let (engine, report) = crash_then_rerun(store.path(), &yaml, "phased", crash_at).await;
        let metrics = stage_metrics(&engine, &report, "phased");
        assert_eq!(metrics["resumed_from_step"], resumed_from, "{metrics}");
        let resumed = committed(&engine, &report, "phased").await;
        for port in ["model", "metrics", "monitor"] {
            assert_eq!(
                resumed.outputs[port].digest, expected.outputs[port].digest,
                "crash at {crash_at}: {port}"
            );
        }
        assert_eq!(
            metric_rows(&engine, &report, "phased").await,
            expected_rows,
            "crash at {crash_at}"
        );
    }
}
