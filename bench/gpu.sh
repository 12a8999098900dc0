#!/usr/bin/env bash
# GPU benchmark, not part of `make bench` or CI: ViT-S/14 pretraining (224 / 98 px crops, 2 global +
# 8 local, dinov2's head 65536 / 2048 / 256) on CUDA with bfloat16 autocast, dinoflow's pretrain
# stage beside the PyTorch reference iteration (plugins/pretrain/tests/pretrain_reference.py) with
# the same model, batch and crops; training images/s of each and the fraction of the card's peak
# bfloat16 FLOP/s that it achieves (FLOPs per iteration counted by torch's FlopCounterMode on the
# reference). Writes bench/out/pretrain-gpu.json.
#
# Needs the release binary (`cargo build --release`) and a Python with torch 2.11. On a lent device
# machine: PY=/opt/torch/.venv/bin/python, LD_LIBRARY_PATH=<that venv's torch/lib>, and the
# Fashion-MNIST training images copied beside the tree (IDX=path; the content does not matter for
# speed). Settings (environment): BATCH (64), STEPS (30), IMAGES (2048), DEVICE (cuda), PRECISION
# (bfloat16), PEAK_TFLOPS (default by card name: H100 SXM and H200 989.4, H100 NVL 835.5, H100 PCIe
# 756.5, A100 312; dense bfloat16).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-./target/release/dinoflow}
PY=${PY:-.venv/bin/python}
IDX=${IDX:-/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz}
BATCH=${BATCH:-64} STEPS=${STEPS:-30} IMAGES=${IMAGES:-2048}
DEVICE=${DEVICE:-cuda} PRECISION=${PRECISION:-bfloat16}
mkdir -p bench/out
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

card=cpu
if [ "$DEVICE" = cuda ]; then
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
fi
if [ -z "${PEAK_TFLOPS:-}" ]; then
  case "$card" in
    *H200*|*H100*HBM3*|*H100*SXM*) PEAK_TFLOPS=989.4 ;;
    *H100*NVL*) PEAK_TFLOPS=835.5 ;;
    *H100*PCIe*) PEAK_TFLOPS=756.5 ;;
    *A100*) PEAK_TFLOPS=312 ;;
    *) PEAK_TFLOPS=0 ;;
  esac
fi

cat > "$tmp/wf.yaml" <<YAML
name: bench-pretrain-gpu
stages:
  train:
    kind: ingest@1
    with:
      source: {idx: {images: $IDX}}
      limit: $IMAGES
  dino:
    kind: pretrain@1
    inputs: {images: train}
    with:
      preset: small
      steps: $STEPS
      batch_size: $BATCH
      checkpoint_every: 1000000
      device: $DEVICE
      precision: $PRECISION
YAML
gpus=$([ "$DEVICE" = cuda ] && echo 1 || echo 0)
"$BIN" --json run "$tmp/wf.yaml" --store "$tmp/store" --cpus "$(nproc)" --gpus "$gpus" > "$tmp/run.json"
run_id=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' "$tmp/run.json")
"$BIN" --json show "$run_id" --store "$tmp/store" > "$tmp/show.json"
$PY plugins/pretrain/tests/pretrain_reference.py bench "$STEPS" "$BATCH" "$(nproc)" small "$DEVICE" "$PRECISION" \
  > "$tmp/torch.json"
$PY - "$tmp" "$card" "$PEAK_TFLOPS" <<'PYEOF'
import json, sys
tmp, card, peak = sys.argv[1], sys.argv[2], float(sys.argv[3]) * 1e12
stage = next(s for s in json.load(open(f"{tmp}/show.json"))["stages"] if s["stage"] == "dino")
ref = json.load(open(f"{tmp}/torch.json"))
flops_per_image = ref["flops_per_step"] / ref["batch"]
out = {"card": card, "peak_flops": peak, "flops_per_image": flops_per_image, **{k: ref[k] for k in ("steps", "batch", "device", "precision")}}
print(f"  ViT-S/14 pretrain on {card}, {ref['precision']}, batch {ref['batch']}, {ref['steps']} iterations;"
      f" {flops_per_image / 1e9:.1f} GFLOP per image (FlopCounterMode)")
for name, ips in [("dinoflow", stage["metrics"]["images_per_s"]), ("PyTorch", ref["images_per_s"])]:
    frac = ips * flops_per_image / peak if peak else float("nan")
    print(f"  {name:9} {ips:8.1f} images/s   {ips * flops_per_image / 1e12:7.1f} TFLOP/s   {frac:6.1%} of peak")
    out[name] = {"images_per_s": ips, "fraction_of_peak": frac if peak else None}
print(f"  -> dinoflow {out['dinoflow']['images_per_s'] / out['PyTorch']['images_per_s']:.2f}x")
json.dump(out, open("bench/out/pretrain-gpu.json", "w"), indent=1)
PYEOF
