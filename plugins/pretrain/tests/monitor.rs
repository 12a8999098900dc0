//! The evaluation monitor (`monitor:` with the `monitor_train` / `monitor_test` inputs): it does
//! not change the training (pretraining and distillation, model and metrics bit for bit), its
//! rows come every `every` iterations and after the last, its last accuracy is the eval stage's
//! k-NN of the committed model, a run resumed from a checkpoint writes the same rows; its errors are
//! in monitor_errors.rs.

mod common;

use std::sync::LazyLock;

use common::{
    committed, crash_then_rerun, data_stages, monitor_rows, monitored, outcome, run, stage_metrics,
    student,
};
use tokio::sync::Mutex;

/// Held by each test that trains: libtorch's generator is one per process (every iteration
/// reseeds it), so two trainings at once in this test binary would draw from each other's
/// streams. The engine runs training stages one at a time (each takes every cpu).
static TRAINING: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

/// Pretraining and distillation, each with and without the monitor, and the eval stage on the
/// monitored model.
fn workflow() -> String {
    format!(
        "name: monitor-test
stages:
{data}{monitored}  plain:
    kind: pretrain
    inputs: {{images: images}}
    with: {plain}
  distilled:
    kind: distill
    inputs: {{images: images, teacher: plain.model, monitor_train: bank, monitor_test: queries}}
    with: {{student: {distilled}}}
  plain_distilled:
    kind: distill
    inputs: {{images: images, teacher: plain.model}}
    with: {{student: {plain_distilled}}}
  scores:
    kind: eval
    inputs: {{train: bank, test: queries, model: monitored.model}}
    with: {{knn: {{ks: [20], report_k: 20}}, linear: {{epochs: 1}}, baselines: {{raw_pixels: false, random_init: false}}}}
",
        data = data_stages(),
        monitored = monitored(),
        plain = student(""),
        distilled = student(", drop_path: 0.0, monitor: {every: 4, train_rows: 150, test_rows: 80}")
            .replace("drop_path: 0.2, ", ""),
        plain_distilled = student(", drop_path: 0.0").replace("drop_path: 0.2, ", ""),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_monitor_measures_without_changing_the_training_and_matches_eval() {
    let _training = TRAINING.lock().await;
    let store = tempfile::tempdir().unwrap();
    let (engine, report) = run(store.path(), &workflow()).await;

    // Bit-identical training with and without the monitor, pretraining and distillation.
    for (with, without) in [("monitored", "plain"), ("distilled", "plain_distilled")] {
        let (a, b) = (
            committed(&engine, &report, with).await,
            committed(&engine, &report, without).await,
        );
        for port in ["model", "metrics"] {
            assert_eq!(
                a.outputs[port].digest, b.outputs[port].digest,
                "{with} vs {without}: {port}"
            );
        }
        assert_eq!(outcome(&report, without).rows["monitor"], 0, "{without}");
        let m = stage_metrics(&engine, &report, without);
        assert!(m.get("monitor_knn_last").is_none(), "{m}");
    }

    // A row every 3 iterations and after the last (7), accuracies of a model that sees more than
    // chance (10 classes).
    let rows = monitor_rows(&engine, &report, "monitored").await;
    let steps: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(steps, [3, 6, 7]);
    for (step, top1) in &rows {
        assert!(
            top1.is_finite() && (0.3..=1.0).contains(top1),
            "{step}: {top1}"
        );
    }
    // The EMA moves (momentum 0.6), and the rows follow it.
    assert!(rows.iter().any(|r| r.1 != rows[0].1), "{rows:?}");
    let metrics = stage_metrics(&engine, &report, "monitored");
    assert_eq!(metrics["monitor_knn_last"], rows[2].1, "{metrics}");
    // The last row measured the committed model on all of `bank` and `queries` with eval's k-NN
    // (k 20, T 0.07) on eval's features: the eval stage finds the same accuracy.
    let scores = stage_metrics(&engine, &report, "scores");
    assert_eq!(scores["knn_top1.model"], rows[2].1, "{scores}");

    // Distillation: every 4 and the last, on the first 150 / 80 rows.
    let rows = monitor_rows(&engine, &report, "distilled").await;
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [4, 7]);
    for (step, top1) in &rows {
        assert!(
            top1.is_finite() && (0.3..=1.0).contains(top1),
            "{step}: {top1}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_resumed_from_a_checkpoint_writes_the_same_monitor_rows() {
    let _training = TRAINING.lock().await;
    let yaml = format!(
        "name: monitor-resume\nstages:\n{}{}",
        data_stages(),
        monitored()
    );
    let clean = tempfile::tempdir().unwrap();
    let (clean_engine, clean_report) = run(clean.path(), &yaml).await;
    let expected = committed(&clean_engine, &clean_report, "monitored").await;

    // Crash in iteration 5: the checkpoint after 4 iterations holds the monitor's row at 3.
    let store = tempfile::tempdir().unwrap();
    let (engine, report) = crash_then_rerun(store.path(), &yaml, "monitored", 5).await;
    let metrics = stage_metrics(&engine, &report, "monitored");
    assert_eq!(metrics["resumed_from_step"], 4, "{metrics}");
    let resumed = committed(&engine, &report, "monitored").await;
    for port in ["model", "metrics", "monitor"] {
        assert_eq!(
            resumed.outputs[port].digest, expected.outputs[port].digest,
            "{port}"
        );
    }
    assert_eq!(
        monitor_rows(&engine, &report, "monitored").await,
        monitor_rows(&clean_engine, &clean_report, "monitored").await
    );
}
