"""Reads an images dataset written by dinoflow with pyarrow, as a user would, and prints a summary.

Usage: read_images.py STORE FINGERPRINT
"""
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

store, fingerprint = Path(sys.argv[1]), sys.argv[2]
obj = store / "objects" / fingerprint
manifest = json.loads((obj / "manifest.json").read_text())
files = [obj / f["path"] for f in manifest["outputs"]["images"]["files"]]
table = pq.ParquetDataset([str(f) for f in files]).read()
first = table.slice(0, 1).to_pylist()[0]
pixels = np.frombuffer(first["pixels"], dtype=np.uint8).reshape(
    first["pixel_height"], first["pixel_width"], first["channels"]
)
print(json.dumps({
    "rows": table.num_rows,
    "schema": [[f.name, str(f.type)] for f in table.schema],
    "first": {"pixels": pixels.reshape(-1).tolist(), "shape": list(pixels.shape),
              "label": first["label"], "id": first["id"]},
}))
