#!/usr/bin/env bash
# `make fuzz`: fuzzes the workflow parser and the ingest path (image decoding, IDX parsing) for a
# bounded time each, with cargo-fuzz (libFuzzer). Not part of `make test`. FUZZ_SECONDS per target
# (default 60). Needs rustup's nightly toolchain and cargo-fuzz; installs them when missing.
# Crashes are written to fuzz/artifacts/<target>/; turn each into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-60}
export PATH="$HOME/.cargo/bin:$PATH"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Seed corpora from the repository's own inputs.
mkdir -p fuzz/corpus/workflow fuzz/corpus/image fuzz/corpus/idx
cp workflows/*.yaml fuzz/corpus/workflow/
if [ ! -f fuzz/corpus/image/good.jpg ]; then
  .venv/bin/python tests/hostile_corpus.py make fuzz/corpus/image-new > /dev/null
  find fuzz/corpus/image-new -type f -size -64k -exec cp {} fuzz/corpus/image/ \;
  rm -rf fuzz/corpus/image-new
fi
.venv/bin/python - <<'PY'
import gzip, struct
def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)
seeds = {"images.idx": idx([3, 2, 2], range(12)), "labels.idx": idx([3], [1, 2, 3])}
seeds["images.idx.gz"] = gzip.compress(seeds["images.idx"])
for name, data in seeds.items():
    open(f"fuzz/corpus/idx/{name}", "wb").write(data)
PY

for target in workflow image idx; do
  echo "== fuzz $target for ${SECS}s"
  cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
done
