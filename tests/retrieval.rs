//! The retrieval stage on real Fashion-MNIST vectors: `sample` equals a brute-force numpy search,
//! `cluster` and `hierarchical` respect their quotas, `random` matches the size it is given.

mod common;

use std::collections::BTreeMap;

use common::{fingerprint, python_json, run_failed, run_workflow, write_workflow};

const TRAIN: &str = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
const TEST: &str = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";

/// Brute force in numpy: for every seed its `k` most similar pool rows; each retrieved row is
/// credited to its most similar seed. Prints {pool id: [seed id, similarity]} and the retrieved
/// rows as {id: [retrieved_by, similarity]}.
const CHECK: &str = r#"
import json, sys
from pathlib import Path
import numpy as np, pyarrow.parquet as pq
store, seeds_fp, pool_fp, out_fp, k = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def read(fp, port):
    o = store / "objects" / fp
    m = json.loads((o / "manifest.json").read_text())
    return pq.ParquetDataset([str(o / f["path"]) for f in m["outputs"][port]["files"]]).read()
seeds, pool = read(seeds_fp, "embeddings"), read(pool_fp, "embeddings")
S = np.stack(seeds.column("embedding").to_numpy(zero_copy_only=False))
P = np.stack(pool.column("embedding").to_numpy(zero_copy_only=False))
sid, pid = seeds.column("id").to_pylist(), pool.column("id").to_pylist()
sims = S @ P.T
best = {}
for s in range(len(sid)):
    order = np.lexsort((np.arange(len(pid)), -sims[s]))[:k]
    for r in order:
        if r not in best or sims[s, r] > best[r][1]:
            best[r] = (sid[s], float(sims[s, r]))
got = read(out_fp, "retrieved")
print(json.dumps({
    "expected": {str(r): v for r, v in best.items()},
    "pool_index": {i: n for n, i in enumerate(pid)},
    "got": list(zip(got.column("id").to_pylist(), got.column("retrieved_by").to_pylist(), got.column("similarity").to_pylist())),
}))
"#;

#[test]
fn retrieval_modes_on_fashion_mnist() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: r\nstages:\n  seed_images:\n    kind: ingest\n    with: {{source: {{idx: {{images: {TRAIN}}}}}, limit: 150}}\n  pool_images:\n    kind: ingest\n    with: {{source: {{idx: {{images: {TEST}}}}}, limit: 4000}}\n  seeds:\n    kind: embed\n    inputs: {{images: seed_images}}\n  pool:\n    kind: embed\n    inputs: {{images: pool_images}}\n  sample:\n    kind: retrieval\n    inputs: {{images: pool_images, pool: pool, seeds: seeds}}\n    with: {{mode: {{sample: {{per_seed: 4}}}}}}\n  cluster:\n    kind: retrieval\n    inputs: {{images: pool_images, pool: pool, seeds: seeds}}\n    with: {{mode: {{cluster: {{clusters: 20, min_seeds: 3, per_cluster: 60, cap: 500}}}}}}\n  balanced:\n    kind: retrieval\n    inputs: {{images: pool_images, pool: pool}}\n    with: {{mode: {{hierarchical: {{levels: [40, 8], target: 400, resampling_steps: 2}}}}}}\n  uncurated:\n    kind: retrieval\n    inputs: {{images: pool_images, pool: pool, like: sample}}\n    with: {{mode: {{random: {{seed: 3}}}}}}\n  counted:\n    kind: retrieval\n    inputs: {{images: pool_images, pool: pool}}\n    with: {{mode: {{random: {{count: 250, seed: 4}}}}}}\n"
    );
    let report = run_workflow(dir.path(), &yaml);
    let store = dir.path().join("store");
    let fp = |name: &str| fingerprint(&report, name);
    let check = |stage: &str| {
        python_json(&[
            "-c",
            CHECK,
            store.to_str().unwrap(),
            &fp("seeds"),
            &fp("pool"),
            &fp(stage),
            "4",
        ])
    };

    // sample: exactly the brute-force union, each row credited to its most similar seed.
    let r = check("sample");
    let index = r["pool_index"].as_object().unwrap();
    let expected = r["expected"].as_object().unwrap();
    let got = r["got"].as_array().unwrap();
    assert_eq!(
        got.len(),
        expected.len(),
        "retrieved {} rows, numpy {}",
        got.len(),
        expected.len()
    );
    for row in got {
        let id = row[0].as_str().unwrap();
        let e = &expected[&index[id].to_string()];
        assert_eq!(
            row[1], e[0],
            "row {id}: credited to {} not {}",
            row[1], e[0]
        );
        let (a, b) = (row[2].as_f64().unwrap(), e[1].as_f64().unwrap());
        assert!(
            (a - b).abs() < 1e-4,
            "row {id}: similarity {a} vs numpy {b}"
        );
    }

    // cluster: per-cluster quota and the cap hold; labels name clusters.
    let r = check("cluster");
    let got = r["got"].as_array().unwrap();
    let mut per_cluster: BTreeMap<String, usize> = BTreeMap::new();
    for row in got {
        let label = row[1].as_str().unwrap();
        assert!(label.starts_with("cluster:"), "{label}");
        *per_cluster.entry(label.to_string()).or_default() += 1;
        let s = row[2].as_f64().unwrap();
        assert!((-1.0001..=1.0001).contains(&s), "{s}");
    }
    assert!(!got.is_empty() && got.len() <= 500, "{} rows", got.len());
    assert!(per_cluster.values().all(|&n| n <= 60), "{per_cluster:?}");

    // hierarchical: exactly the target, no repeats, spread over most level-1 clusters.
    let r = check("balanced");
    let got = r["got"].as_array().unwrap();
    assert_eq!(got.len(), 400);
    let ids: std::collections::BTreeSet<&str> =
        got.iter().map(|g| g[0].as_str().unwrap()).collect();
    let rows: std::collections::BTreeSet<usize> = got
        .iter()
        .map(|g| r["pool_index"][g[0].as_str().unwrap()].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(
        rows.len(),
        400,
        "a pool row was retrieved twice ({} distinct ids)",
        ids.len()
    );
    let clusters: std::collections::BTreeSet<&str> =
        got.iter().map(|g| g[1].as_str().unwrap()).collect();
    assert!(
        clusters.len() >= 35,
        "only {} of 40 level-1 clusters represented",
        clusters.len()
    );

    // random: as many distinct rows as the `like` input (the sample above) or `count`, labelled
    // `random`, without a similarity, spread over the whole pool rather than its start.
    let sampled = check("sample")["got"].as_array().unwrap().len();
    for (stage, size) in [("uncurated", sampled), ("counted", 250)] {
        let r = check(stage);
        let got = r["got"].as_array().unwrap();
        let rows: std::collections::BTreeSet<u64> = got
            .iter()
            .map(|g| r["pool_index"][g[0].as_str().unwrap()].as_u64().unwrap())
            .collect();
        assert_eq!(rows.len(), size, "{stage}: {} distinct rows", rows.len());
        assert!(
            got.iter().all(|g| g[1] == "random" && g[2].is_null()),
            "{stage}"
        );
        let late = rows.iter().filter(|&&row| row >= 2000).count();
        assert!(
            late * 4 >= size && late * 4 <= 3 * size,
            "{stage}: {late} of {size} rows from the pool's second half"
        );
    }
}

#[test]
fn random_retrieval_without_a_size_names_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: r\nstages:\n  pool_images:\n    kind: ingest\n    with: {{source: {{idx: {{images: {TEST}}}}}, limit: 100}}\n  pool:\n    kind: embed\n    inputs: {{images: pool_images}}\n  uncurated:\n    kind: retrieval\n    inputs: {{images: pool_images, pool: pool}}\n    with: {{mode: {{random: {{}}}}}}\n"
    );
    let wf = write_workflow(dir.path(), "wf.yaml", &yaml);
    let output = run_failed(&wf, &dir.path().join("store"));
    assert!(
        output.contains("uncurated") && output.contains("`count` or the `like` input"),
        "{output}"
    );
}
