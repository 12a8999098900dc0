"""Reads an embeddings dataset written by dinoflow with pyarrow and checks it against its images.

Usage: read_embeddings.py STORE IMAGES_FP:PORT EMBEDDINGS_FP [TIMM_MODEL WEIGHTS SIZE]

Prints JSON: rows, schema, vector dimension, min/max L2 norm, whether the ids equal the images' ids in
order, and, when a timm model name, its safetensors weights and an input size are given, the largest
difference between dinoflow's vectors for the first 8 images and timm's cls token computed here from
the same stored pixels (shorter side resized to SIZE, bicubic antialiased, centre crop, ImageNet
normalisation, L2-normalised).
"""
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def read(store: Path, fp: str, port: str):
    obj = store / "objects" / fp
    manifest = json.loads((obj / "manifest.json").read_text())
    files = [str(obj / f["path"]) for f in manifest["outputs"][port]["files"]]
    return pq.ParquetDataset(files).read()


def timm_vectors(images, name: str, weights: str, size: int, n: int) -> np.ndarray:
    import timm
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    model = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
    model.load_state_dict(load_file(weights))
    model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    for row in images.slice(0, n).to_pylist():
        h, w, c = row["pixel_height"], row["pixel_width"], row["channels"]
        x = torch.frombuffer(bytearray(row["pixels"]), dtype=torch.uint8).view(1, h, w, c)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        if c == 1:
            x = x.expand(-1, 3, -1, -1)
        nh, nw = (size, round(w * size / h)) if h <= w else (round(h * size / w), size)
        nh, nw = max(nh, size), max(nw, size)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[:, :, top:top + size, left:left + size]
        with torch.no_grad():
            v = model.forward_features((x - mean) / std)[:, 0]
        out.append(F.normalize(v, dim=1)[0].numpy())
    return np.stack(out)


def main() -> None:
    store, images_ref, emb_fp = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    images_fp, images_port = images_ref.split(":")
    images = read(store, images_fp, images_port)
    emb = read(store, emb_fp, "embeddings")
    vectors = np.stack(emb.column("embedding").to_numpy(zero_copy_only=False))
    norms = np.linalg.norm(vectors, axis=1)
    report = {
        "rows": emb.num_rows,
        "schema": [[f.name, str(f.type)] for f in emb.schema],
        "dim": int(vectors.shape[1]),
        "min_norm": float(norms.min()),
        "max_norm": float(norms.max()),
        "finite": bool(np.isfinite(vectors).all()),
        "ids_match": emb.column("id").to_pylist() == images.column("id").to_pylist(),
    }
    if len(sys.argv) >= 7:
        name, weights, size = sys.argv[4], sys.argv[5], int(sys.argv[6])
        n = min(8, emb.num_rows)
        expected = timm_vectors(images, name, weights, size, n)
        report["timm_max_diff"] = float(np.abs(expected - vectors[:n]).max())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
