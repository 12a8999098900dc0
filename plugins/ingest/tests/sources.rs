//! Ingest from IDX (real Fashion-MNIST) and Parquet sources; determinism and limits.

mod common;

use std::io::Read;
use std::sync::Arc;

use arrow_array::{BinaryArray, Int32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use common::{run_ingest, try_ingest};

const TRAIN_IMAGES: &str = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
const TRAIN_LABELS: &str = "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz";
const TEST_IMAGES: &str = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";

fn gunzip(path: &str) -> Vec<u8> {
    let gz = std::fs::read(path).unwrap_or_else(|e| {
        panic!("{path}: {e} (install dataset-fashion-mnist: scripts/setup.sh)")
    });
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn fashion_mnist_train_has_60000_labelled_images_with_exact_pixels() {
    let store = tempfile::tempdir().unwrap();
    let yaml = format!(
        "      source:\n        idx:\n          images: {TRAIN_IMAGES}\n          labels: {TRAIN_LABELS}\n      shard_rows: 25000\n"
    );
    let out = run_ingest(store.path(), &yaml).await;
    assert_eq!(out.images.len(), 60_000);
    assert!(out.errors.is_empty());
    // Fashion-MNIST is balanced: 6000 images of each of the 10 classes.
    let mut counts = [0usize; 10];
    for r in &out.images {
        counts[r.label.unwrap() as usize] += 1;
    }
    assert_eq!(counts, [6000; 10]);
    // Pixels and ids match the raw IDX bytes (16-byte header, 784 bytes an image).
    let raw = gunzip(TRAIN_IMAGES);
    let labels = gunzip(TRAIN_LABELS);
    for i in [0usize, 1, 31_337, 59_999] {
        let r = &out.images[i];
        let px = &raw[16 + i * 784..16 + (i + 1) * 784];
        assert_eq!(r.pixels, px);
        assert_eq!(r.id, blake3::hash(px).to_hex().to_string());
        assert_eq!(r.label, Some(i64::from(labels[8 + i])));
        assert!(r.source.ends_with(&format!("#{i}")));
        assert_eq!(
            (r.width, r.height, r.channels, r.format.as_str()),
            (28, 28, 1, "idx")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idx_resize_limit_and_same_digest_on_rerun_in_another_store() {
    let yaml = format!(
        "      source:\n        idx:\n          images: {TEST_IMAGES}\n      max_side: 14\n      limit: 500\n      shard_rows: 128\n"
    );
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = run_ingest(a.path(), &yaml).await;
    let second = run_ingest(b.path(), &yaml).await;
    assert_eq!(first.images.len(), 500);
    assert!(first.images.iter().all(|r| r.label.is_none()));
    assert!(
        first
            .images
            .iter()
            .all(|r| (r.pixel_width, r.pixel_height, r.pixels.len()) == (14, 14, 196))
    );
    assert_eq!(first.digest, second.digest, "ingest must be deterministic");
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_source_with_labels_and_a_corrupt_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut encoded = Vec::new();
    for i in 0..5u8 {
        let img = image::RgbImage::from_pixel(20 + u32::from(i), 10, image::Rgb([i * 40, 0, 0]));
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        encoded.push(buf.into_inner());
    }
    encoded.push(b"garbage".to_vec());
    let schema = Arc::new(Schema::new(vec![
        Field::new("img", DataType::Binary, false),
        Field::new("cls", DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(BinaryArray::from_iter_values(encoded.iter())),
            Arc::new(Int32Array::from(vec![3, 1, 4, 1, 5, 9])),
        ],
    )
    .unwrap();
    let file = dir.path().join("images.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&file).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let store = tempfile::tempdir().unwrap();
    let yaml = format!(
        "      source:\n        parquet:\n          path: {}\n          column: img\n          label_column: cls\n",
        file.display()
    );
    let out = run_ingest(store.path(), &yaml).await;
    let widths: Vec<u32> = out.images.iter().map(|r| r.width).collect();
    assert_eq!(widths, vec![20, 21, 22, 23, 24]);
    let labels: Vec<i64> = out.images.iter().map(|r| r.label.unwrap()).collect();
    assert_eq!(labels, vec![3, 1, 4, 1, 5]);
    assert_eq!(out.errors.len(), 1);
    assert!(
        out.errors[0].0.ends_with("images.parquet#5"),
        "{:?}",
        out.errors
    );
    assert!(out.errors[0].1.contains("unrecognised"), "{:?}", out.errors);
}

/// Writes a Parquet file of PNGs `width`s wide (a `None` width is a corrupt row) in one row group
/// per `group` rows.
fn write_pngs(path: &std::path::Path, widths: &[Option<u32>], group: usize) {
    let encoded: Vec<Vec<u8>> = widths
        .iter()
        .map(|w| match w {
            Some(w) => {
                let img = image::GrayImage::from_pixel(*w, 8, image::Luma([*w as u8]));
                let mut buf = std::io::Cursor::new(Vec::new());
                img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
                buf.into_inner()
            }
            None => b"not an image".to_vec(),
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "img",
        DataType::Binary,
        false,
    )]));
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_size(group)
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        Arc::clone(&schema),
        Some(props),
    )
    .unwrap();
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(BinaryArray::from_iter_values(encoded.iter()))],
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parquet_folder_splits_into_tasks_that_read_only_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<Option<u32>> = vec![
        Some(10),
        Some(11),
        Some(12),
        None,
        Some(14),
        Some(15),
        Some(16),
    ];
    let b: Vec<Option<u32>> = vec![Some(20), Some(21), Some(22), Some(23), Some(24), Some(25)];
    write_pngs(&dir.path().join("a.parquet"), &a, 3);
    write_pngs(&dir.path().join("b.parquet"), &b, 4);
    let store = tempfile::tempdir().unwrap();
    // 11 of the 13 rows, 4 a task: tasks of rows 0-3, 4-7 (crossing into b.parquet) and 8-10.
    let yaml = format!(
        "      source:\n        parquet:\n          path: {}\n          column: img\n      limit: 11\n      shard_rows: 4\n",
        dir.path().display()
    );
    let out = run_ingest(store.path(), &yaml).await;
    let expected: Vec<u32> = a.iter().chain(&b).take(11).flatten().copied().collect();
    let widths: Vec<u32> = out.images.iter().map(|r| r.width).collect();
    assert_eq!(widths, expected);
    let sources: Vec<String> = out
        .images
        .iter()
        .map(|r| r.source.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        sources[3], "a.parquet#4",
        "row numbers run on past the corrupt row"
    );
    assert_eq!(sources[6], "b.parquet#0");
    assert_eq!(sources.last().unwrap(), "b.parquet#3");
    assert_eq!(out.errors.len(), 1);
    assert!(out.errors[0].0.ends_with("a.parquet#3"), "{:?}", out.errors);
    let fp = &out.report.stages[0].fingerprint;
    let tasks = std::fs::read_dir(store.path().join("objects").join(fp).join("tasks"))
        .unwrap()
        .count();
    assert_eq!(tasks, 3, "one task folder per 4 source rows");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_parquet_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.parquet");
    std::fs::write(&file, b"PAR1 this is not really a parquet file PAR1").unwrap();
    let yaml = format!(
        "      source:\n        parquet:\n          path: {}\n          column: img\n",
        file.display()
    );
    let store = tempfile::tempdir().unwrap();
    let (_, report) = try_ingest(store.path(), &yaml).await;
    assert!(!report.succeeded());
    let error = report.stages[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("broken.parquet") && error.contains("not a readable Parquet file"),
        "{error}"
    );
}
