#!/usr/bin/env bash
# The GPU machine's one-shot run for the compiled kernels (H100/H200, CUDA 13, torch preinstalled):
# build the CUDA extension, run tests/ops on CUDA, time the ops. Outputs under ${OUT:-benchmarks/out}.
#   bash benchmarks/gpu_ops.sh            (from the repository root)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out}; mkdir -p "$OUT"
VENV=${VENV:-.venv-gpu}
LOG="$OUT/gpu_ops.log"
exec > >(tee -a "$LOG") 2>&1
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"

# 1. A venv that reuses the preinstalled CUDA torch; build CPU + CUDA kernels for sm_90 in place.
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
PY="$VENV/bin/python"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
"$PY" -m pip install -q pytest pytest-benchmark 2>/dev/null || echo "(pip: offline; using what is installed)"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
time "$PY" -m pip install --no-build-isolation --no-deps -e . || { echo "BUILD FAILED"; exit 1; }
"$PY" -m ganinv_core.ops.doctor | tee "$OUT/doctor.txt"

# 2. The op tests, CPU and CUDA (the gpu-marked ones run here), then the generator comparison.
GANINV_PLUGINS_STRICT=1 "$PY" -m pytest tests/ops -q -ra -p no:randomly --junitxml="$OUT/tests_ops.xml"
echo "tests/ops exit code: $?"

# 3. Benchmarks at the 1024 config-f shapes, batch 1 and 8 (ext vs ref).
GANINV_BENCH_SIZE=full "$PY" -m pytest benchmarks/ops/test_bench_ops.py -q --benchmark-only \
  --benchmark-min-rounds=10 --benchmark-max-time=0.5 --benchmark-columns=mean,median,rounds \
  --benchmark-json="$OUT/gpu_ops.json"
echo "benchmarks exit code: $?"
echo "== done: record the card, torch/CUDA versions, test result and ratios ($OUT/gpu_ops.md) in benchmarks/RESULTS.md"
