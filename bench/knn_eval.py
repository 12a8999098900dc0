"""Weighted k-NN classification accuracy of stored embeddings (DINO's protocol: cosine similarity,
the k = 20 nearest train vectors vote with weight exp(similarity / 0.07)).

Usage: knn_eval.py STORE TRAIN_IMAGES_FP TRAIN_VECTORS_FP TEST_IMAGES_FP TEST_VECTORS_FP [K]

Labels come from the images datasets (`label`), vectors from the embeddings datasets; rows are
matched by position (embed keeps the input order). Prints JSON: accuracy, k, rows.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def read(store: Path, fp: str, port: str):
    obj = store / "objects" / fp
    manifest = json.loads((obj / "manifest.json").read_text())
    return pq.ParquetDataset([str(obj / f["path"]) for f in manifest["outputs"][port]["files"]]).read()


def vectors(store, fp):
    v = np.stack(read(store, fp, "embeddings").column("embedding").to_numpy(zero_copy_only=False))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def main() -> None:
    store = Path(sys.argv[1])
    train_labels = np.array(read(store, sys.argv[2], "images").column("label").to_pylist())
    train = vectors(store, sys.argv[3])
    test_labels = np.array(read(store, sys.argv[4], "images").column("label").to_pylist())
    test = vectors(store, sys.argv[5])
    k = int(sys.argv[6]) if len(sys.argv) > 6 else 20
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for start in range(0, len(test), 1000):
        sims = test[start:start + 1000] @ train.T
        idx = np.argpartition(-sims, k, axis=1)[:, :k]
        top = np.take_along_axis(sims, idx, axis=1)
        votes = np.zeros((len(idx), classes))
        np.add.at(votes, (np.arange(len(idx))[:, None], train_labels[idx]), np.exp(top / 0.07))
        correct += int((votes.argmax(1) == test_labels[start:start + 1000]).sum())
    print(json.dumps({"accuracy": correct / len(test), "k": k, "train": len(train), "test": len(test)}))


if __name__ == "__main__":
    main()
