//! The data stages write, read back from the store through `Dataset`, against values worked out
//! here by hand or by formula.

mod common;

use common::{Env, fp, numbers_schema, opts, outcome};
use dinoflow_engine::StageStatus;
use dinoflow_storage::Dataset;
use futures::TryStreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sum_of_squares_and_of_two_inputs() {
    let env = Env::new();
    let dag = env.dag(
        "\
name: data
stages:
  nums:
    kind: numbers
    with: {count: 24, start: 1, shard_rows: 5}
  squares:
    kind: square
    inputs: {rows: nums}
  sum_sq:
    kind: sum
    inputs: {rows: squares}
  both:
    kind: sum
    inputs: {rows: squares, more: nums.rows}
",
    );
    let plan = env.engine.plan(&dag).await.unwrap();
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert!(report.stages.iter().all(|s| s.status == StageStatus::Ok));

    // 1 + … + 24 = 24·25/2 = 300; 1² + … + 24² = 24·25·49/6 = 4900.
    assert_eq!(env.values(&fp(&plan, "sum_sq"), "rows").await, [4900]);
    assert_eq!(env.values(&fp(&plan, "both"), "rows").await, [5200]);
    assert_eq!(
        env.values(&fp(&plan, "squares"), "rows").await,
        [
            1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121, 144, 169, 196, 225, 256, 289, 324, 361, 400,
            441, 484, 529, 576
        ]
    );

    // 24 rows in 5-row shards: 5 + 5 + 5 + 5 + 4, read back shard by shard.
    let m = env.manifest(&fp(&plan, "nums")).await;
    let ds = Dataset::open(
        env.store().clone(),
        &fp(&plan, "nums"),
        m.outputs["rows"].clone(),
    )
    .unwrap();
    assert_eq!(ds.rows(), 24);
    assert_eq!(ds.shard_count(), 5);
    assert_eq!(ds.schema(), numbers_schema());
    let mut firsts = Vec::new();
    for i in 0..ds.shard_count() {
        let batches = ds.read_shard(i, 100).await.unwrap();
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(n, if i < 4 { 5 } else { 4 }, "shard {i}");
        let first = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap()
            .value(0);
        firsts.push(first);
    }
    assert_eq!(firsts, [1, 6, 11, 16, 21]);
    // Streaming in 3-row batches gives the same rows in order.
    let batches: Vec<_> = ds.batches(3).try_collect().await.unwrap();
    assert!(batches.iter().all(|b| b.num_rows() <= 3));
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 24);

    assert_eq!(outcome(&report, "both").rows["rows"], 1);
    assert_eq!(outcome(&report, "squares").rows["rows"], 24);
}

#[tokio::test]
async fn empty_and_negative_ranges() {
    let env = Env::new();
    let dag = env.dag(
        "\
name: edge
stages:
  none:
    kind: numbers
    with: {count: 0}
  none_sq:
    kind: square
    inputs: {rows: none}
  none_sum:
    kind: sum
    inputs: {rows: none_sq}
  neg:
    kind: numbers
    with: {count: 4, start: -2}
  neg_sq:
    kind: square
    inputs: {rows: neg}
  neg_sum:
    kind: sum
    inputs: {rows: neg, more: neg_sq}
",
    );
    let plan = env.engine.plan(&dag).await.unwrap();
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert!(env.values(&fp(&plan, "none"), "rows").await.is_empty());
    assert!(env.values(&fp(&plan, "none_sq"), "rows").await.is_empty());
    assert_eq!(env.values(&fp(&plan, "none_sum"), "rows").await, [0]);
    assert_eq!(env.values(&fp(&plan, "neg"), "rows").await, [-2, -1, 0, 1]);
    assert_eq!(env.values(&fp(&plan, "neg_sq"), "rows").await, [4, 1, 0, 1]);
    // (-2 - 1 + 0 + 1) + (4 + 1 + 0 + 1) = -2 + 6.
    assert_eq!(env.values(&fp(&plan, "neg_sum"), "rows").await, [4]);
    assert_eq!(outcome(&report, "none").rows["rows"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_inputs_share_one_port_in_label_order() {
    let env = Env::new();
    let workflow = |first: &str, second: &str| {
        format!(
            "\
name: gather
stages:
  small:
    kind: numbers
    with: {{count: 3, start: 1}}
  large:
    kind: numbers
    with: {{count: 2, start: 10}}
  g:
    kind: gather
    inputs: {{rows:second: {second}, rows:first: {first}}}
"
        )
    };
    let dag = env.dag(&workflow("small", "large.rows"));
    let plan = env.engine.plan(&dag).await.unwrap();
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    // Label order (first, second), not the order written: 1 + 2 + 3 = 6, 10 + 11 = 21.
    assert_eq!(env.values(&fp(&plan, "g"), "rows").await, [6, 21]);

    // The labels are part of the fingerprint: swapping the inputs runs the stage again.
    let swapped = env.dag(&workflow("large", "small"));
    let plan_swapped = env.engine.plan(&swapped).await.unwrap();
    assert_ne!(fp(&plan, "g"), fp(&plan_swapped, "g"));
    let report = env.engine.run(&swapped, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(env.values(&fp(&plan_swapped, "g"), "rows").await, [21, 6]);
}
