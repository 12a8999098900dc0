//! Runs the ingest stage through the real engine on a temporary local store.
// Each test binary uses a different part of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use dinoflow_engine::{Dag, Engine, Registry, Resources, RunOptions, RunReport, Silent};
use dinoflow_storage::{CacheState, Dataset, Store};
use futures::TryStreamExt;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One decoded row of the images output.
pub type Row = dinoflow_storage::schemas::ImageRow;

/// What one ingest run produced.
pub struct Ingested {
    pub report: RunReport,
    pub images: Vec<Row>,
    /// (source, error)
    pub errors: Vec<(String, String)>,
    pub digest: String,
}

/// Runs one ingest stage configured by `with_yaml` (the lines under `with:`) on a store in
/// `store_dir`, whatever the outcome.
pub async fn try_ingest(store_dir: &std::path::Path, with_yaml: &str) -> (Store, RunReport) {
    let yaml = format!("name: t\nstages:\n  ing:\n    kind: ingest\n    with:\n{with_yaml}");
    let mut reg = Registry::new();
    reg.register(dinoflow_ingest::Ingest);
    let dag = Dag::parse("test.yaml", &yaml, &reg).unwrap_or_else(|e| panic!("{e}"));
    let store = Store::create(store_dir.to_str().unwrap()).unwrap();
    let engine = Engine::open(store.clone(), Arc::new(Silent)).unwrap();
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
    (store, report)
}

/// Runs one ingest stage as [`try_ingest`], requires that it succeeded and reads its outputs.
pub async fn run_ingest(store_dir: &std::path::Path, with_yaml: &str) -> Ingested {
    let (store, report) = try_ingest(store_dir, with_yaml).await;
    assert!(report.succeeded(), "{report:?}");
    let fp = report.stages[0].fingerprint.clone();
    let CacheState::Hit(manifest) = store.check_cached(&fp).await.unwrap() else {
        panic!("not committed")
    };
    let read = |port: &str| {
        let ds = Dataset::open(store.clone(), &fp, manifest.outputs[port].clone()).unwrap();
        async move {
            ds.batches(4096)
                .try_collect::<Vec<RecordBatch>>()
                .await
                .unwrap()
        }
    };
    let mut images = Vec::new();
    for b in read("images").await {
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (id, source, format) = (s("id"), s("source"), s("format"));
        let u32c = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_primitive::<UInt32Type>()
                .clone()
        };
        let (w, h, pw, ph) = (
            u32c("width"),
            u32c("height"),
            u32c("pixel_width"),
            u32c("pixel_height"),
        );
        let size = b
            .column_by_name("file_size")
            .unwrap()
            .as_primitive::<UInt64Type>()
            .clone();
        let label = b
            .column_by_name("label")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let ch = b
            .column_by_name("channels")
            .unwrap()
            .as_primitive::<UInt8Type>()
            .clone();
        let px = b
            .column_by_name("pixels")
            .unwrap()
            .as_binary::<i32>()
            .clone();
        for i in 0..b.num_rows() {
            images.push(Row {
                id: id.value(i).into(),
                source: source.value(i).into(),
                width: w.value(i),
                height: h.value(i),
                format: format.value(i).into(),
                file_size: size.value(i),
                label: (!label.is_null(i)).then(|| label.value(i)),
                pixels: px.value(i).to_vec(),
                channels: ch.value(i),
                pixel_width: pw.value(i),
                pixel_height: ph.value(i),
            });
        }
    }
    let mut errors = Vec::new();
    for b in read("errors").await {
        let src = b.column(0).as_string::<i32>();
        let err = b.column(2).as_string::<i32>();
        for i in 0..b.num_rows() {
            errors.push((src.value(i).to_string(), err.value(i).to_string()));
        }
    }
    Ingested {
        report,
        images,
        errors,
        digest: manifest.outputs["images"].digest.clone(),
    }
}

/// Rows by file name (the last path segment of `source`).
pub fn by_name(rows: &[Row]) -> BTreeMap<String, Row> {
    rows.iter()
        .map(|r| (r.source.rsplit('/').next().unwrap().to_string(), r.clone()))
        .collect()
}
