//! The filter stage on real ingested images (Fashion-MNIST and photos): keep/drop counts match an
//! independent computation; hostile plugins commit nothing; swapping a plugin re-runs only the
//! filter and what depends on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{UInt8Type, UInt32Type, UInt64Type};
use dinoflow_engine::{Dag, Engine, PlanState, Registry, Resources, RunOptions, RunReport, Silent};
use dinoflow_storage::{CacheState, Dataset, Store};
use futures::TryStreamExt;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wasm(name: &str) -> String {
    let p = repo().join("plugins/filters/dist").join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/build-plugins.sh",
        p.display()
    );
    p.display().to_string()
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(dinoflow_ingest::Ingest);
    r.register(dinoflow_filter::FilterStage);
    r
}

fn workflow(photo_chain: &str) -> String {
    let photos = repo().join("data/photos");
    format!(
        r#"name: filter-test
stages:
  fmnist:
    kind: ingest
    with:
      source: {{idx: {{images: /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz}}}}
      limit: 3000
  photos:
    kind: ingest
    with:
      source: {{folder: {{path: {photos}}}}}
      max_side: 64
  blank_fmnist:
    kind: filter
    inputs: {{images: fmnist}}
    with:
      plugins:
        - {{wasm: {blank}, params: {{min_std: 60}}}}
  curated_photos:
    kind: filter
    inputs: {{images: photos}}
    with:
      plugins:
{photo_chain}
  small_photos:
    kind: filter
    inputs: {{images: curated_photos.kept}}
    with:
      plugins:
        - {{wasm: {min_size}, params: {{min_side: 1000}}}}
"#,
        photos = photos.display(),
        blank = wasm("blank.wasm"),
        min_size = wasm("min_size.wasm"),
    )
}

fn photo_chain(min_side: u32) -> String {
    format!(
        "        - {{wasm: {}, params: {{min_side: {min_side}}}}}\n        - {{wasm: {}, params: {{min: 0.6, max: 1.6}}}}\n        - {{wasm: {}, params: {{max_bytes: 400000}}}}\n        - {{wasm: {}, params: {{allow: [jpeg]}}}}",
        wasm("min_size.wasm"),
        wasm("aspect_ratio.wasm"),
        wasm("file_size.wasm"),
        wasm("format.wasm"),
    )
}

async fn run(store: &Path, yaml: &str) -> (Engine, Dag, RunReport) {
    let dag = Dag::parse("wf.yaml", yaml, &registry()).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::open(
        Store::create(store.to_str().unwrap()).unwrap(),
        Arc::new(Silent),
    )
    .unwrap();
    let opts = RunOptions {
        keep_going: false,
        limits: Resources {
            cpus: 2,
            gpus: 0,
            memory_gb: 8.0,
        },
        handle_ctrl_c: false,
        executor: Default::default(),
    };
    let report = engine.run(&dag, &opts).await.unwrap();
    (engine, dag, report)
}

async fn read(engine: &Engine, report: &RunReport, stage: &str, port: &str) -> Vec<RecordBatch> {
    let fp = &report
        .stages
        .iter()
        .find(|s| s.name == stage)
        .unwrap()
        .fingerprint;
    let CacheState::Hit(m) = engine.store().check_cached(fp).await.unwrap() else {
        panic!("{stage} not committed")
    };
    let ds = Dataset::open(engine.store().clone(), fp, m.outputs[port].clone()).unwrap();
    ds.batches(4096).try_collect().await.unwrap()
}

/// Population standard deviation, written independently of the plugin's logic.
fn std_dev(bytes: &[u8]) -> f64 {
    let n = bytes.len() as f64;
    let mean = bytes.iter().map(|&b| f64::from(b)).sum::<f64>() / n;
    (bytes
        .iter()
        .map(|&b| (f64::from(b) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

fn dropped_by(batches: &[RecordBatch]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for b in batches {
        let ids = b.column(0).as_string::<i32>();
        let plugins = b.column(2).as_string::<i32>();
        for i in 0..b.num_rows() {
            out.entry(plugins.value(i).to_string())
                .or_default()
                .push(ids.value(i).to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_real_images_like_an_independent_computation() {
    let store = tempfile::tempdir().unwrap();
    let (engine, _dag, report) = run(store.path(), &workflow(&photo_chain(300))).await;
    assert!(report.succeeded(), "{report:?}");

    // Fashion-MNIST through `blank` (min_std 60).
    let images = read(&engine, &report, "fmnist", "images").await;
    let mut expected_blank = Vec::new();
    for b in &images {
        let ids = b.column(0).as_string::<i32>();
        let px = b.column_by_name("pixels").unwrap().as_binary::<i32>();
        for i in 0..b.num_rows() {
            if std_dev(px.value(i)) < 60.0 {
                expected_blank.push(ids.value(i).to_string());
            }
        }
    }
    assert!(
        !expected_blank.is_empty() && expected_blank.len() < 3000,
        "{}",
        expected_blank.len()
    );
    let dropped = dropped_by(&read(&engine, &report, "blank_fmnist", "dropped").await);
    assert_eq!(dropped["blank@1.0.0"], expected_blank);
    let kept: usize = read(&engine, &report, "blank_fmnist", "kept")
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(kept, 3000 - expected_blank.len());

    // Photos through min-size → aspect-ratio → file-size → format; the first plugin that drops wins.
    let photos = read(&engine, &report, "photos", "images").await;
    let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut expected_kept = 0;
    for b in &photos {
        let ids = b.column(0).as_string::<i32>();
        let w = b
            .column_by_name("width")
            .unwrap()
            .as_primitive::<UInt32Type>();
        let h = b
            .column_by_name("height")
            .unwrap()
            .as_primitive::<UInt32Type>();
        let size = b
            .column_by_name("file_size")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let format = b.column_by_name("format").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            let (w, h) = (w.value(i), h.value(i));
            let ratio = f64::from(w) / f64::from(h);
            let who = if w.min(h) < 300 {
                Some("min-size@1.0.0")
            } else if !(0.6..=1.6).contains(&ratio) {
                Some("aspect-ratio@1.0.0")
            } else if size.value(i) > 400_000 {
                Some("file-size@1.0.0")
            } else if format.value(i) != "jpeg" {
                Some("format@1.0.0")
            } else {
                None
            };
            match who {
                Some(p) => expected
                    .entry(p)
                    .or_default()
                    .push(ids.value(i).to_string()),
                None => expected_kept += 1,
            }
        }
    }
    let got = dropped_by(&read(&engine, &report, "curated_photos", "dropped").await);
    let got: BTreeMap<&str, Vec<String>> =
        got.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    assert_eq!(got, expected);
    assert!(
        expected.len() >= 3,
        "the real photos exercise several plugins: {:?}",
        expected.keys()
    );
    let kept = read(&engine, &report, "curated_photos", "kept").await;
    assert_eq!(
        kept.iter().map(|b| b.num_rows()).sum::<usize>(),
        expected_kept
    );
    // Kept rows are whole image rows, pixels included.
    let ch = kept[0]
        .column_by_name("channels")
        .unwrap()
        .as_primitive::<UInt8Type>();
    assert!(ch.value(0) == 1 || ch.value(0) == 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn swapping_a_parameter_reruns_the_filter_and_dependents_only() {
    let store = tempfile::tempdir().unwrap();
    let (engine, _, first) = run(store.path(), &workflow(&photo_chain(300))).await;
    assert!(first.succeeded());
    let dag = Dag::parse("wf.yaml", &workflow(&photo_chain(200)), &registry()).unwrap();
    let plan = engine.plan(&dag).await.unwrap();
    let state: BTreeMap<&str, &PlanState> =
        plan.iter().map(|p| (p.name.as_str(), &p.state)).collect();
    assert!(matches!(state["fmnist"], PlanState::Cached));
    assert!(matches!(state["photos"], PlanState::Cached));
    assert!(matches!(state["blank_fmnist"], PlanState::Cached));
    let PlanState::Run { reasons } = state["curated_photos"] else {
        panic!("must re-run")
    };
    assert!(
        reasons.iter().any(|r| r.contains("min_side")),
        "{reasons:?}"
    );
    assert!(matches!(state["small_photos"], PlanState::Run { .. }));

    // Swapping the plugin's bytes (same path, other file) is seen through its digest.
    let dir = tempfile::tempdir().unwrap();
    let swapped = dir.path().join("plugin.wasm");
    std::fs::copy(wasm("min_size.wasm"), &swapped).unwrap();
    let chain = photo_chain(300).replace(&wasm("min_size.wasm"), swapped.to_str().unwrap());
    let (engine, _, _) = run(store.path(), &workflow(&chain)).await;
    std::fs::copy(wasm("file_size.wasm"), &swapped).unwrap();
    let dag = Dag::parse("wf.yaml", &workflow(&chain), &registry()).unwrap();
    let plan = engine.plan(&dag).await.unwrap();
    let curated = plan.iter().find(|p| p.name == "curated_photos").unwrap();
    let PlanState::Run { reasons } = &curated.state else {
        panic!("must re-run")
    };
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("plugin 0 (plugin.wasm) changed")),
        "{reasons:?}"
    );
    assert!(
        plan.iter()
            .filter(|p| p.name == "photos" || p.name == "fmnist")
            .all(|p| matches!(p.state, PlanState::Cached))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_plugin_fails_the_stage_and_commits_nothing() {
    let store = tempfile::tempdir().unwrap();
    let (_, _, good) = run(store.path(), &workflow(&photo_chain(300))).await;
    assert!(good.succeeded());
    let hostile = format!(
        "        - {{wasm: {}, params: {{mode: loop}}}}",
        wasm("hostile.wasm")
    );
    let yaml = workflow(&hostile).replace(
        "plugins:\n        - {wasm",
        "timeout_ms: 300\n      plugins:\n        - {wasm",
    );
    let (engine, _, report) = run(store.path(), &yaml).await;
    assert!(!report.succeeded());
    let bad = report
        .stages
        .iter()
        .find(|s| s.name == "curated_photos")
        .unwrap();
    let error = bad.error.clone().unwrap();
    assert!(
        error.contains("hostile.wasm") && error.contains("time limit"),
        "{error}"
    );
    assert!(matches!(
        engine.store().check_cached(&bad.fingerprint).await.unwrap(),
        CacheState::Miss(_)
    ));
    // Upstream outputs and the earlier good filter result are intact.
    for s in &good.stages {
        assert!(
            matches!(
                engine.store().check_cached(&s.fingerprint).await.unwrap(),
                CacheState::Hit(_)
            ),
            "{}",
            s.name
        );
    }
}
