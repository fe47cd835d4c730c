#!/usr/bin/env bash
# Full-data checks of the library defaults on a lent GPU: the full Fashion-MNIST benchmark and
# the defaults matrix's fmnist-full cell (plus the --quick cells), as in docs/performance.md.
#
#   mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
#   # device run: command "bash benchmarks/gpu_defaults.sh", carry ["data/fashion-mnist"]
set -euo pipefail
FMNIST_DIR="${FMNIST_DIR:-data/fashion-mnist}"
OUT="${OUT:-out-gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export BUNLEARN_CACHE="${BUNLEARN_CACHE:-/tmp/bunlearn-bench-cache}"
python3 benchmarks/defaults_matrix.py --device cuda --data-root "$FMNIST_DIR" \
    --json "$OUT/defaults_matrix_full_cuda.json" 2>&1 | tee "$OUT/defaults_matrix_full_cuda.log"
python3 benchmarks/bench_unlearning.py --device cuda --data-root "$FMNIST_DIR" \
    --json "$OUT/bench_full_cuda.json" --table "$OUT/bench_full_cuda.md" \
    2>&1 | tee "$OUT/bench_full_cuda.log"
