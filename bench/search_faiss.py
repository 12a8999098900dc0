"""Vector search: dinoflow-search against faiss-cpu on the same vectors and the same threads.

usage:
  search_faiss.py gen DIR              write the vectors (and IVF ground truth) into DIR
  search_faiss.py faiss DIR THREADS    run faiss, write DIR/faiss.json
  search_faiss.py report DIR [OUT]     print the table from DIR/{dinoflow,faiss}.json, copy to OUT

The Rust side (`cargo bench -p dinoflow-search --bench search -- DIR THREADS`) reads the same
DIR/vectors.npy and writes DIR/dinoflow.json. Workloads (one run each unless noted):
- exact kNN, inner product, k = 64, database = queries = rows [0, 100k) (self-matches kept);
- k-means, k = 1024, 20 iterations, rows [0, 200k), max_points_per_centroid = 256 on both sides
  (200k < 1024 x 256, so neither subsamples), seed 1234; timed: training + assigning every point;
  inertia: sum of squared distances of all 200k points to the final centroids;
- IVF, nlist = 1024, database rows [0, 100k), quantiser k-means with faiss's IVF default of
  10 iterations; search 10k held-out queries (rows [200k, 210k)), k = 10, nprobe = 16, best of 3;
  recall@10 against exact search (faiss IndexFlatIP, written by `gen`).
Vectors: a 100-component Gaussian mixture in 256-d (centres N(0, 1), spread 1.0), L2-normalised,
numpy seed 0.
"""
import json
import os
import sys
import time

import numpy as np

N_KNN, N_KMEANS, N_QUERIES, D = 100_000, 200_000, 10_000, 256
KNN_K, KM_K, KM_ITERS, KM_SEED, MPPC = 64, 1024, 20, 1234, 256
NLIST, IVF_ITERS, NPROBE, IVF_K = 1024, 10, 16, 10


def gen(out):
    import faiss

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    n = N_KMEANS + N_QUERIES
    centres = rng.standard_normal((100, D)).astype(np.float32)
    labels = rng.integers(0, 100, n)
    x = centres[labels] + rng.standard_normal((n, D), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(os.path.join(out, "vectors.npy"), x)
    flat = faiss.IndexFlatIP(D)
    flat.add(x[:N_KNN])
    _, gt = flat.search(x[N_KMEANS:], IVF_K)
    np.save(os.path.join(out, "ivf_gt.npy"), gt.astype(np.int64))


def recall(ids, gt):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, gt)]))


def run_faiss(out, threads):
    import faiss

    faiss.omp_set_num_threads(threads)
    x = np.load(os.path.join(out, "vectors.npy"))
    gt = np.load(os.path.join(out, "ivf_gt.npy"))
    res = {"threads": threads, "faiss_version": faiss.__version__}
    only = os.environ.get("DINOFLOW_BENCH_ONLY", "knn,kmeans,ivf").split(",")

    db = x[:N_KNN]
    if "knn" in only:
        t = time.perf_counter()
        index = faiss.IndexFlatIP(D)
        index.add(db)
        index.search(db, KNN_K)
        res["knn"] = {"seconds": time.perf_counter() - t}
        print(f"faiss exact kNN: {res['knn']['seconds']:.2f} s", flush=True)
    if "kmeans" in only:
        run_kmeans(x, res)
    if "ivf" in only:
        run_ivf(x, db, gt, res)
    with open(os.path.join(out, "faiss.json"), "w") as f:
        json.dump(res, f, indent=1)


def run_kmeans(x, res):
    import faiss

    pts = x[:N_KMEANS]
    t = time.perf_counter()
    km = faiss.Kmeans(D, KM_K, niter=KM_ITERS, seed=KM_SEED, max_points_per_centroid=MPPC)
    km.train(pts)
    dist, _ = km.index.search(pts, 1)
    res["kmeans"] = {
        "seconds": time.perf_counter() - t,
        "inertia": float(dist.astype(np.float64).sum()),
        "init": "random (faiss default)",
    }
    print(f"faiss k-means: {res['kmeans']['seconds']:.2f} s, inertia {res['kmeans']['inertia']:.2f}", flush=True)


def run_ivf(x, db, gt, res):
    import faiss

    t = time.perf_counter()
    quantizer = faiss.IndexFlatL2(D)
    ivf = faiss.IndexIVFFlat(quantizer, D, NLIST, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = IVF_ITERS
    ivf.cp.seed = KM_SEED
    ivf.train(db)
    ivf.add(db)
    build = time.perf_counter() - t
    ivf.nprobe = NPROBE
    queries = x[N_KMEANS:]
    times = []
    for _ in range(3):
        t = time.perf_counter()
        _, ids = ivf.search(queries, IVF_K)
        times.append(time.perf_counter() - t)
    res["ivf"] = {
        "build_seconds": build,
        "search_seconds": min(times),
        "nprobe": NPROBE,
        "recall10": recall(ids, gt),
    }
    print(f"faiss IVF: build {build:.2f} s, search {min(times):.3f} s, recall@10 {res['ivf']['recall10']:.3f}", flush=True)


def report(out, copy_to=None):
    d = json.load(open(os.path.join(out, "dinoflow.json")))
    f = json.load(open(os.path.join(out, "faiss.json")))
    rows = [
        (f"exact kNN k={KNN_K}, {N_KNN // 1000}k x {D} (s)", d["knn"]["seconds"], f["knn"]["seconds"], "<= 1.0x"),
        (f"k-means k={KM_K}, {KM_ITERS} it, {N_KMEANS // 1000}k x {D} (s)", d["kmeans"]["seconds"], f["kmeans"]["seconds"], "<= 1.2x"),
        ("  final inertia", d["kmeans"]["inertia"], f["kmeans"]["inertia"], "within 1%"),
        (f"IVF build nlist={NLIST} (s)", d["ivf"]["build_seconds"], f["ivf"]["build_seconds"], ""),
        (f"IVF search 10k q, nprobe={NPROBE} (s)", d["ivf"]["search_seconds"], f["ivf"]["search_seconds"], ""),
        ("  IVF recall@10", d["ivf"]["recall10"], f["ivf"]["recall10"], ""),
    ]
    if "kmeans_random" in d:
        rows.insert(3, ("k-means, random init (s)", d["kmeans_random"]["seconds"], f["kmeans"]["seconds"], ""))
        rows.insert(4, ("  final inertia", d["kmeans_random"]["inertia"], f["kmeans"]["inertia"], ""))
    print(f"  {'workload':44} {'dinoflow':>12} {'faiss':>12} {'ratio':>7}  target")
    for name, a, b, target in rows:
        print(f"  {name:44} {a:12.4g} {b:12.4g} {a / b:7.3f}  {target}")
    print(f"  threads: {d['threads']} (dinoflow) / {f['threads']} (faiss {f['faiss_version']});"
          f" k-means init: dinoflow {d['kmeans']['init']}, faiss {f['kmeans']['init']}")
    if copy_to:
        json.dump({"dinoflow": d, "faiss": f}, open(copy_to, "w"), indent=1)


if __name__ == "__main__":
    cmd, out = sys.argv[1], sys.argv[2]
    if cmd == "gen":
        gen(out)
    elif cmd == "faiss":
        run_faiss(out, int(sys.argv[3]))
    elif cmd == "report":
        report(out, sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        sys.exit(__doc__)
