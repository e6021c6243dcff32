#!/usr/bin/env bash
# The one GPU-machine run (H100/H200, system python3 with CUDA torch, no internet):
#   1 install (builds the CUDA kernels)  2 doctor  3 the GPU tests (everything marked gpu)
#   4 full benchmark suite (ops incl. modconv_epilogue + engine, 256 and 1024, every precision, NVIDIA-equivalent
#     baseline, bf16 with and without TF32 in its float32 blocks)
#   5 bf16-vs-fp32 final PSNR at 1024 (mean of 4 targets)  6 profile of the step  7 torch.compile and
#   channels_last side by side (benchmarks/compile_check.py). ~7-9 minutes in all: give the call 600 s, or split
#   it: GANINV_GPU_PART=a (stages 1-4), then GANINV_GPU_PART=b (1 and 5-7; the install is quick once built).
# Each stage has its own timeout and a failing stage does not stop the next. Everything goes to $OUT
# (run.log, doctor.txt, bench.md, ops.md, ops_simple.md, psnr.txt, profile.txt, and the raw JSON in json.tar).
#   bash benchmarks/gpu_run.sh                 (repository root, on the GPU machine)
#   GANINV_GPU_DRY=1 bash benchmarks/gpu_run.sh (CPU rehearsal: .venv, no install, CPU sizes, short stages)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}; mkdir -p "$OUT"
DRY=${GANINV_GPU_DRY:-0}
PART=${GANINV_GPU_PART:-all}   # all | a (stages 1-4) | b (stages 1, 5-7): two calls when one would not fit |
                               # t: what the open issues still need (one call, cut at its deadline: below)
part() { [ "$PART" = all ] || [ "$PART" = "$1" ]; }
export GANINV_PLUGINS_STRICT=1 GANINV_CACHE=${GANINV_CACHE:-$OUT/../.cache-gpu-run}
exec > >(tee -a "$OUT/run.log") 2>&1

if [ "$DRY" = 1 ]; then
  PY=${PY:-.venv/bin/python}; SIZE=cpu; NET=random-64; PSNR_STEPS=3; PROF_NETS="random-64"; T=1
  BENCH_SEL=(-k "random-64 and (step or inversion)"); TESTS=(tests/engine/test_perf_options.py)
  PROBE=(--dtype fp32 --batch 1 --layers 1 --reps 3)
else
  PY=${PY:-python3}; SIZE=full; NET=random-1024; PSNR_STEPS=100; PROF_NETS="random-1024"; T=1
  BENCH_SEL=(); TESTS=(); PROBE=(--dtype bf16 --batch 8)
fi

# Raw JSON goes into one archive as soon as it is written: a call cut short at its limit still brings back at most
# 8 files (run.log, doctor.txt, bench.md, ops.md, ops_simple.md, psnr.txt, profile.txt, json.tar).
keep_json() { (cd "$OUT" && for f in "$@"; do [ -f "$f" ] && tar rf json.tar "$f" && rm -f "$f"; done); }

DEADLINE=0   # > 0: no stage runs past this many seconds since the script started (part t sets it)
stage() {  # stage NAME SECONDS CMD...: run with a timeout, report its exit code, never abort the script
  local name=$1 secs=$2; shift 2
  if [ "$DEADLINE" -gt 0 ]; then
    local left=$((DEADLINE - SECONDS))
    if [ "$left" -lt 20 ]; then echo; echo "=== $name: skipped, ${left}s to the deadline"; return; fi
    [ "$secs" -gt "$left" ] && secs=$left
  fi
  echo; echo "=== [$(date -u +%T)] $name (timeout ${secs}s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$secs" "$@"
  echo "=== $name: exit $? after $((SECONDS - t0))s"
}

# bench_ops / bench_engine STAGE SECONDS JSON [pytest args...]: one benchmark suite as a stage (few rounds: the ops
# cases a short max time, the engine cases fixed rounds), its JSON archived. Variables set before the call (e.g.
# GANINV_CUDA_SIMPLE=1) reach the suite. GANINV_SELFTEST=0: the timings are taken whatever the kernels' self-test
# says (the doctor and test stages report their correctness; a failed check must not cost the figures).
bench_ops() {
  local name=$1 secs=$2 json=$3; shift 3
  stage "$name" "$secs" env GANINV_BENCH_SIZE=$SIZE GANINV_SELFTEST=0 "$PY" -m pytest benchmarks/ops -q -p no:cacheprovider \
    --benchmark-only --benchmark-min-rounds=3 --benchmark-max-time=0.1 --benchmark-warmup=on \
    --benchmark-warmup-iterations=2 --benchmark-columns=mean,median,rounds --benchmark-json="$OUT/$json" "$@"
  keep_json "$json"
}
bench_engine() {
  local name=$1 secs=$2 json=$3; shift 3
  stage "$name" "$secs" env GANINV_BENCH_SIZE=$SIZE GANINV_SELFTEST=0 "$PY" -m pytest benchmarks/test_bench_engine.py -q \
    -p no:cacheprovider --benchmark-only --benchmark-columns=mean,median,rounds --benchmark-json="$OUT/$json" "$@"
  keep_json "$json"
}

source benchmarks/diag/gpu_tests.sh   # gpu_tests: every test marked gpu, crash-tolerant
export -f gpu_tests; export PY

echo "=== ganinv GPU run $(date -u +%FT%TZ) dry=$DRY"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name())'

# 1. install into the system python (builds the C++/CUDA kernels for sm_90)
if [ "$DRY" != 1 ]; then
  stage install 240 env TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} \
    "$PY" -m pip install --no-build-isolation --no-deps -e .
  "$PY" -c 'import ganinv_losses' 2>/dev/null || stage install-without-ext 60 env GANINV_NO_EXT=1 \
    "$PY" -m pip install --no-build-isolation --no-deps -e .    # the kernels then build just in time
fi

if part a; then
# 2. doctor: which backend each op uses on each device
stage doctor 60 bash -c "'$PY' -m ganinv_core.cli --doctor > '$OUT/doctor.txt' 2>&1 || ganinv-run --doctor > '$OUT/doctor.txt' 2>&1; cat '$OUT/doctor.txt'"

# 3. tests: everything marked gpu, and the ops + engine suites (CPU and CUDA paths)
stage tests-gpu 150 bash -c gpu_tests
# the simple CUDA kernels (GANINV_CUDA_SIMPLE=1), kept as the fallback of the tiled / vectorised ones
stage tests-gpu-simple-kernels 60 env GANINV_CUDA_SIMPLE=1 "$PY" -m pytest tests/ops -m gpu -q -ra -p no:cacheprovider
[ ${#TESTS[@]} = 0 ] || stage tests-cpu-paths 200 "$PY" -m pytest "${TESTS[@]}" -q -ra -p no:cacheprovider

# 4. the benchmark suite (few rounds: the engine cases use fixed rounds, the ops cases a short max time)
bench_engine bench-engine 180 bench.json "${BENCH_SEL[@]}"
bench_ops bench-ops 140 ops.json
# the simple bias_act / upfirdn2d kernels timed too (GANINV_GPU_SIMPLE_BENCH=1; off by default to fit 600 s)
[ "${GANINV_GPU_SIMPLE_BENCH:-0}" = 1 ] && \
  GANINV_CUDA_SIMPLE=1 bench_ops bench-ops-simple-kernels 70 ops_simple.json -k "ext and not epilogue"

fi

if part b; then
# 5. accuracy of the fast precisions: final PSNR vs the target against fp32, same 4 targets and seed (one
#    batch: 4 independent inversions). Per target, any change of rounding (tf32 too) moves the end point by
#    ~0.1-0.2 dB, so the mean over the targets is what says whether a precision loses accuracy.
stage psnr 130 bash -c "'$PY' benchmarks/precision_check.py --network $NET --steps $PSNR_STEPS --targets 4 > '$OUT/psnr.txt' 2>&1"
cat "$OUT/psnr.txt"

# 6. where the time goes: the top kernels of the step
: > "$OUT/profile.txt"
for net in $PROF_NETS; do
  stage "profile $net b1" 45 bash -c "'$PY' benchmarks/profile_step.py --network $net --batch 1 --precision tf32 --steps 3 >> '$OUT/profile.txt' 2>&1"
  [ "$T" = 1 ] || stage "profile $net b8 bf16" 90 bash -c "'$PY' benchmarks/profile_step.py --network $net --batch 8 --precision bf16 --steps 3 >> '$OUT/profile.txt' 2>&1"
done
# 7. torch.compile of the synthesis, alone and under the CUDA graph, vs the graph alone (bf16, batched; the
#    compilation itself takes minutes, so it runs last and appends to profile.txt: the tool returns 8 files)
if [ "$DRY" = 1 ]; then CC=(--configs eager,graph); CB=2; CS=2; else CC=(--configs graph,compile+graph,compile); CB=8; CS=10; fi
stage "compile $NET b$CB bf16" 170 bash -c "'$PY' benchmarks/compile_check.py --network $NET --batch $CB --precision bf16 --steps $CS ${CC[*]} >> '$OUT/profile.txt' 2>&1"
stage "channels_last $NET b$CB bf16" 60 bash -c "'$PY' benchmarks/compile_check.py --network $NET --batch $CB --precision bf16 --steps $CS --channels-last --configs eager,graph >> '$OUT/profile.txt' 2>&1"
cat "$OUT/profile.txt"
fi
if [ "$PART" = t ]; then
# What the issues still need, most important first, in one call: the GPU tests (three sessions of kernels written
# without a GPU), the 1024² step cases the targets are stated for (bf16 / fp16 / tf32 + graph, cuDNN's autotuner,
# the step without each session's changes, the update alone, VGG16's loss), the ops (issue 3's ratios, with the
# host-floor cases), final-PSNR accuracy of bf16 / fp16 against fp32, profiles of the step and of VGG16, then the
# command line at its defaults, the 1000-step accuracy run, the simple kernels and torch.compile.
# GANINV_GPU_STAGES picks a subset; GANINV_GPU_DEADLINE (seconds since the script started, default 550 here) cuts
# every stage short at that point and skips the ones that would start later, so a call with timeout_s=600 always
# returns what finished (the install counts: ~60 s on a fresh machine, seconds once built).
DEADLINE=${GANINV_GPU_DEADLINE:-550}
STAGES=,${GANINV_GPU_STAGES:-doctor,tests-epilogue,tests-gpu,probe,ncu,engine,ops,psnr,profile,profile-vgg,cli,psnr-long,ops-simple,compile},
has() { [[ $STAGES == *,$1,* ]]; }
has doctor && stage doctor 30 bash -c "'$PY' -m ganinv_core.cli --doctor > '$OUT/doctor.txt' 2>&1; cat '$OUT/doctor.txt'"
has tests-epilogue && stage tests-epilogue 60 "$PY" -m pytest tests/ops/test_ext_epilogue.py -m gpu -q -ra -p no:cacheprovider
has tests-gpu && stage tests-gpu 150 bash -c 'gpu_tests --ignore=tests/ops/test_ext_epilogue.py'
# achieved bandwidth of each compiled op at the reduced-precision layers' shapes (the step's memory-bound kernels ran
# at ~15-20 % of it in bf16 by the ninth session's profile), then Nsight Compute's view of the two largest, if present
has probe && stage probe 40 "$PY" benchmarks/kernel_probe.py "${PROBE[@]}"
has ncu && command -v ncu >/dev/null && stage ncu 60 ncu -k 'regex:epilogue_backward|upfirdn_tiled' --launch-skip 6 \
  --launch-count 2 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
  "$PY" benchmarks/kernel_probe.py --dtype bf16 --batch 8 --layers 1 --reps 1
has engine && bench_engine bench-engine-targets 180 bench.json \
  -k "${GANINV_GPU_T_SEL:-(nvidia_equivalent_step and random-1024) or (test_step and random-1024 and not notf32 and (tf32-graph or bf16-graph or bf16-cl-graph or fp16-graph or grouped-graph or cudnnbench or nofold or s6-graph or rb-graph)) or (test_vgg16_loss and 256-b8 and bf16) or (test_update and random-1024)}"
# (includes bias_act's backward with the bias gradient in one pass beside the two-pass form, test_bias_act_backward,
# and the 'floor' cases: a trivial op through the same harness, the host's fixed cost that bounds the eager ratios)
has ops && bench_ops bench-ops 160 ops.json -k "not lpips and not autocorr and not epilogue and not graphx10"
# the fifth session's ops (written without a GPU): the LPIPS head and the noise regulariser, compiled vs reference;
# and modconv_epilogue (16-byte packs since the seventh session)
has ops && bench_ops bench-ops-lpips-noise-epilogue 80 ops_new.json -k "lpips or autocorr or epilogue"
# the small shapes' device time with the per-replay launch shared by ten repetitions (as in the step's one graph)
has ops && bench_ops bench-ops-graphx10 45 ops_x10.json -k "graphx10 and (bias_act or upfirdn2d) and (x8- or x9- or x64- or x65-)"
has psnr && stage psnr 150 bash -c "'$PY' benchmarks/precision_check.py --network $NET --steps $PSNR_STEPS --targets ${GANINV_GPU_PSNR_TARGETS:-12} --configs ${GANINV_GPU_PSNR_CONFIGS:-fp32,bf16,bf16-polish,bf16-polish25,bf16-hp,fp16,fp16-polish} > '$OUT/psnr.txt' 2>&1; cat '$OUT/psnr.txt'"
has profile && stage "profile $NET b8 bf16" 60 bash -c "'$PY' benchmarks/profile_step.py --network $NET --batch 8 --precision bf16 --steps 3 > '$OUT/profile.txt' 2>&1; cat '$OUT/profile.txt'"
# VGG16 alone: 9.4-10.6 ms of the 47.8 ms bf16 b8 step, at 60-69 TFLOP/s in bf16 and fp32 alike (why?); now with the
# LPIPS head as one lpips_distance op per level
has profile-vgg && stage "profile vgg b8 bf16" 40 bash -c "'$PY' benchmarks/profile_step.py --network $NET --batch 8 --precision bf16 --steps 3 --part vgg >> '$OUT/profile.txt' 2>&1; tail -30 '$OUT/profile.txt'"
# the command line at its defaults (precision auto = tf32, and --cuda-graph auto: the step captured) against
# --no-cuda-graph: colourisation + inpainting, 4 photos, 200 steps
has cli && stage cli-default 120 "$PY" benchmarks/cli_default.py --network $NET --steps 200
# the trajectory noise shrinks as the runs converge: the same comparison over a whole 1000-step run at 256²
has psnr-long && stage psnr-long 120 bash -c "'$PY' benchmarks/precision_check.py --network ${GANINV_GPU_PSNR_LONG_NET:-random-256} --steps $((PSNR_STEPS * 10)) --targets 8 --configs fp32,bf16,bf16-polish,bf16-hp,fp16 >> '$OUT/psnr.txt' 2>&1; tail -4 '$OUT/psnr.txt'"
# the simple kernels at the small shapes, where the tiled upfirdn2d spends a whole tile on each 8x8 plane
has ops-simple && GANINV_CUDA_SIMPLE=1 bench_ops bench-ops-simple-small 40 ops_simple.json \
  -k "ext and not epilogue and (x8- or x9- or x4- or x65-)"
# modconv_epilogue one element per thread (the kernel before the seventh session's 16-byte packs), beside ops_new.md
has ops-simple && GANINV_CUDA_SIMPLE=1 bench_ops bench-ops-simple-epilogue 40 ops_simple_ep.json -k "ext and epilogue"
# torch.compile (Triton fuses the elementwise chains between the convolutions) against the CUDA graph alone, at the
# batch of the throughput target; compiling a 1024² synthesis takes minutes, so it runs last
has compile && stage "compile $NET b8 bf16" 170 bash -c "'$PY' benchmarks/compile_check.py --network $NET --batch 8 --precision bf16 --steps ${GANINV_GPU_COMPILE_STEPS:-10} --configs graph,compile+graph >> '$OUT/profile.txt' 2>&1; tail -6 '$OUT/profile.txt'"
fi

echo "=== done $(date -u +%T): record the card, versions, ratios ($OUT/bench.md), psnr.txt and profile.txt in benchmarks/RESULTS.md"
keep_json $(cd "$OUT" && ls -- *.json 2>/dev/null)
# at most 8 files come back: the extra ops tables are appended to ops.md
for f in ops_new.md ops_x10.md ops_simple_ep.md; do
  [ -f "$OUT/$f" ] && { printf '\n\n# %s\n' "$f" >> "$OUT/ops.md"; cat "$OUT/$f" >> "$OUT/ops.md"; rm -f "$OUT/$f"; }
done
ls -la "$OUT"
