//! Workflow presets: `--preset NAME` merges a named set of overrides into the stages' `with:`.

mod common;

use common::{Env, fp, opts};
use dinoflow_engine::Dag;

const YAML: &str = "\
name: presets
stages:
  nums:
    kind: numbers
    with: {count: 4, start: 1, shard_rows: 2}
  total:
    kind: sum
    inputs: {rows: nums}
presets:
  small: {}
  large:
    nums: {count: 10}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preset_changes_only_the_fields_it_names() {
    let env = Env::new();
    let registry = common::registry(&common::Runs::default());
    let base = env.dag(YAML);
    let small = Dag::parse_preset("wf.yaml", YAML, &registry, Some("small")).unwrap();
    let large = Dag::parse_preset("wf.yaml", YAML, &registry, Some("large")).unwrap();

    // An empty preset is the workflow as written: same fingerprints, so its outputs are shared.
    let plan = env.engine.plan(&base).await.unwrap();
    let plan_small = env.engine.plan(&small).await.unwrap();
    assert_eq!(fp(&plan, "total"), fp(&plan_small, "total"));

    let report = env.engine.run(&large, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    let plan_large = env.engine.plan(&large).await.unwrap();
    assert_ne!(fp(&plan, "nums"), fp(&plan_large, "nums"));
    // count 10 from the preset, start 1 and shard_rows 2 kept: 1 + … + 10 = 55.
    assert_eq!(env.values(&fp(&plan_large, "total"), "rows").await, [55]);
    let m = env.manifest(&fp(&plan_large, "nums")).await;
    assert_eq!(m.outputs["rows"].files.len(), 5);

    // The run database keeps the preset and the workflow's exact text, for reproduction.
    let run = env.engine.db().run(report.run_id).unwrap().unwrap();
    assert_eq!(run.preset.as_deref(), Some("large"));
    assert_eq!(run.source.as_deref(), Some(YAML));
}
