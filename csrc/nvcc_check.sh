#!/usr/bin/env bash
# Compile-check every csrc/*.cu with nvcc against the installed (CPU) torch's headers: no linking,
# no GPU needed. Fails loudly on any compile error; exits 0 with a notice when nvcc is absent.
#   PYTHON=...  interpreter whose torch to use (default .venv/bin/python, else python3)
#   NVCC=...    compiler (default: nvcc on PATH);  GANINV_NVCC_ARCH=90  target SM (default 90)
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-$(command -v nvcc || true)}
if [ -z "$NVCC" ]; then
  echo "nvcc-check: nvcc not found; SKIPPING the CUDA compile check (install the CUDA toolkit to run it)"
  exit 0
fi
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
read -r TORCH PYINC < <("$PYTHON" -c 'import os, sysconfig, torch; print(os.path.dirname(torch.__file__), sysconfig.get_paths()["include"])')
ARCH=${GANINV_NVCC_ARCH:-90}

# The CPU torch wheel lacks one generated CUDA header: a one-line stand-in.
SHIM=build/nvcc-check/shim
mkdir -p "$SHIM/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$SHIM/c10/cuda/impl/cuda_cmake_macros.h"

shopt -s nullglob
files=(csrc/*.cu)
if [ ${#files[@]} -eq 0 ]; then echo "nvcc-check: no .cu files"; exit 0; fi
echo "nvcc-check: $("$NVCC" --version | tail -n 1); torch $(basename "$(dirname "$TORCH")")/torch; sm_$ARCH; ${#files[@]} file(s)"

pids=(); logs=()
for f in "${files[@]}"; do
  log="build/nvcc-check/$(basename "$f").log"
  "$NVCC" -c "$f" -o "build/nvcc-check/$(basename "$f").o" -std=c++20 -O1 \
    -I"$SHIM" -I"$TORCH/include" -I"$TORCH/include/torch/csrc/api/include" -I"$PYINC" -Icsrc \
    -gencode "arch=compute_$ARCH,code=sm_$ARCH" --expt-relaxed-constexpr -Xcompiler -fPIC -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
    -DTORCH_EXTENSION_NAME=_C >"$log" 2>&1 &
  pids+=($!); logs+=("$log")
done
status=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then
    echo "nvcc-check: OK    ${files[$i]}"
  else
    echo "nvcc-check: FAIL  ${files[$i]}" >&2; cat "${logs[$i]}" >&2; status=1
  fi
done
[ $status -eq 0 ] || { echo "nvcc-check: FAILED: a .cu file does not compile (see above)" >&2; exit 1; }
echo "nvcc-check: all .cu files compile"
