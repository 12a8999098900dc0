//! Shared by the test binaries: fixtures written by `ground_truth.py` (numpy / faiss in the
//! project venv), computed independently of the code under test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dinoflow_search::tch::{Kind, Tensor};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `ground_truth.py` once per test process and returns the fixture folder.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let python = repo_root().join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run `make setup`",
            python.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ground_truth.py");
        let out = std::process::Command::new(python)
            .arg(script)
            .arg(dir.path())
            .output()
            .expect("run ground_truth.py");
        assert!(
            out.status.success(),
            "ground_truth.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

/// A fixture array.
pub fn load(name: &str) -> Tensor {
    Tensor::read_npy(fixtures().join(format!("{name}.npy"))).expect(name)
}

/// The JSON facts.
pub fn facts() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("facts.json")).expect("facts"))
        .expect("facts.json")
}

/// Rows of an i64 (n, k) tensor.
pub fn rows_i64(t: &Tensor) -> Vec<Vec<i64>> {
    let k = t.size()[1] as usize;
    let flat = Vec::<i64>::try_from(t.to_kind(Kind::Int64).reshape([-1])).unwrap();
    flat.chunks(k).map(|c| c.to_vec()).collect()
}

/// Rows of an f32 (n, k) tensor.
pub fn rows_f32(t: &Tensor) -> Vec<Vec<f32>> {
    let k = t.size()[1] as usize;
    let flat = Vec::<f32>::try_from(t.to_kind(Kind::Float).reshape([-1])).unwrap();
    flat.chunks(k).map(|c| c.to_vec()).collect()
}

/// Squared L2 distances between all rows of `a` (n × d) and `b` (m × d), by broadcasting
/// (the brute-force definition, independent of the crate's GEMM expansion).
pub fn pairwise_sq(a: &Tensor, b: &Tensor) -> Tensor {
    (a.unsqueeze(1) - b.unsqueeze(0)).square().sum_dim_intlist(
        [2i64].as_slice(),
        false,
        Kind::Float,
    )
}
