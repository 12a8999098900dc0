//! Fingerprints: stable under changes that cannot change outputs (formatting, key order, explicit
//! defaults), sensitive to everything that can (config, kind version, inputs, extra inputs), and
//! `plan` explains what changed.

mod common;

use std::collections::BTreeMap;

use async_trait::async_trait;
use common::{
    Env, Numbers, NumbersConfig, Runs, fnv1a_hex, fp, is_cached, opts, planned, reasons, registry,
    status,
};
use dinoflow_engine::semver::Version;
use dinoflow_engine::{Dag, Engine, Port, Registry, Stage, StageContext, StageError, StageStatus};
use serde_json::json;

const BASE: &str = "\
name: fp-demo
stages:
  a:
    kind: numbers
    with: {count: 5}
  sq:
    kind: square
    inputs: {rows: a}
  total:
    kind: sum
    inputs: {rows: sq}
  b:
    kind: numbers
    with: {count: 3, start: 10}
  bsq:
    kind: square
    inputs: {rows: b}
";

/// Fingerprints of every stage of `yaml`, planned by `engine`.
async fn fps(engine: &Engine, registry: &Registry, yaml: &str) -> BTreeMap<String, String> {
    let dag = Dag::parse("wf.yaml", yaml, registry).unwrap_or_else(|e| panic!("{e}"));
    engine
        .plan(&dag)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.fingerprint))
        .collect()
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

#[tokio::test]
async fn same_workflow_gives_same_fingerprints_on_any_store() {
    let one = Env::new();
    let two = Env::new();
    let first = fps(&one.engine, &one.registry, BASE).await;
    let again = fps(&one.engine, &one.registry, BASE).await;
    let elsewhere = fps(&two.engine, &two.registry, BASE).await;
    assert_eq!(first, again);
    assert_eq!(first, elsewhere);
    assert_eq!(first.len(), 5);
    assert!(first.values().all(|f| is_hex32(f)), "{first:?}");
    // Five different stage runs, five different names.
    let mut distinct: Vec<&String> = first.values().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "{first:?}");
}

#[tokio::test]
async fn parts_hold_kind_version_canonical_config_and_inputs() {
    let env = Env::new();
    let plan = env.engine.plan(&env.dag(BASE)).await.unwrap();
    let a = planned(&plan, "a");
    assert_eq!(a.parts.kind, "numbers");
    assert_eq!(a.parts.version, "1.2.0");
    // Defaults are filled in.
    assert_eq!(
        a.parts.config,
        json!({"count": 5, "start": 0, "shard_rows": null})
    );
    assert!(a.parts.inputs.is_empty() && a.parts.extras.is_empty());
    let sq = planned(&plan, "sq");
    assert_eq!(
        sq.parts.inputs,
        BTreeMap::from([("rows".to_string(), format!("{}/rows", a.fingerprint))])
    );
    assert_eq!(a.fingerprint, a.parts.fingerprint());
}

#[tokio::test]
async fn formatting_key_order_defaults_and_resources_do_not_change_fingerprints() {
    let env = Env::new();
    let base = fps(&env.engine, &env.registry, BASE).await;
    // Stages in another order, keys in another order, block style, explicit defaults, the port
    // named explicitly, resources set, another workflow name, comments.
    let same = "\
# the same computation, written differently
name: another-name
stages:
  bsq:
    inputs:
      rows: b.rows
    kind: square
    with: {shard_rows: null}
  b:
    with:
      start: 10
      count: 3
    kind: numbers@1
  total:
    resources: {cpus: 3, memory_gb: 2}
    inputs: {rows: sq.rows}
    kind: sum
    with: {}
  sq:
    kind: square
    inputs: {rows: a}
  a:
    with: {start: 0, count: 5, shard_rows: ~}
    kind: numbers
";
    let other = fps(&env.engine, &env.registry, same).await;
    assert_eq!(base, other);
}

#[tokio::test]
async fn config_change_changes_that_stage_and_everything_downstream_only() {
    let env = Env::new();
    let base = fps(&env.engine, &env.registry, BASE).await;
    let changed = fps(
        &env.engine,
        &env.registry,
        &BASE.replace("with: {count: 5}", "with: {count: 6}"),
    )
    .await;
    for s in ["a", "sq", "total"] {
        assert_ne!(base[s], changed[s], "{s} should change");
    }
    for s in ["b", "bsq"] {
        assert_eq!(base[s], changed[s], "{s} should not change");
    }

    // A change in the middle leaves what is upstream alone.
    let middle = fps(
        &env.engine,
        &env.registry,
        &BASE.replace(
            "    kind: square\n    inputs: {rows: a}",
            "    kind: square\n    inputs: {rows: a}\n    with: {shard_rows: 2}",
        ),
    )
    .await;
    assert_eq!(base["a"], middle["a"]);
    assert_ne!(base["sq"], middle["sq"]);
    assert_ne!(base["total"], middle["total"]);
    assert_eq!(base["b"], middle["b"]);
    assert_eq!(base["bsq"], middle["bsq"]);

    // A default written out is not a change; a non-default value is.
    let start0 = fps(
        &env.engine,
        &env.registry,
        &BASE.replace("with: {count: 5}", "with: {count: 5, start: 0}"),
    )
    .await;
    assert_eq!(base, start0);
    let start1 = fps(
        &env.engine,
        &env.registry,
        &BASE.replace("with: {count: 5}", "with: {count: 5, start: 1}"),
    )
    .await;
    assert_ne!(base["a"], start1["a"]);
}

/// Another implementation of `numbers`, released as 1.3.0 (same config, same work).
struct NumbersNext(Numbers);

#[async_trait]
impl Stage for NumbersNext {
    type Config = NumbersConfig;
    fn kind(&self) -> &'static str {
        "numbers"
    }
    fn version(&self) -> Version {
        Version::new(1, 3, 0)
    }
    fn description(&self) -> &'static str {
        "writes a range of integers, faster"
    }
    fn inputs(&self) -> Vec<Port> {
        Stage::inputs(&self.0)
    }
    fn outputs(&self) -> Vec<Port> {
        Stage::outputs(&self.0)
    }
    async fn run(&self, config: &NumbersConfig, ctx: &StageContext) -> Result<(), StageError> {
        Stage::run(&self.0, config, ctx).await
    }
}

#[tokio::test]
async fn kind_version_change_changes_fingerprints_and_plan_says_so() {
    let env = Env::new();
    let old = fps(&env.engine, &env.registry, BASE).await;
    let report = env.engine.run(&env.dag(BASE), &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");

    let runs = Runs::default();
    let mut newer = registry(&runs);
    newer.register(NumbersNext(Numbers {
        version: Version::new(1, 3, 0),
        runs: runs.clone(),
    }));
    let new = fps(&env.engine, &newer, BASE).await;
    for s in ["a", "sq", "total", "b", "bsq"] {
        assert_ne!(old[s], new[s], "{s} depends on numbers' version");
    }

    let dag = Dag::parse("wf.yaml", BASE, &newer).unwrap();
    let plan = env.engine.plan(&dag).await.unwrap();
    assert_eq!(planned(&plan, "a").parts.version, "1.3.0");
    let why = reasons(&plan, "a");
    assert!(
        why.iter()
            .any(|r| r.contains("version") && r.contains("1.2.0") && r.contains("1.3.0")),
        "{why:?}"
    );
    let why = reasons(&plan, "sq");
    assert!(
        why.iter().any(|r| r.contains("upstream `a` will run")),
        "{why:?}"
    );

    // A major pin still accepts the new minor version; the old one no longer exists.
    Dag::parse(
        "wf.yaml",
        &BASE.replace("kind: numbers", "kind: numbers@1"),
        &newer,
    )
    .unwrap();
    let e = Dag::parse(
        "wf.yaml",
        &BASE.replace("kind: numbers", "kind: numbers@=1.2.0"),
        &newer,
    )
    .err()
    .expect("pin to 1.2.0 must fail with 1.3.0");
    assert!(e.message.contains("1.3.0"), "{e}");
}

#[tokio::test]
async fn input_wiring_changes_fingerprints_unless_the_data_is_the_same() {
    let env = Env::new();
    let wf = |inputs: &str| {
        format!(
            "\
name: wiring
stages:
  a:
    kind: numbers
    with: {{count: 4}}
  twin:
    kind: numbers
    with: {{count: 4}}
  c:
    kind: numbers
    with: {{count: 5}}
  total:
    kind: sum
    inputs: {inputs}
"
        )
    };
    let from_a = fps(&env.engine, &env.registry, &wf("{rows: a}")).await;
    // Same kind, version and config: same stage run, whatever its name.
    assert_eq!(from_a["a"], from_a["twin"]);
    assert_ne!(from_a["a"], from_a["c"]);
    let from_twin = fps(&env.engine, &env.registry, &wf("{rows: twin}")).await;
    assert_eq!(from_a["total"], from_twin["total"]);
    let from_c = fps(&env.engine, &env.registry, &wf("{rows: c}")).await;
    assert_ne!(from_a["total"], from_c["total"]);
    let with_more = fps(&env.engine, &env.registry, &wf("{rows: a, more: c}")).await;
    assert_ne!(from_a["total"], with_more["total"]);
    let swapped = fps(&env.engine, &env.registry, &wf("{rows: c, more: a}")).await;
    assert_ne!(with_more["total"], swapped["total"]);
    // Upstream fingerprints are untouched by rewiring downstream.
    for s in ["a", "twin", "c"] {
        assert_eq!(from_a[s], swapped[s]);
    }
}

#[tokio::test]
async fn extra_input_digest_changes_fingerprints() {
    let env = Env::new();
    let file = env.root().join("numbers.txt");
    std::fs::write(&file, "1\n2\n3\n").unwrap();
    let yaml = format!(
        "\
name: extras
stages:
  src:
    kind: lines
    with: {{path: '{}'}}
  sq:
    kind: square
    inputs: {{rows: src}}
",
        file.display()
    );
    let dag = env.dag(&yaml);
    let plan = env.engine.plan(&dag).await.unwrap();
    assert_eq!(
        planned(&plan, "src").parts.extras,
        BTreeMap::from([("source file".to_string(), fnv1a_hex(b"1\n2\n3\n"))])
    );
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(env.values(&fp(&plan, "sq"), "rows").await, [1, 4, 9]);

    // Rewriting the same bytes changes nothing.
    std::fs::write(&file, "1\n2\n3\n").unwrap();
    let same = env.engine.plan(&dag).await.unwrap();
    assert_eq!(fp(&same, "src"), fp(&plan, "src"));
    assert!(is_cached(&same, "src") && is_cached(&same, "sq"));

    // Other bytes: a new fingerprint for the stage and its consumer, and a reason.
    std::fs::write(&file, "1\n2\n4\n").unwrap();
    let changed = env.engine.plan(&dag).await.unwrap();
    assert_ne!(fp(&changed, "src"), fp(&plan, "src"));
    assert_ne!(fp(&changed, "sq"), fp(&plan, "sq"));
    let why = reasons(&changed, "src");
    assert!(
        why.iter().any(|r| r.contains("source file changed")),
        "{why:?}"
    );
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert_eq!(status(&report, "src"), StageStatus::Ok);
    assert_eq!(env.values(&fp(&changed, "sq"), "rows").await, [1, 4, 16]);
    assert_eq!(env.runs.count("src"), 2);
}

#[tokio::test]
async fn plan_explains_config_changes_and_keeps_the_rest_cached() {
    let env = Env::new();
    let first = env.engine.plan(&env.dag(BASE)).await.unwrap();
    assert_eq!(reasons(&first, "a"), ["not run before"]);
    assert!(
        reasons(&first, "sq").contains(&"upstream `a` will run".to_string()),
        "{first:?}"
    );

    let report = env.engine.run(&env.dag(BASE), &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    let plan = env.engine.plan(&env.dag(BASE)).await.unwrap();
    for s in ["a", "sq", "total", "b", "bsq"] {
        assert!(is_cached(&plan, s), "{s} should be cached: {plan:?}");
    }

    let edited = BASE.replace("with: {count: 5}", "with: {count: 7}");
    let plan = env.engine.plan(&env.dag(&edited)).await.unwrap();
    let why = reasons(&plan, "a");
    assert!(
        why.iter()
            .any(|r| r.contains("count") && r.contains('5') && r.contains('7')),
        "{why:?}"
    );
    assert!(!why.iter().any(|r| r.contains("start")), "{why:?}");
    let why = reasons(&plan, "sq");
    assert!(
        why.iter().any(|r| r.contains("input `rows` changed")),
        "{why:?}"
    );
    assert!(
        why.iter().any(|r| r.contains("upstream `a` will run")),
        "{why:?}"
    );
    let why = reasons(&plan, "total");
    assert!(
        why.iter().any(|r| r.contains("upstream `sq` will run")),
        "{why:?}"
    );
    assert!(is_cached(&plan, "b") && is_cached(&plan, "bsq"));

    // Running it re-runs exactly the affected stages.
    let before = env.runs.snapshot();
    let report = env
        .engine
        .run(&env.dag(&edited), &opts(false))
        .await
        .unwrap();
    for (s, st) in [
        ("a", StageStatus::Ok),
        ("sq", StageStatus::Ok),
        ("total", StageStatus::Ok),
        ("b", StageStatus::Cached),
        ("bsq", StageStatus::Cached),
    ] {
        assert_eq!(status(&report, s), st, "{s}");
    }
    let after = env.runs.snapshot();
    for s in ["a", "sq", "total"] {
        assert_eq!(after[s], before[s] + 1, "{s}");
    }
    for s in ["b", "bsq"] {
        assert_eq!(after[s], before[s], "{s}");
    }
    // 0² + … + 6² = 91.
    assert_eq!(env.values(&fp(&plan, "total"), "rows").await, [91]);

    // Going back to the old config is a cache hit: its outputs are still committed.
    let plan = env.engine.plan(&env.dag(BASE)).await.unwrap();
    assert!(plan.iter().all(|p| is_cached(&plan, &p.name)), "{plan:?}");
    let report = env.engine.run(&env.dag(BASE), &opts(false)).await.unwrap();
    assert!(
        report
            .stages
            .iter()
            .all(|s| s.status == StageStatus::Cached)
    );
    assert_eq!(env.runs.snapshot(), after);
    // 0² + … + 4² = 30.
    assert_eq!(env.values(&fp(&plan, "total"), "rows").await, [30]);
}

#[tokio::test]
async fn unreadable_extra_input_fails_the_plan_naming_the_stage() {
    let env = Env::new();
    let missing = env.root().join("not-there.txt");
    let dag = env.dag(&format!(
        "name: extras\nstages:\n  src:\n    kind: lines\n    with: {{path: '{}'}}\n",
        missing.display()
    ));
    let e = env.engine.plan(&dag).await.unwrap_err();
    match &e {
        dinoflow_engine::EngineError::Stage { stage, .. } => assert_eq!(stage, "src"),
        other => panic!("expected a stage error, got {other:?}"),
    }
    assert!(e.to_string().starts_with("stage `src`: "), "{e}");
    assert!(env.engine.run(&dag, &opts(false)).await.is_err());
    assert_eq!(env.runs.total(), 0);
}
