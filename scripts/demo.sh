#!/usr/bin/env bash
# The main workflows on real data: Fashion-MNIST (70,000 labelled images) and real photos (the
# ingest run twice to show that the second run is all cache hits), then the full data-to-model
# workflow. A second `make demo` is all cache hits.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/dinoflow
WF=workflows/ingest-fashion-mnist.yaml
echo "== dinoflow dag $WF"
$BIN dag "$WF"
echo "== dinoflow plan $WF"
$BIN plan "$WF"
echo "== dinoflow run $WF"
$BIN run "$WF"
echo "== second run (every stage cached)"
start=$(date +%s.%N)
$BIN run "$WF"
end=$(date +%s.%N)
printf 'cached re-run took %.3f s\n' "$(echo "$end - $start" | bc -l 2>/dev/null || python3 -c "print($end-$start)")"
echo "== dinoflow plan $WF"
$BIN plan "$WF"
echo "== dinoflow show fmnist_train"
$BIN show fmnist_train
echo "== curation: the same ingest (cached: same fingerprints), WebAssembly filters, copy-detection vectors"
$BIN dag workflows/curate.yaml
$BIN run workflows/curate.yaml
$BIN show photos_curated
$BIN show fmnist_vectors
echo "== the full data-to-model run (workflows/fashion-mnist.yaml, cpu preset): curation with ground truth,"
echo "   DINOv2 pretraining on the curated images, distillation into a smaller student, evaluation"
$BIN run workflows/fashion-mnist.yaml --preset cpu
echo "== the funnel (rows in and out of every stage) and the evaluation table"
$BIN show last
echo "== the run's report: DAG, funnel, duplicates, retrieval, training curves, evaluation, workflow"
$BIN report last
echo "outputs are Parquet and safetensors under .dinoflow/objects/; history in .dinoflow/runs.db"
