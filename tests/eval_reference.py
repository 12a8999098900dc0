"""Brute-force numpy reference of the eval stage's raw-pixel k-NN (dinov2 eval/knn.py).

Usage: eval_reference.py STORE TRAIN_IMAGES_FP TEST_IMAGES_FP TEMPERATURE K [K ...]

Reads the two images datasets with pyarrow, takes each image's stored pixels as values in [0, 1]
(channels, rows, columns), L2-normalises them, and classifies every test image by the softmax
(similarity / T) weighted votes of its k most similar train images (float64; neighbours ordered
by similarity, then by train row). Labels become indices into their sorted distinct values.

Prints JSON: for each k the number of correct test rows (`correct`) and the number of rows whose
outcome a float32 computation could change (`fragile`: the two best vote totals within 1e-5, or
the k-th and (k+1)-th similarities within 1e-5 with a vote margin the swap could undo), plus the row counts and the number of classes.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def read(store: Path, fp: str):
    obj = store / "objects" / fp
    manifest = json.loads((obj / "manifest.json").read_text())
    files = [str(obj / f["path"]) for f in manifest["outputs"]["images"]["files"]]
    return pq.ParquetDataset(files).read()


def pixels(table):
    rows = []
    for p, c, h, w in zip(
        table.column("pixels").to_pylist(),
        table.column("channels").to_pylist(),
        table.column("pixel_height").to_pylist(),
        table.column("pixel_width").to_pylist(),
    ):
        a = np.frombuffer(p, dtype=np.uint8).reshape(h, w, c).transpose(2, 0, 1)
        rows.append(a.reshape(-1).astype(np.float64) / 255.0)
    x = np.stack(rows)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main() -> None:
    store, train_fp, test_fp = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    temperature = float(sys.argv[4])
    ks = [int(k) for k in sys.argv[5:]]
    train, test = read(store, train_fp), read(store, test_fp)
    train_labels = np.array(train.column("label").to_pylist())
    test_labels = np.array(test.column("label").to_pylist())
    classes = np.unique(np.concatenate([train_labels, test_labels]))
    train_y = np.searchsorted(classes, train_labels)
    test_y = np.searchsorted(classes, test_labels)
    a, b = pixels(train), pixels(test)
    n = len(a)
    kmax = min(max(ks), n)
    sims = b @ a.T
    correct = {k: 0 for k in ks}
    fragile = {k: 0 for k in ks}
    for i in range(len(b)):
        order = np.lexsort((np.arange(n), -sims[i]))
        top = sims[i, order[:kmax]]
        weights = np.exp((top - top.max()) / temperature)
        weights /= weights.sum()
        for k in ks:
            kk = min(k, n)
            votes = np.zeros(len(classes))
            np.add.at(votes, train_y[order[:kk]], weights[:kk])
            if votes.argmax() == test_y[i]:
                correct[k] += 1
            best = np.sort(votes)[::-1]
            margin = best[0] - best[1] if len(best) > 1 else np.inf
            # Swapping the k-th neighbour for a nearly as similar (k+1)-th one moves at most
            # twice its weight between two classes.
            near_edge = (
                kk < n
                and sims[i, order[kk - 1]] - sims[i, order[kk]] < 1e-5
                and margin <= 2 * weights[kk - 1] + 1e-5
            )
            fragile[k] += int(margin < 1e-5 or near_edge)
    print(json.dumps({
        "correct": {str(k): v for k, v in correct.items()},
        "fragile": {str(k): v for k, v in fragile.items()},
        "train_rows": n,
        "test_rows": len(b),
        "classes": len(classes),
    }))


if __name__ == "__main__":
    main()
