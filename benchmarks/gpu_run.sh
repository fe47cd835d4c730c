#!/usr/bin/env bash
# The full benchmark (all of Fashion-MNIST) on CUDA, for a lent GPU machine.
#
# The machine gets a copy of the repository only, so the Fashion-MNIST IDX files must travel
# inside it: copy them into an ignored folder and carry it. From the repository root:
#
#   mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
#   # device run: command "FMNIST_DIR=data/fashion-mnist bash benchmarks/gpu_run.sh",
#   #             carry ["data/fashion-mnist"], timeout_s 540
#
# Writes bench_full_cuda.{json,md,log} under $OUT (default ./out-gpu). Extra arguments go
# to the benchmark (e.g. --quick, --forget-class 3).
set -euo pipefail
FMNIST_DIR="${FMNIST_DIR:-data/fashion-mnist}"
OUT="${OUT:-out-gpu}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export BUNLEARN_CACHE="${BUNLEARN_CACHE:-/tmp/bunlearn-bench-cache}"
if [ ! -e "$FMNIST_DIR/train-images-idx3-ubyte.gz" ] && [ ! -e "$FMNIST_DIR/train-images-idx3-ubyte" ]; then
    echo "gpu_run.sh: no Fashion-MNIST files in $FMNIST_DIR; copy them there and carry the folder" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
"$PYTHON" benchmarks/bench_unlearning.py --device cuda --data-root "$FMNIST_DIR" \
    --json "$OUT/bench_full_cuda.json" --table "$OUT/bench_full_cuda.md" "$@" \
    2>&1 | tee "$OUT/bench_full_cuda.log"
