#!/usr/bin/env bash
# One command for a GPU (< 10 minutes): keras-topo's ResNet-18 step on TensorFlow, JAX and
# torch (each in its own process with its KERAS_BACKEND), native PyTorch's, the CIFAR input
# pipeline and the time of one paper-scale run. See benchmarks/gpu_bench.py for what is timed.
#
#   benchmarks/gpu.sh [gpu_bench.py flags]     # e.g. --data-dir CIFAR, --torch-compile
#   benchmarks/gpu.sh --quick                  # CPU smoke run
#
# Writes runs/gpu_bench.json (figures) and runs/gpu_bench.md (the table); OUT=prefix changes them.
# Each backend needs its GPU build: pip install "tensorflow[and-cuda]" "jax[cuda12]" and a
# CUDA torch wheel; a section whose backend sees no GPU says "cpu" in its settings line.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
[ -x .venv/bin/python ] && [ "$PYTHON" = python ] && PYTHON=.venv/bin/python
OUT="${OUT:-runs/gpu_bench}"
mkdir -p "$(dirname "$OUT")"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
else
  echo "nvidia-smi not found: no NVIDIA GPU visible, the figures will be CPU ones."
fi
"$PYTHON" benchmarks/gpu_bench.py --out "$OUT.json" "$@" | tee "$OUT.md"
