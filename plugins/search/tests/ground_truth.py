"""Ground truth for dinoflow-search's tests, computed without the code under test.

usage: ground_truth.py OUT_DIR

Writes .npy fixtures (float32 vectors, int64 ids) and facts.json into OUT_DIR:
- knn_*: random queries/database; exact top-k by inner product and by squared L2 with numpy in
  float64; the self-excluded top-k of the database against itself.
- ivf_*: a 20,000 x 64 Gaussian mixture, L2-normalised (database), and 500 held-out queries from the same
  mixture, with their exact top-10 by inner product (numpy, float64).
- kmeans_*: a 10,000 x 32 Gaussian mixture; faiss.Kmeans inertia (k=50, 20 iterations) of all
  points against faiss's final centroids, for three seeds.
"""
import json
import os
import sys

import numpy as np


def exact_topk(q, x, k, metric="ip", exclude_self=False):
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == "ip":
        s = q64 @ x64.T
    else:
        s = -(
            (q64 * q64).sum(1)[:, None]
            - 2 * q64 @ x64.T
            + (x64 * x64).sum(1)[None, :]
        )
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    # Stable sort on -s: equal scores keep the lower id first.
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(s, order, 1)


def mixture(rng, n, d, centres, spread):
    c = rng.standard_normal((centres, d))
    labels = rng.integers(0, centres, n)
    x = c[labels] + spread * rng.standard_normal((n, d))
    return x.astype(np.float32), labels.astype(np.int64)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20240611)
    facts = {}
    save = lambda name, a: np.save(os.path.join(out, name + ".npy"), np.ascontiguousarray(a))

    # Exact kNN.
    q = rng.standard_normal((300, 48)).astype(np.float32)
    x = rng.standard_normal((2500, 48)).astype(np.float32)
    save("knn_queries", q)
    save("knn_database", x)
    ids, scores = exact_topk(q, x, 20, "ip")
    save("knn_ip_ids", ids)
    save("knn_ip_scores", scores.astype(np.float32))
    ids, scores = exact_topk(q, x, 20, "l2")
    save("knn_l2_ids", ids)
    save("knn_l2_sqdist", (-scores).astype(np.float32))
    ids, _ = exact_topk(x, x, 10, "ip", exclude_self=True)
    save("knn_self_ids", ids)

    # IVF: clustered database, held-out queries.
    data, _ = mixture(rng, 20_500, 64, 200, 1.2)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    save("ivf_database", data[:20_000])
    save("ivf_queries", data[20_000:])
    ids, _ = exact_topk(data[20_000:], data[:20_000], 10, "ip")
    save("ivf_gt", ids)

    # k-means against faiss.
    import faiss

    faiss.omp_set_num_threads(1)
    pts, labels = mixture(rng, 10_000, 32, 60, 0.7)
    save("kmeans_points", pts)
    inertias = {}
    for seed in (1, 2, 3):
        km = faiss.Kmeans(32, 50, niter=20, seed=seed, max_points_per_centroid=256)
        km.train(pts)
        d, _ = km.index.search(pts, 1)
        inertias[str(seed)] = float(d.astype(np.float64).sum())
    facts["faiss_kmeans_inertia"] = inertias
    with open(os.path.join(out, "facts.json"), "w") as f:
        json.dump(facts, f)


if __name__ == "__main__":
    main()
