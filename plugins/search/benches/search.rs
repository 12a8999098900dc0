//! dinoflow-search on the workloads of `bench/search_faiss.py` (see its docstring), on the same
//! vectors and thread count as faiss. Run by `make bench`:
//!
//! ```text
//! .venv/bin/python bench/search_faiss.py gen DIR
//! cargo bench -p dinoflow-search --bench search -- DIR THREADS   # writes DIR/dinoflow.json
//! ```
//!
//! `DINOFLOW_BENCH_ONLY=knn,kmeans,kmeans_random,ivf` runs a subset (default: all but
//! `kmeans_random`, the k-means with faiss's random initialisation).

use std::path::PathBuf;
use std::time::Instant;

use dinoflow_search::tch::{self, Kind, Tensor};
use dinoflow_search::{
    IvfIndex, IvfOptions, KMeansConfig, KMeansInit, KnnOptions, Metric, kmeans, knn,
};

const N_KNN: i64 = 100_000;
const N_KMEANS: i64 = 200_000;
const N_QUERIES: i64 = 10_000;
const KNN_K: usize = 64;
const KM_K: usize = 1024;
const KM_ITERS: usize = 20;
const KM_SEED: u64 = 1234;
const MPPC: usize = 256;
const NLIST: usize = 1024;
const IVF_ITERS: usize = 10;
const NPROBE: usize = 16;
const IVF_K: usize = 10;

fn seconds<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed().as_secs_f64(), out)
}

fn kmeans_run(x: &Tensor, init: KMeansInit) -> (f64, f64, String) {
    let name = format!("{init:?}");
    let cfg = KMeansConfig {
        k: KM_K,
        iterations: KM_ITERS,
        seed: KM_SEED,
        init,
        max_points_per_centroid: Some(MPPC),
        ..KMeansConfig::default()
    };
    let (s, km) = seconds(|| kmeans(x, &cfg).expect("k-means"));
    (s, km.final_inertia, name)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!(
            "usage: cargo bench -p dinoflow-search --bench search -- DIR THREADS (see bench/search_faiss.py)"
        );
        return;
    };
    let threads: i32 = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(1);
    tch::set_num_threads(threads);
    let only = std::env::var("DINOFLOW_BENCH_ONLY").unwrap_or_else(|_| "knn,kmeans,ivf".into());
    let runs = |name: &str| only.split(',').any(|s| s == name);

    let x = Tensor::read_npy(dir.join("vectors.npy"))
        .expect("vectors.npy (run search_faiss.py gen first)");
    assert_eq!(x.kind(), Kind::Float);
    let mut res = Vec::new();
    res.push(format!("\"threads\": {threads}"));

    if runs("knn") {
        let db = x.narrow(0, 0, N_KNN);
        let (s, r) = seconds(|| knn(&db, &db, &KnnOptions::with_k(KNN_K)).expect("knn"));
        assert_eq!(r.indices.size(), vec![N_KNN, KNN_K as i64]);
        println!("dinoflow exact kNN: {s:.2} s");
        res.push(format!("\"knn\": {{\"seconds\": {s}}}"));
    }
    for (key, init) in [
        ("kmeans", KMeansInit::KMeansPlusPlus),
        ("kmeans_random", KMeansInit::Random),
    ] {
        if runs(key) {
            let (s, inertia, name) = kmeans_run(&x.narrow(0, 0, N_KMEANS), init);
            println!("dinoflow k-means ({name}): {s:.2} s, inertia {inertia:.2}");
            res.push(format!(
                "\"{key}\": {{\"seconds\": {s}, \"inertia\": {inertia}, \"init\": \"{name}\"}}"
            ));
        }
    }
    if runs("ivf") {
        let db = x.narrow(0, 0, N_KNN);
        let options = IvfOptions {
            nlist: NLIST,
            kmeans_iterations: IVF_ITERS,
            seed: KM_SEED,
            metric: Metric::InnerProduct,
            ..IvfOptions::default()
        };
        let (build, index) = seconds(|| IvfIndex::build(&db, &options).expect("IVF build"));
        let queries = x.narrow(0, N_KMEANS, N_QUERIES);
        let mut best = f64::INFINITY;
        let mut ids = Tensor::new();
        for _ in 0..3 {
            let (s, r) = seconds(|| index.search(&queries, IVF_K, NPROBE).expect("IVF search"));
            best = best.min(s);
            ids = r.indices;
        }
        let gt = Tensor::read_npy(dir.join("ivf_gt.npy")).expect("ivf_gt.npy");
        // recall@10: for each query, how many of the true 10 appear in ours.
        let hits = ids
            .unsqueeze(2)
            .eq_tensor(&gt.unsqueeze(1))
            .sum(Kind::Int64)
            .int64_value(&[]);
        let recall = hits as f64 / (N_QUERIES as f64 * IVF_K as f64);
        println!("dinoflow IVF: build {build:.2} s, search {best:.3} s, recall@10 {recall:.3}");
        res.push(format!(
            "\"ivf\": {{\"build_seconds\": {build}, \"search_seconds\": {best}, \"nprobe\": {NPROBE}, \"recall10\": {recall}}}"
        ));
    }
    std::fs::write(
        dir.join("dinoflow.json"),
        format!("{{{}}}\n", res.join(", ")),
    )
    .expect("write dinoflow.json");
}
