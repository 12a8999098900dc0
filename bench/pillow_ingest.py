"""Peer for the ingest benchmark: Pillow decodes, orients and resizes the same files on the same
number of processes. Prints JSON: images, seconds, images_per_s.

Usage: pillow_ingest.py FOLDER MAX_SIDE PROCESSES MODE   (MODE: resize | thumbnail)
  resize:    full decode, then a bicubic resize (what dinoflow does)
  thumbnail: Pillow's fastest path, JPEG draft mode (DCT-domain downscale) then resize
"""
import json
import os
import sys
import time
from multiprocessing import Pool

from PIL import Image, ImageOps

FOLDER, MAX_SIDE, PROCS, MODE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def work(path):
    try:
        with Image.open(path) as im:
            if MODE == "thumbnail":
                im.draft("RGB", (MAX_SIDE, MAX_SIDE))
            im = ImageOps.exif_transpose(im)
            im = im.convert("L" if im.mode in ("1", "L", "LA", "I;16", "I") else "RGB")
            w, h = im.size
            s = min(1.0, MAX_SIDE / max(w, h))
            if s < 1.0:
                im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
            return len(im.tobytes())
    except Exception:
        return -1


files = sorted(
    os.path.join(FOLDER, f) for f in os.listdir(FOLDER) if not f.startswith(".")
)
start = time.perf_counter()
with Pool(PROCS) as pool:
    results = pool.map(work, files, chunksize=1)
secs = time.perf_counter() - start
ok = sum(1 for r in results if r >= 0)
print(json.dumps({"images": ok, "seconds": secs, "images_per_s": ok / secs}))
