#!/usr/bin/env bash
# `make bench`: dinoflow beside its peers on the same files and cores. Best of 3 runs each.
# Results: printed, and written to bench/out/*.json; docs/benchmarks.md records them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/dinoflow
PY=.venv/bin/python
CORES=$(nproc)
mkdir -p bench/out
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

stage_seconds() { # workflow, store → seconds of the slowest stage (fresh store: nothing cached)
  "$BIN" --json run "$1" --store "$2" --cpus "$CORES" |
    $PY -c 'import json,sys; r=json.load(sys.stdin); print(sum(s["seconds"] for s in r["stages"]), sum(s["rows"].get("images",0) for s in r["stages"]))'
}
best() { sort -n | head -1; }

echo "== ingest: decode + EXIF + resize to 224 (+ hash + Parquet for dinoflow), $(ls data/photos | wc -l) photos, $CORES cores"
dino=$(for i in 1 2 3; do stage_seconds bench/ingest-photos.yaml "$tmp/p$i"; done | sort -n | head -1)
read -r dsecs dimgs <<<"$dino"
pil_resize=$(for i in 1 2 3; do $PY bench/pillow_ingest.py data/photos 224 "$CORES" resize; done |
  $PY -c 'import json,sys; print(min((json.loads(l) for l in sys.stdin), key=lambda r: r["seconds"])["images_per_s"])')
pil_thumb=$(for i in 1 2 3; do $PY bench/pillow_ingest.py data/photos 224 "$CORES" thumbnail; done |
  $PY -c 'import json,sys; print(min((json.loads(l) for l in sys.stdin), key=lambda r: r["seconds"])["images_per_s"])')
$PY - "$dsecs" "$dimgs" "$pil_resize" "$pil_thumb" <<'PYEOF'
import json, sys
secs, imgs, pr, pt = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
d = imgs / secs
print(f"  dinoflow ingest          {d:8.1f} images/s  ({imgs} images in {secs:.2f}s)")
print(f"  Pillow resize (same op)  {pr:8.1f} images/s  -> dinoflow {d/pr:.2f}x")
print(f"  Pillow thumbnail (draft) {pt:8.1f} images/s  -> dinoflow {d/pt:.2f}x")
json.dump({"dinoflow_images_per_s": d, "pillow_resize_images_per_s": pr,
           "pillow_thumbnail_images_per_s": pt}, open("bench/out/ingest-photos.json", "w"), indent=1)
PYEOF

echo "== ingest: Fashion-MNIST IDX, 70,000 images"
read -r fsecs fimgs <<<"$(for i in 1 2 3; do stage_seconds bench/ingest-fmnist.yaml "$tmp/f$i"; done | sort -n | head -1)"
$PY -c "print(f'  dinoflow ingest {$fimgs/$fsecs:10.0f} images/s ($fimgs images in {$fsecs:.2f}s)')"

echo "== filters: wasm vs the same logic in native Rust, one thread (10M metadata rows; 100k 28x28 rows)"
cargo bench -q -p dinoflow-wasm --bench filters 2>/dev/null | sed 's/^/  /'

echo "== embed: ViT-S/14 at 224 px (256 images) and the tiny-28 preset at 28 px (10,000 images), $CORES threads"
echo "   dinoflow: the whole embed stage (Parquet read, resize, normalise, forward, write);"
echo "   PyTorch: timm's same ViT, forward passes only on ready tensors. Best of 2."
for i in 1 2; do
  "$BIN" --json run bench/embed-vit.yaml --store "$tmp/e$i" --cpus "$CORES" > "$tmp/e$i.json"
done
for model in small_224:64:256 tiny_28:256:10000; do
  IFS=: read -r name batch count <<<"$model"
  for i in 1 2; do $PY bench/embed_torch.py "$name" "$count" "$batch" "$CORES"; done > "$tmp/t-$name.json"
done
$PY - "$tmp" <<'PYEOF'
import json, sys
tmp = sys.argv[1]
out = {}
for name in ["small_224", "tiny_28"]:
    runs = [json.load(open(f"{tmp}/e{i}.json")) for i in (1, 2)]
    stage = lambda r: next(s for s in r["stages"] if s["name"] == name)
    d = max(stage(r)["rows"]["embeddings"] / stage(r)["seconds"] for r in runs)
    t = max(json.loads(l)["images_per_s"] for l in open(f"{tmp}/t-{name}.json"))
    print(f"  {name:10} dinoflow {d:8.1f} images/s   PyTorch {t:8.1f} images/s   -> dinoflow {d/t:.2f}x")
    out[name] = {"dinoflow_images_per_s": d, "pytorch_images_per_s": t}
json.dump(out, open("bench/out/embed-vit.json", "w"), indent=1)
PYEOF

echo "== pretrain: tiny-28 (ViT-Ti, patch 4, 28 px), batch 64, 2 global + 8 local crops, head 4096, $CORES threads"
echo "   dinoflow: the pretrain stage, 20 iterations (crops and masks made from stored images each time);"
echo "   PyTorch: the same iteration written from dinov2's code, 20 times on ready crops."
echo "   Three rounds, each dinoflow then PyTorch back to back; the median of the rounds' ratios."
for i in 1 2 3; do
  "$BIN" --json run bench/pretrain.yaml --store "$tmp/pt$i" --cpus "$CORES" > "$tmp/pt$i.json"
  run_id=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' "$tmp/pt$i.json")
  "$BIN" --json show "$run_id" --store "$tmp/pt$i" > "$tmp/pt$i-show.json"
  $PY plugins/pretrain/tests/pretrain_reference.py bench 20 64 "$CORES" > "$tmp/pt$i-torch.json"
done
$PY - "$tmp" <<'PYEOF'
import json, statistics, sys
tmp = sys.argv[1]
rounds = []
for i in (1, 2, 3):
    stage = next(s for s in json.load(open(f"{tmp}/pt{i}-show.json"))["stages"] if s["stage"] == "dino")
    d = stage["metrics"]["images_per_s"]
    t = json.load(open(f"{tmp}/pt{i}-torch.json"))["images_per_s"]
    print(f"  round {i}: dinoflow {d:8.2f} images/s   PyTorch {t:8.2f} images/s   -> {d/t:.2f}x")
    rounds.append({"dinoflow_images_per_s": d, "pytorch_images_per_s": t, "ratio": d / t})
median = statistics.median(r["ratio"] for r in rounds)
print(f"  median: dinoflow {median:.2f}x PyTorch")
json.dump({"rounds": rounds, "median_ratio": median}, open("bench/out/pretrain.json", "w"), indent=1)
PYEOF

echo "== vector search: dinoflow-search vs faiss-cpu, same vectors, $CORES threads (bench/search_faiss.py)"
$PY bench/search_faiss.py gen "$tmp/search"
cargo bench -q -p dinoflow-search --bench search -- "$tmp/search" "$CORES" | sed 's/^/  /'
$PY bench/search_faiss.py faiss "$tmp/search" "$CORES" | sed 's/^/  /'
$PY bench/search_faiss.py report "$tmp/search" bench/out/search.json | sed 's/^/  /'

echo "== fully cached re-run of workflows/ingest-fashion-mnist.yaml"
"$BIN" run workflows/ingest-fashion-mnist.yaml --store "$tmp/demo" >/dev/null 2>&1
for i in 1 2 3; do
  s=$(date +%s.%N); "$BIN" run workflows/ingest-fashion-mnist.yaml --store "$tmp/demo" >/dev/null 2>&1; e=$(date +%s.%N)
  $PY -c "print($e-$s)"
done | sort -n | head -1 | $PY -c 'import sys; print(f"  cached re-run {float(sys.stdin.read())*1000:.1f} ms")'

echo "== copy detection on photos: dinoflow dedup (defaults) vs PDQ and pHash, same files (bench/copydetect.py)"
for set in a b; do
  $PY bench/copydetect.py "$set" "$tmp/copydetect-$set" "$BIN" | sed 's/^/  /'
  cp "$tmp/copydetect-$set/scores.json" "bench/out/copydetect-$set.json"
done
