"""Copy detection on real photos: dinoflow's dedup (documented defaults) beside PDQ and pHash.

    copydetect.py SET OUT BIN

SET is `a` or `b`: the photos of data/photos are grouped by scene (a stereo pair, the frames of one
video, one calibration pose: different shots that are not copies of each other) and the scenes
alternate between the sets, so each set holds such look-alike pictures of its own and none of the
other's; each set has its own transform parameters. Tune on one, judge on the other. The script writes every
original and 8 copies of it (JPEG, resize, brightness/contrast, crop, rotation, overlaid text,
horizontal flip, added border) into OUT/images with the truth in OUT/truth.json, runs dinoflow
(`BIN`, ingest → embed → dedup, stage defaults) on the folder and computes the same removals for
PDQ (Meta's hash through `pdqhash`, 8 dihedral variants, distance <= 31) and pHash (`imagehash`,
64 bits, distance <= 10, imagededup's default) with dinoflow's grouping rule (best first by pixels,
then file size; each kept image takes every unassigned image it matches). Scores per method:
precision (removed rows that are copies of the row kept for them), recall per transform class (a
copy ends in the same group as its original), pictures lost (originals none of whose rows is kept).
Different shots of one scene (stereo pairs, video frames) are distinct pictures here, as they are
in the photos. Prints a table; writes OUT/scores.json.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

CLASSES = ["jpeg", "resize", "brightness", "crop", "rotation", "text", "flip", "border"]

PARAMS = {
    "a": {"quality": 50, "scale": 0.6, "brightness": 1.25, "contrast": 0.85, "crop": (0.12, 0.0),
          "angle": 4.0, "text": "(c) dinoflow 2026", "text_at": (0.45, 0.8), "border": (0.10, (255, 255, 255))},
    "b": {"quality": 35, "scale": 0.45, "brightness": 0.8, "contrast": 1.2, "crop": (0.09, 0.09),
          "angle": -6.0, "text": "SAMPLE", "text_at": (0.3, 0.4), "border": (0.15, (0, 0, 0))},
}


def copies(img, p):
    """The 8 copies of `img` (RGB) with the set's parameters, by class."""
    w, h = img.size
    out = {}
    out["jpeg"] = ("jpg", img, {"quality": p["quality"]})
    out["resize"] = ("png", img.resize((max(1, int(w * p["scale"])), max(1, int(h * p["scale"]))),
                                       Image.BILINEAR), {})
    bright = ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(p["brightness"])).enhance(p["contrast"])
    out["brightness"] = ("jpg", bright, {"quality": 90})
    corner, centre = p["crop"]
    if corner:  # cut from the left and top only
        box = (int(w * corner), int(h * corner), w, h)
    else:
        box = (int(w * centre), int(h * centre), w - int(w * centre), h - int(h * centre))
    out["crop"] = ("jpg", img.crop(box), {"quality": 90})
    rot = img.rotate(p["angle"], resample=Image.BILINEAR, expand=False)
    m = int(min(w, h) * abs(np.sin(np.radians(p["angle"])))) + 1  # cut the filled corners
    out["rotation"] = ("jpg", rot.crop((m, m, w - m, h - m)), {"quality": 90})
    text = img.copy()
    draw = ImageDraw.Draw(text)
    size = max(12, h // 9)
    font = ImageFont.load_default(size=size)
    x, y = int(w * p["text_at"][0]), int(h * p["text_at"][1])
    draw.text((x, y), p["text"], fill=(255, 255, 0), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    out["text"] = ("jpg", text, {"quality": 90})
    out["flip"] = ("jpg", ImageOps.mirror(img), {"quality": 90})
    frac, colour = p["border"]
    out["border"] = ("jpg", ImageOps.expand(img, border=(int(w * frac), int(h * frac)), fill=colour),
                     {"quality": 90})
    return out


# Photos left out of both sets, and why: their truth would be ambiguous.
EXCLUDED = {
    # A render of a symmetric model from the mirrored viewpoint: within a few grey levels of the
    # mirror image of Blender_Suzanne1, so a mirror-invariant detector is right to call it a copy.
    "Blender_Suzanne2",
    # ela_original with a penguin pasted in (an error-level-analysis sample): a copy by intent.
    "ela_modified",
}


def scene(stem):
    """The scene a photo shows: different shots of one scene share it (left01/right01, aloeL/aloeR,
    rubberwhale1/2); the chessboard calibration poses share one per parity of their number."""
    m = re.fullmatch(r"(left|right)(\d+)", stem)
    if m:
        return "chess-" + ("odd" if int(m.group(2)) % 2 else "even")
    if stem in ("left", "right"):
        return "stereo"
    if stem.startswith("box"):
        return "box"
    for _ in range(2):
        stem = re.sub(r"(\d+|GT|L|R|A|B|N|_cls|_512|_modified|_original|_defocus|_motion)$", "", stem)
    return stem


def make(set_name, out):
    photos = sorted(p for p in Path("data/photos").iterdir()
                    if not p.name.startswith(".") and p.stem not in EXCLUDED)
    scenes = sorted({scene(p.stem) for p in photos})
    ours = set(scenes[0::2] if set_name == "a" else scenes[1::2])
    chosen = [p for p in photos if scene(p.stem) in ours]
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    truth = {}
    for path in chosen:
        img = Image.open(path).convert("RGB")
        img.thumbnail((640, 640))  # keeps the set small; ingest resizes to 224 anyway
        stem = path.stem
        name = f"{stem}.png"
        img.save(images / name)
        truth[name] = {"original": stem, "class": "original", "scene": scene(stem)}
        for cls, (ext, copy, kw) in copies(img, PARAMS[set_name]).items():
            cname = f"copy-{cls}-{stem}.{ext}"
            copy.save(images / cname, **kw)
            truth[cname] = {"original": stem, "class": cls, "scene": scene(stem)}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def dinoflow_removals(out, binary, dedup_extra="", embed_with="{}"):
    """{removed file: kept file} from dinoflow's dedup with the stage defaults (plus `dedup_extra`
    in dedup's `with:` and `embed_with` as embed's)."""
    workflow = out / "copydetect.yaml"
    workflow.write_text(
        "name: copydetect\nstages:\n"
        f"  pool:\n    kind: ingest\n    with: {{source: {{folder: {{path: {out / 'images'}}}}}, max_side: 224}}\n"
        f"  vectors:\n    kind: embed\n    inputs: {{images: pool}}\n    with: {embed_with}\n"
        "  dedup:\n    kind: dedup\n    inputs: {images: pool, embeddings: vectors}\n"
        f"    with: {{max_removed: 1.0{dedup_extra}}}\n")
    store = out / "store"  # one store: the runs share the ingest
    report = json.loads(subprocess.run([binary, "--json", "run", str(workflow), "--store", str(store)],
                                       check=True, capture_output=True, text=True).stdout)
    fp = {s["name"]: s["fingerprint"] for s in report["stages"]}
    seconds = {s["name"]: s["seconds"] for s in report["stages"]}

    def table(stage, port):
        obj = store / "objects" / fp[stage]
        manifest = json.loads((obj / "manifest.json").read_text())
        files = [str(obj / f["path"]) for f in manifest["outputs"][port]["files"]]
        return pq.ParquetDataset(files).read().to_pylist() if files else []

    name = {r["id"]: Path(r["source"]).name for r in table("pool", "images")}
    removed = {name[r["id"]]: name[r["representative"]] for r in table("dedup", "duplicates")}
    return removed, seconds


def hash_removals(files, order, matches):
    """The grouping rule of dinoflow's dedup applied to a match relation."""
    assigned, removed = set(), {}
    for i in order:
        if i in assigned:
            continue
        assigned.add(i)
        for j in np.flatnonzero(matches[i]):
            if j not in assigned:
                assigned.add(j)
                removed[files[j]] = files[i]
    return removed


def peer_removals(out, truth):
    import imagehash
    import pdqhash

    files = sorted(truth)
    imgs = [Image.open(out / "images" / f).convert("RGB") for f in files]
    size = [(im.size[0] * im.size[1], (out / "images" / f).stat().st_size) for im, f in zip(imgs, files)]
    order = sorted(range(len(files)), key=lambda i: (-size[i][0], -size[i][1], i))
    # PDQ: each image's hash against the 8 dihedral hashes of every other.
    plain, dihedral = [], []
    for im in imgs:
        a = np.asarray(im)
        h, _ = pdqhash.compute(a)
        plain.append(np.asarray(h, dtype=bool))
        hs, _ = pdqhash.compute_dihedral(a)
        dihedral.append(np.asarray(hs, dtype=bool))
    plain, dihedral = np.stack(plain), np.stack(dihedral)  # (n, 256), (n, 8, 256)
    dist = np.min((plain[:, None, None, :] != dihedral[None, :, :, :]).sum(-1), axis=2)
    pdq = np.minimum(dist, dist.T) <= 31
    ph = np.stack([imagehash.phash(im).hash.flatten() for im in imgs])
    phd = (ph[:, None, :] != ph[None, :, :]).sum(-1) <= 10
    for m in (pdq, phd):
        np.fill_diagonal(m, False)
    return {"PDQ (dihedral, <= 31)": hash_removals(files, order, pdq),
            "pHash (<= 10)": hash_removals(files, order, phd)}


def score(truth, removed):
    group = {f: t["original"] for f, t in truth.items()}

    def root(f):
        return removed.get(f, f)

    correct = sum(group[f] == group[r] for f, r in removed.items())
    per_class = {}
    originals = {t["original"]: f for f, t in truth.items() if t["class"] == "original"}
    for cls in CLASSES:
        members = [f for f, t in truth.items() if t["class"] == cls]
        found = sum(root(f) == root(originals[truth[f]["original"]]) for f in members)
        per_class[cls] = found / max(1, len(members))
    kept_groups = {group[f] for f in truth if f not in removed}
    lost = sorted(set(group.values()) - kept_groups)
    return {"removed": len(removed), "precision": correct / max(1, len(removed)),
            "recall": per_class, "pictures_lost": lost,
            "wrong": sorted(f"{f} -> {r}" for f, r in removed.items() if group[f] != group[r])}


def main():
    set_name, out, binary = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    truth = make(set_name, out)
    dino, seconds = dinoflow_removals(out, binary)
    local, _ = dinoflow_removals(out, binary, ", local_features: {}")
    # 31 bits of 256 is a cosine of 1 - 62/256 = 0.7578.
    pdq, _ = dinoflow_removals(out, binary, ", threshold: 0.757", "{model: pdq}")
    methods = {"dinoflow dedup (defaults)": dino, "dinoflow + local_features": local,
               "dinoflow model: pdq": pdq, **peer_removals(out, truth)}
    scores = {m: score(truth, r) for m, r in methods.items()}
    scores["dinoflow dedup (defaults)"]["seconds"] = seconds
    n = len(truth)
    print(f"set {set_name}: {n} rows ({n // 9} photos x (original + 8 copies))")
    print(f"{'method':28} {'removed':>7} {'precision':>9} " + " ".join(f"{c:>10}" for c in CLASSES) + "  lost")
    for m, s in scores.items():
        print(f"{m:28} {s['removed']:7d} {s['precision']:9.3f} "
              + " ".join(f"{s['recall'][c]:10.2f}" for c in CLASSES) + f"  {len(s['pictures_lost'])}")
    for m, s in scores.items():
        if s["wrong"]:
            print(f"{m}: removed as copies of other pictures: {', '.join(s['wrong'][:12])}"
                  + (" ..." if len(s["wrong"]) > 12 else ""))
    (out / "scores.json").write_text(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
