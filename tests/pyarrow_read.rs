//! The output Parquet is read back by pyarrow (the project's venv): schema, row count, one image.

mod common;

use std::io::Read;

use common::{json, python_json, repo_root, run, write_workflow};

#[test]
fn pyarrow_reads_the_images_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
    let labels = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
    let wf = write_workflow(
        dir.path(),
        "wf.yaml",
        &format!(
            "name: pa\nstages:\n  t:\n    kind: ingest\n    with:\n      source:\n        idx: {{images: {images}, labels: {labels}}}\n      shard_rows: 700\n"
        ),
    );
    let report = json(&run(&[
        "--json",
        "run",
        &wf,
        "--store",
        store.to_str().unwrap(),
    ]));
    let fp = report["stages"][0]["fingerprint"].as_str().unwrap();

    let script = repo_root().join("tests/read_images.py");
    let got = python_json(&[script.to_str().unwrap(), store.to_str().unwrap(), fp]);

    assert_eq!(got["rows"], 10_000);
    let schema: Vec<(String, String)> = got["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f[0].as_str().unwrap().into(), f[1].as_str().unwrap().into()))
        .collect();
    let expected = [
        ("id", "string"),
        ("source", "string"),
        ("width", "uint32"),
        ("height", "uint32"),
        ("format", "string"),
        ("file_size", "uint64"),
        ("label", "int64"),
        ("pixels", "binary"),
        ("channels", "uint8"),
        ("pixel_width", "uint32"),
        ("pixel_height", "uint32"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(schema, expected);

    // The first image, decoded by numpy, equals the raw IDX bytes; its label the IDX label.
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&std::fs::read(images).unwrap()[..])
        .read_to_end(&mut raw)
        .unwrap();
    let mut lab = Vec::new();
    flate2::read::GzDecoder::new(&std::fs::read(labels).unwrap()[..])
        .read_to_end(&mut lab)
        .unwrap();
    let pixels: Vec<u8> = got["first"]["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(pixels, raw[16..16 + 784]);
    assert_eq!(got["first"]["shape"], serde_json::json!([28, 28, 1]));
    assert_eq!(got["first"]["label"], i64::from(lab[8]));
}
