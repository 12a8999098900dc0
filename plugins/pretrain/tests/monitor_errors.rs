//! The evaluation monitor's errors, each naming the field or port and what to do: settings out
//! of range are refused with the workflow, before any stage runs; inputs that do not match
//! `monitor` (missing, unwanted, unlabelled) fail the stage when it starts, before it trains.

mod common;

use common::{MONITORED, data_stages, outcome, registry, run, student};
use dinoflow_engine::Dag;
use dinoflow_storage::CacheState;

// ---- Errors of the config alone: the workflow is refused before any stage runs ----

/// The error of parsing a workflow whose `monitored` stage has `monitor: {monitor}` (pretrain,
/// or distill with it under `student:`).
fn refused(monitor: &str, distill: bool) -> String {
    let stage = if distill {
        format!(
            "  monitored:\n    kind: distill\n    inputs: {{images: images, monitor_train: bank, monitor_test: queries}}\n    with: {{student: {}}}\n",
            student(&format!(", drop_path: 0.0, monitor: {monitor}"))
                .replace("drop_path: 0.2, ", "")
        )
    } else {
        MONITORED.replace("STUDENT", &student(&format!(", monitor: {monitor}")))
    };
    let yaml = format!("name: bad\nstages:\n{}{stage}", data_stages());
    match Dag::parse("bad.yaml", &yaml, &registry()) {
        Ok(_) => panic!("monitor: {monitor} was accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_refused(monitor: &str, distill: bool, parts: &[&str]) {
    let message = refused(monitor, distill);
    for part in ["bad.yaml:", "stage `monitored`"].iter().chain(parts) {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
}

#[test]
fn every_zero_is_refused() {
    assert_refused(
        "{every: 0}",
        false,
        &["`monitor.every` is 0; it must be at least 1 iteration"],
    );
}

#[test]
fn zero_train_rows_are_refused() {
    assert_refused(
        "{every: 2, train_rows: 0}",
        false,
        &["`monitor.train_rows` is 0; it must be at least 1 row"],
    );
}

#[test]
fn zero_test_rows_are_refused() {
    assert_refused(
        "{every: 2, test_rows: 0}",
        false,
        &["`monitor.test_rows` is 0; it must be at least 1 row"],
    );
}

#[test]
fn zero_neighbours_are_refused() {
    assert_refused(
        "{every: 2, k: 0}",
        false,
        &["`monitor.k` is 0; it must be at least 1 neighbour"],
    );
}

#[test]
fn a_temperature_that_is_not_positive_is_refused() {
    assert_refused(
        "{every: 2, temperature: 0.0}",
        false,
        &["`monitor.temperature` is 0; it must be a positive number"],
    );
}

#[test]
fn a_missing_every_and_unknown_fields_are_refused() {
    assert_refused("{train_rows: 10}", false, &["every"]);
    assert_refused("{every: 2, evry: 3}", false, &["evry"]);
}

#[test]
fn distill_refuses_a_bad_student_monitor() {
    assert_refused(
        "{every: 0}",
        true,
        &["`student`: `monitor.every` is 0; it must be at least 1 iteration"],
    );
}

// ---- Errors of the ports: the stage fails when it starts, before it trains ----

/// Runs the data stages and `stage` (a `monitored` stage), and returns its error.
async fn failure(stage: &str) -> String {
    let store = tempfile::tempdir().unwrap();
    let yaml = format!("name: bad-ports\nstages:\n{}{stage}", data_stages());
    let (engine, report) = run(store.path(), &yaml).await;
    let o = outcome(&report, "monitored");
    assert!(
        !matches!(
            engine.store().check_cached(&o.fingerprint).await.unwrap(),
            CacheState::Hit(_)
        ),
        "a failed stage committed outputs"
    );
    o.error.clone().unwrap_or_else(|| panic!("no error: {o:?}"))
}

fn pretrain_stage(inputs: &str, extra: &str) -> String {
    format!(
        "  monitored:\n    kind: pretrain\n    inputs: {{images: images{inputs}}}\n    with: {}\n",
        student(extra)
    )
}

fn assert_parts(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_without_its_test_input_fails_naming_the_port() {
    let e = failure(&pretrain_stage(
        ", monitor_train: bank",
        ", monitor: {every: 2}",
    ))
    .await;
    assert_parts(
        &e,
        &[
            "input `monitor_test`: not connected, but `monitor` is set",
            "monitor_train: <stage>, monitor_test: <stage>",
            "or remove `monitor`",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_without_any_input_fails_naming_the_first_port() {
    let e = failure(&pretrain_stage("", ", monitor: {every: 2}")).await;
    assert_parts(
        &e,
        &["input `monitor_train`: not connected, but `monitor` is set"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_inputs_without_monitor_fail_naming_the_field() {
    let e = failure(&pretrain_stage(
        ", monitor_train: bank, monitor_test: queries",
        "",
    ))
    .await;
    assert_parts(
        &e,
        &[
            "input `monitor_train`: connected, but `monitor` is not set",
            "set `monitor: {every: N}`",
            "or remove the input",
        ],
    );
    let e = failure(&pretrain_stage(", monitor_test: queries", "")).await;
    assert_parts(
        &e,
        &["input `monitor_test`: connected, but `monitor` is not set"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn distill_monitor_inputs_without_student_monitor_fail_naming_the_field() {
    // Checked before the teacher is looked for (there is none here).
    let e = failure(&format!(
        "  monitored:\n    kind: distill\n    inputs: {{images: images, monitor_train: bank, monitor_test: queries}}\n    with: {{student: {}}}\n",
        student("").replace("drop_path: 0.2, ", "")
    ))
    .await;
    assert_parts(
        &e,
        &[
            "input `monitor_train`: connected, but `student.monitor` is not set",
            "set `student.monitor: {every: N}`",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unlabelled_monitor_input_fails_saying_how_to_ingest_labels() {
    let e = failure(&pretrain_stage(
        ", monitor_train: images, monitor_test: queries",
        ", monitor: {every: 2}",
    ))
    .await;
    assert_parts(
        &e,
        &[
            "the monitor: input `monitor_train`: row 0 has no label",
            "ingest them with labels",
        ],
    );
}
