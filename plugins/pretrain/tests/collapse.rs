//! The collapse guard: when it fires (exactly after `patience` iterations of a condition, once per
//! episode, again only after the condition stopped), the thresholds (1 % of log K, a spread of
//! 0.05), the config defaults and checks, and a deliberately collapsing pretraining (uniform
//! targets at teacher temperature 10) that fails with `fail_on_collapse` and warns without it,
//! training exactly as with the guard silent.

mod common;

use common::{committed, outcome, run, stage_metrics};
use dinoflow_engine::Stage;
use dinoflow_pretrain::{
    CollapseGuard, CollapseKind, Distill, DistillConfig, Pretrain, PretrainConfig, PretrainError,
    StepLosses,
};
use dinoflow_storage::CacheState;

/// ln 256 (K = 256 prototypes), written out.
const LN_256: f64 = 5.545_177_444_479_562;
/// sqrt(64) (D = 64).
const SQRT_64: f64 = 8.0;
/// Healthy figures: entropy well below log K, the spread of random unit vectors (1 / sqrt(D)).
const HEALTHY: (f64, f64) = (3.0, 1.0 / SQRT_64);
/// Uniform targets (entropy = log K) with a healthy spread.
const UNIFORM: (f64, f64) = (LN_256, 1.0 / SQRT_64);
/// Peaked targets with the cls tokens all alike (spread 0.008).
const NO_SPREAD: (f64, f64) = (3.0, 0.001);

fn losses((teacher_entropy, feature_std): (f64, f64)) -> StepLosses {
    StepLosses {
        dino_local: 1.0,
        dino_global: 1.0,
        koleo: 0.0,
        ibot: 1.0,
        total: 3.0,
        teacher_entropy,
        feature_std,
    }
}

fn guard(patience: usize) -> CollapseGuard {
    CollapseGuard::new(patience, 256, 64).unwrap()
}

/// Feeds `figures` at iterations `from..`; returns (iteration, kind, since) of every report.
fn feed(
    g: &mut CollapseGuard,
    from: usize,
    figures: &[(f64, f64)],
) -> Vec<(usize, CollapseKind, usize)> {
    let mut out = Vec::new();
    for (i, f) in figures.iter().enumerate() {
        for c in g.observe(from + i, &losses(*f)) {
            assert_eq!(c.at, from + i);
            out.push((c.at, c.kind, c.since));
        }
    }
    out
}

#[test]
fn uniform_targets_fire_after_exactly_patience_iterations_once_per_episode() {
    let mut g = guard(3);
    assert_eq!(feed(&mut g, 0, &[UNIFORM, UNIFORM]), []);
    assert_eq!(
        feed(&mut g, 2, &[UNIFORM]),
        [(2, CollapseKind::UniformTargets, 0)]
    );
    // The same episode goes on: no further report.
    assert_eq!(feed(&mut g, 3, &[UNIFORM; 20]), []);
    assert_eq!(g.episodes(), 1);
    // The condition stops, then holds again: a new episode, counted from its own start.
    assert_eq!(feed(&mut g, 23, &[HEALTHY]), []);
    assert_eq!(feed(&mut g, 24, &[UNIFORM, UNIFORM]), []);
    assert_eq!(
        feed(&mut g, 26, &[UNIFORM]),
        [(26, CollapseKind::UniformTargets, 24)]
    );
    assert_eq!(g.episodes(), 2);
    let first = g.first().unwrap();
    assert_eq!(
        (first.kind, first.since, first.at),
        (CollapseKind::UniformTargets, 0, 2)
    );
    assert!((first.log_k - LN_256).abs() < 1e-12, "{}", first.log_k);
}

#[test]
fn a_streak_shorter_than_patience_is_forgotten() {
    let mut g = guard(3);
    let figures = [
        UNIFORM, UNIFORM, HEALTHY, UNIFORM, UNIFORM, HEALTHY, UNIFORM,
    ];
    assert_eq!(feed(&mut g, 0, &figures), []);
    assert_eq!(g.episodes(), 0);
    assert!(g.first().is_none());
    assert_eq!(
        feed(&mut g, 7, &[UNIFORM, UNIFORM]),
        [(8, CollapseKind::UniformTargets, 6)]
    );
}

#[test]
fn healthy_figures_never_fire() {
    let mut g = guard(1);
    assert_eq!(feed(&mut g, 0, &[HEALTHY; 1000]), []);
    // Near the thresholds on the healthy side: 0.99 · ln 256 = 5.4897, spread 0.0504.
    assert_eq!(feed(&mut g, 1000, &[(5.48, 0.0063); 10]), []);
    assert_eq!(g.episodes(), 0);
    assert!(g.first().is_none());
}

#[test]
fn the_thresholds_are_one_percent_of_log_k_and_a_spread_of_a_twentieth() {
    // Entropy 5.49 ≥ 5.4897; spread 0.0062 · 8 = 0.0496 < 0.05.
    let mut g = guard(1);
    assert_eq!(
        feed(&mut g, 0, &[(5.49, 0.0062)]),
        [
            (0, CollapseKind::UniformTargets, 0),
            (0, CollapseKind::NoSpread, 0)
        ]
    );
    // The spread scales with sqrt(D): 0.0062 is healthy with D = 256 (0.0992).
    let mut wide = CollapseGuard::new(1, 256, 256).unwrap();
    assert_eq!(feed(&mut wide, 0, &[(3.0, 0.0062)]), []);
    // log K follows K: 5.49 nats is below 0.99 · ln 1024 = 6.8620.
    let mut big_head = CollapseGuard::new(1, 1024, 64).unwrap();
    assert_eq!(feed(&mut big_head, 0, &[(5.49, 0.125)]), []);
    assert_eq!(
        feed(&mut big_head, 1, &[(6.87, 0.125)]),
        [(1, CollapseKind::UniformTargets, 1)]
    );
}

#[test]
fn no_spread_is_its_own_episode() {
    let mut g = guard(2);
    let reports = feed(
        &mut g,
        0,
        &[NO_SPREAD, NO_SPREAD, NO_SPREAD, UNIFORM, UNIFORM],
    );
    // Spread from 0 (reported at 1); uniform targets from 3 (reported at 4), while the spread
    // recovered at 3.
    assert_eq!(
        reports,
        [
            (1, CollapseKind::NoSpread, 0),
            (4, CollapseKind::UniformTargets, 3)
        ]
    );
    assert_eq!(g.episodes(), 2);
    assert_eq!(g.first().unwrap().kind, CollapseKind::NoSpread);
    let c = g.observe(5, &losses(UNIFORM));
    assert!(c.is_empty(), "{c:?}");
    let mut g = guard(2);
    feed(&mut g, 0, &[NO_SPREAD]);
    let c = g.observe(1, &losses(NO_SPREAD));
    assert_eq!(c.len(), 1);
    assert!((c[0].value - 0.008).abs() < 1e-12, "{}", c[0].value);
    let message = c[0].to_string();
    for part in [
        "no feature spread",
        "0.0080",
        "since iteration 0",
        "base_lr",
        "koleo_weight",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
}

#[test]
fn step_warns_or_fails_with_a_typed_error_naming_the_iteration() {
    let mut g = guard(2);
    assert!(g.step(0, &losses(UNIFORM), true).is_ok());
    match g.step(1, &losses(UNIFORM), true) {
        Err(e @ PretrainError::Collapse { iteration: 1, .. }) => {
            let message = e.to_string();
            for part in [
                "iteration 1",
                "DINO targets uniform at 5.5452 nats of log K = 5.5452",
                "since iteration 0",
                "teacher temperature",
                "layerscale",
                "objective.head.prototypes",
                "momentum",
            ] {
                assert!(message.contains(part), "{part:?} not in {message}");
            }
        }
        other => panic!("expected a collapse at iteration 1, got {other:?}"),
    }
    let mut g = guard(2);
    for step in 0..5 {
        assert!(g.step(step, &losses(UNIFORM), false).is_ok());
    }
    assert_eq!(g.episodes(), 1);
}

#[test]
fn a_zero_patience_is_refused() {
    assert!(matches!(
        CollapseGuard::new(0, 256, 64),
        Err(PretrainError::Config(_))
    ));
    let config: PretrainConfig = serde_json::from_value(serde_json::json!({
        "preset": "tiny-28", "steps": 10, "collapse_patience": 0
    }))
    .unwrap();
    let message = Pretrain.check(&config).unwrap_err();
    assert!(message.contains("`collapse_patience` is 0"), "{message}");
    let distill: DistillConfig = serde_json::from_value(serde_json::json!({
        "student": {"preset": "tiny-28", "steps": 10, "collapse_patience": 0}
    }))
    .unwrap();
    let message = Distill.check(&distill).unwrap_err();
    assert!(message.contains("`collapse_patience` is 0"), "{message}");
}

#[test]
fn patience_defaults_to_a_quarter_of_the_steps_and_defaults_stay_out_of_the_config() {
    let parse = |extra: serde_json::Value| -> PretrainConfig {
        let mut v = serde_json::json!({"preset": "tiny-28", "steps": 10});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    };
    let default = parse(serde_json::json!({}));
    assert_eq!(default.collapse_patience(), 2);
    assert!(!default.fail_on_collapse);
    assert_eq!(
        parse(serde_json::json!({"steps": 3})).collapse_patience(),
        1
    );
    assert_eq!(
        parse(serde_json::json!({"steps": 4000})).collapse_patience(),
        1000
    );
    assert_eq!(
        parse(serde_json::json!({"collapse_patience": 7})).collapse_patience(),
        7
    );
    // The canonical config (and so the fingerprint) of a config without the fields is unchanged.
    let written = serde_json::to_value(&default).unwrap();
    assert!(written.get("collapse_patience").is_none(), "{written}");
    assert!(written.get("fail_on_collapse").is_none(), "{written}");
    let on = serde_json::to_value(parse(serde_json::json!({"fail_on_collapse": true}))).unwrap();
    assert_eq!(on["fail_on_collapse"], true);
}

// ---- The stages ----

/// A tiny student: teacher temperature 10 makes the softmax of cosine logits (|logit| ≤ 1, so
/// within ±0.2 after centering) nearly flat: entropy within 0.02 nats of ln 64 = 4.16, far inside
/// the 1 % (0.042 nats) margin, from the first iteration on.
fn student(extra: &str) -> String {
    format!(
        "{{preset: tiny-28, embed_dim: 32, depth: 1, num_heads: 2, steps: 4, batch_size: 8, \
         local_crops: 1, teacher_temp: [10.0, 10.0], seed: 5, \
         objective: {{head: {{prototypes: 64, hidden_dim: 32, bottleneck_dim: 16}}}}{extra}}}"
    )
}

fn workflow() -> String {
    format!(
        "name: collapse-test
stages:
  images:
    kind: ingest
    with:
      source:
        idx: {{images: /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz}}
      limit: 64
  failing:
    kind: pretrain
    inputs: {{images: images}}
    with: {failing}
  warning:
    kind: pretrain
    inputs: {{images: images}}
    with: {warning}
  quiet:
    kind: pretrain
    inputs: {{images: images}}
    with: {quiet}
  distilled:
    kind: distill
    inputs: {{images: images, teacher: warning.model}}
    with: {{student: {warning}}}
",
        failing = student(", collapse_patience: 2, fail_on_collapse: true"),
        warning = student(", collapse_patience: 2"),
        quiet = student(", collapse_patience: 1000"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collapsing_run_fails_when_asked_and_warns_otherwise_without_changing_the_training() {
    let store = tempfile::tempdir().unwrap();
    let (engine, report) = run(store.path(), &workflow()).await;

    // fail_on_collapse: the stage fails naming the term and the iteration, and commits nothing.
    let failing = outcome(&report, "failing");
    let error = failing
        .error
        .as_deref()
        .unwrap_or_else(|| panic!("{report:?}"));
    assert!(error.contains("DINO targets uniform"), "{error}");
    assert!(error.contains("collapsed at iteration 1"), "{error}");
    assert!(error.contains("since iteration 0"), "{error}");
    assert!(matches!(
        engine
            .store()
            .check_cached(&failing.fingerprint)
            .await
            .unwrap(),
        CacheState::Miss(_)
    ));

    // Without it: the stage succeeds and counts the episode.
    for stage in ["warning", "quiet", "distilled"] {
        let o = outcome(&report, stage);
        assert!(o.error.is_none(), "{stage}: {o:?}");
        assert_eq!(o.rows["metrics"], 4, "{stage}");
    }
    let warned = stage_metrics(&engine, &report, "warning");
    assert!(
        warned["collapse_warnings"].as_u64().unwrap() >= 1,
        "{warned}"
    );
    assert_eq!(warned["collapse_first_kind"], "uniform_targets", "{warned}");
    assert_eq!(warned["collapse_first_iteration"], 1, "{warned}");
    let distilled = stage_metrics(&engine, &report, "distilled");
    assert!(
        distilled["collapse_warnings"].as_u64().unwrap() >= 1,
        "{distilled}"
    );
    assert_eq!(
        distilled["collapse_first_kind"], "uniform_targets",
        "{distilled}"
    );

    // Patience beyond the run: no episode, the metric is still written.
    let quiet = stage_metrics(&engine, &report, "quiet");
    assert_eq!(quiet["collapse_warnings"], 0, "{quiet}");
    assert!(quiet.get("collapse_first_kind").is_none(), "{quiet}");

    // The guard only watches: the warned and the quiet run trained identically.
    let (a, b) = (
        committed(&engine, &report, "warning").await,
        committed(&engine, &report, "quiet").await,
    );
    for port in ["model", "metrics"] {
        assert_eq!(a.outputs[port].digest, b.outputs[port].digest, "{port}");
    }
}
