//! A stage that maps over the shards of its input (`shards_by`) runs as one task per shard: each
//! task writes under `tasks/NNNNN/`, the outputs are concatenated in shard order, counts are
//! summed, and a run stopped part-way keeps the tasks it finished.

mod common;

use common::{Env, fp, opts};
use dinoflow_engine::StageStatus;

fn workflow(stop_file: &std::path::Path) -> String {
    format!(
        "\
name: tasks
stages:
  nums:
    kind: numbers
    with: {{count: 20, start: 1, shard_rows: 6}}
  squares:
    kind: shard-square
    inputs: {{rows: nums}}
    with: {{stop_file: {}, stop_at: 14}}
",
        stop_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_stage_runs_a_task_per_shard_and_resumes_from_the_tasks_it_finished() {
    let env = Env::new();
    let stop = env.root().join("stop");
    std::fs::write(&stop, "").unwrap();
    let dag = env.dag(&workflow(&stop));
    let plan = env.engine.plan(&dag).await.unwrap();

    // 20 rows in shards of 6, 6, 6, 2: the task holding 14 (the third) fails.
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    let squares = report.stages.iter().find(|s| s.name == "squares").unwrap();
    assert_eq!(squares.status, StageStatus::Failed);
    assert!(
        squares.error.as_deref().unwrap().contains("stopped at 14"),
        "{squares:?}"
    );
    assert_eq!(env.runs.count("squares"), 3);

    // Without the stop, only the last two tasks run; the first two are kept.
    std::fs::remove_file(&stop).unwrap();
    let report = env.engine.run(&dag, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(env.runs.count("squares"), 5);

    let squares_fp = fp(&plan, "squares");
    let expected: Vec<i64> = (1..=20).map(|v| v * v).collect();
    assert_eq!(env.values(&squares_fp, "rows").await, expected);
    let manifest = env.manifest(&squares_fp).await;
    let paths: Vec<&str> = manifest.outputs["rows"]
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "tasks/00000/rows/part-00000.parquet",
            "tasks/00001/rows/part-00000.parquet",
            "tasks/00002/rows/part-00000.parquet",
            "tasks/00003/rows/part-00000.parquet",
        ]
    );
    assert_eq!(manifest.outputs["rows"].rows, Some(20));
    // The task manifests are gone once the stage is committed.
    let tasks = env.object_path(&squares_fp).join("tasks");
    let leftovers: Vec<String> = std::fs::read_dir(&tasks)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The run database holds the rows of the four tasks summed, those kept from the first run
    // included.
    let computed = env.engine.db().computed(&squares_fp).unwrap().unwrap();
    assert_eq!(computed.metrics["rows"], 20, "{:?}", computed.metrics);
}
