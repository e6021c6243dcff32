#!/usr/bin/env bash
# A short GPU call after a fix (about 5-6 minutes on a fresh machine): install (builds the kernels), the doctor, every
# test marked gpu, bias_act at batch 1 against the reference (issue 3's open figure), the compiled ops' achieved
# bandwidth (kernel_probe.py; Nsight Compute's view where ncu is installed), and bf16 / fp16 accuracy at 256² with
# the compiled ops and with the reference ops side by side (is a reduced-precision loss the kernels' doing?).
# Then two workers on one card against one, and the degradations' and composites' cost at 1024². Output goes to
# $OUT/recheck.log. GANINV_RECHECK_BENCH=0 stops after the tests.
#   bash benchmarks/gpu_recheck.sh            (repository root, on the GPU machine)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}; mkdir -p "$OUT"
PY=${PY:-python3}
export GANINV_PLUGINS_STRICT=1
exec > >(tee -a "$OUT/recheck.log") 2>&1
# GANINV_RECHECK_DEADLINE=S: a step that would start after S seconds of the script is skipped (the device call's
# own limit would kill it half-way, and the log would end without saying which figures are missing)
DEADLINE=${GANINV_RECHECK_DEADLINE:-100000}
step() { local secs=$1; shift; echo; echo "=== [$(date -u +%T)] $*"; local t0=$SECONDS
         [ "$SECONDS" -ge "$DEADLINE" ] && { echo "=== skipped: past the deadline (${DEADLINE}s)"; return 125; }
         timeout --kill-after=5 "$secs" "$@"; local rc=$?; echo "=== exit $rc after $((SECONDS - t0))s"; return $rc; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
# the build's own lines (ganinv: ...) say whether _C had to be linked again to keep a libstdc++ copy private; they
# are read after the step, so a build stopped by its time limit still shows them (and its log's tail)
export PY OUT
step 170 env TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} bash -c \
  '"$PY" -m pip install -v --no-build-isolation --no-deps -e . > "$OUT/install.log" 2>&1' || tail -30 "$OUT/install.log"
grep -a "ganinv: " "$OUT/install.log"
step 30 "$PY" -m ganinv_core.cli --doctor
# the extension must not export a libstdc++ of its own (the image's g++ links one in statically: it crashed)
step 150 "$PY" -m pytest tests/ops/test_linking.py -q -p no:cacheprovider
"$PY" -c 'import torch, ganinv_core._C as c; print(c.__file__)' | xargs "$PY" ganinv_core/ops/_linking.py
# how the image's compiler driver (it reports itself as g++-real) links a shared library: where libstdc++ comes from
c++ -### -shared -fPIC -x c++ /dev/null -o /tmp/probe.so 2>&1 | grep collect2 | tr ' ' '\n' | grep -n 'stdc\|static\|-L'
source benchmarks/diag/gpu_tests.sh   # gpu_tests: every test marked gpu, crash-tolerant
export -f gpu_tests
step 200 bash -c gpu_tests
[ "${GANINV_RECHECK_BENCH:-1}" = 0 ] && exit 0   # the tests only
# two workers on one card against one (--device cuda,cuda, sixteenth session): 8 targets at batch 1, wall time each
for devs in cuda cuda,cuda; do
  step 60 "$PY" -m ganinv_core.cli --network random-256 --target $(seq -f 'seed:%g' 1 8) --batch-size 1 --steps 200 \
    --quiet --device $devs --outdir "$OUT/workers-$devs" --overwrite | tail -1
  "$PY" -c "import json,sys; print('$devs', 'wall_time_s', json.load(open(sys.argv[1]))['wall_time_s'])" \
    "$OUT/workers-$devs/run.json"
done
# what each degradation adds to a step, what composite.png's projection costs, and what the identity loss and
# vgg16's fill mode add to the perceptual loss, at 256² and 1024² (owed since the fifteenth to seventeenth sessions)
step 120 env GANINV_BENCH_SIZE=full GANINV_SELFTEST=0 "$PY" -m pytest benchmarks/test_bench_engine.py -q \
  -p no:cacheprovider --benchmark-only --benchmark-columns=mean,median,rounds \
  -k "test_degradation or test_composite or test_perceptual_loss or test_tuning_step"
# issue 3's open figure: bias_act at b1 eager (the wrapper's host cost was halved; conv lrelu, ToRGB with and
# without clamp, the floor) and the wrapper's own cost per call; the table (ratios to ref) goes to the log.
step 90 env GANINV_BENCH_SIZE=full GANINV_SELFTEST=0 "$PY" -m pytest benchmarks/ops/test_bench_ops.py -q \
  -p no:cacheprovider --benchmark-only --benchmark-min-rounds=3 --benchmark-max-time=0.1 --benchmark-warmup=on \
  --benchmark-warmup-iterations=2 --benchmark-columns=mean,median,rounds --benchmark-json="$OUT/ops_b1.json" \
  -k "dispatch_overhead or (bias_act and b1- and not graphx10 and not backward)"
[ -f "$OUT/ops_b1.md" ] && cat "$OUT/ops_b1.md"
step 40 "$PY" benchmarks/kernel_probe.py --dtype bf16 --batch 8
command -v ncu >/dev/null && step 60 ncu -k 'regex:epilogue_backward|upfirdn_tiled' --launch-skip 6 --launch-count 2 \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
  "$PY" benchmarks/kernel_probe.py --dtype bf16 --batch 8 --layers 1 --reps 1
PC=(benchmarks/precision_check.py --network random-256 --steps 100 --targets ${GANINV_RECHECK_TARGETS:-8})
step 40 "$PY" "${PC[@]}" --configs fp32,bf16,fp16
step 40 env GANINV_OPS=ref "$PY" "${PC[@]}" --configs fp32,bf16
