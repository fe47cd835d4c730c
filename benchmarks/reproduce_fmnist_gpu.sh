#!/usr/bin/env bash
# The full `fashion-mnist` reproduce suite (3-seed main table and every study) on one CUDA GPU.
#
# Needs the four Fashion-MNIST IDX files (.gz or not) in $FMNIST_ROOT and writes under $OUT.
# On a lent GPU machine the repository travels alone, so copy the files into the ignored
# data/ folder and carry it. From the repository root:
#
#   mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
#   # device run: command "FMNIST_ROOT=data/fashion-mnist bash benchmarks/reproduce_fmnist_gpu.sh",
#   #             carry ["data/fashion-mnist"], timeout_s 600 (SUITE_TIMEOUT=540 stops the suite first)
#
# Time: the suite is CPU-scale (3281 s on two CPU cores, docs/results.md); it has not been
# timed on a GPU. If one call cannot hold it, split it into two calls:
#   ... bash benchmarks/reproduce_fmnist_gpu.sh --studies main
#   ... bash benchmarks/reproduce_fmnist_gpu.sh --studies learning_rate,forget_fraction,combination,neighbour_search,batchnorm
# summary.md is rewritten after every study, so a run stopped by SUITE_TIMEOUT keeps what
# finished. Outputs (at most 8 files come back from a lent machine, so all is also packed):
#   $OUT/summary.md  every study's table      $OUT/run.json   command, date, machine, seconds
#   $OUT/log.txt     the run's output         $OUT/fmnist-suite.tar.gz  all reports and figures
# Unpack the archive to see main/figures/ (entropy_*.png, tsne_*.png per model) and the reports.
# Extra arguments go to `bunlearn reproduce` (e.g. --studies main, --set studies.main.seeds=[0]).
set -euo pipefail
: "${FMNIST_ROOT:?set FMNIST_ROOT to the folder holding the Fashion-MNIST IDX files}"
OUT="${OUT:-out-fmnist-gpu}"
PYTHON="${PYTHON:-python3}"
RESULTS="${RESULTS:-/tmp/fmnist-suite}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export BUNLEARN_CACHE="${BUNLEARN_CACHE:-/tmp/bunlearn-reproduce-cache}"
if [ ! -e "$FMNIST_ROOT/train-images-idx3-ubyte.gz" ] && [ ! -e "$FMNIST_ROOT/train-images-idx3-ubyte" ]; then
    echo "reproduce_fmnist_gpu.sh: no Fashion-MNIST files in $FMNIST_ROOT" >&2
    exit 2
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/log.txt"
status=0
# stop the suite in time to pack what it finished (summary.md is rewritten after every study)
timeout "${SUITE_TIMEOUT:-540}" "$PYTHON" -m boundary_unlearning reproduce --suite fashion-mnist --data-root "$FMNIST_ROOT" \
    --device cuda --out "$RESULTS" --overwrite "$@" 2>&1 | tee -a "$OUT/log.txt" || status=$?
cp "$RESULTS/summary.md" "$RESULTS/run.json" "$OUT/" 2>/dev/null || true
tar -czf "$OUT/fmnist-suite.tar.gz" --exclude="*.safetensors" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
exit "$status"
