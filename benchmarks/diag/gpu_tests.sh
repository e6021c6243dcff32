# Sourced by benchmarks/gpu_run.sh and gpu_recheck.sh: gpu_tests [pytest args...] runs every test marked gpu ($PY)
# under $GPU_TESTS_ROOT (default tests). With gcc present, the run carries a native-stack printer for segfaults
# (segv_bt.c) and a trace of test starts and garbage collections (gc_trace.py, to /tmp/gc_trace.log).
# A crash (exit >= 128) would lose every test after it. So after one, the trace's last lines are printed and the run
# goes on from the test after the one that died (those already run, and the dead one, deselected), up to 4 crashes;
# at the end each test that died runs alone, which says whether it crashes by itself or after the others.
# Without gcc (no trace) the modules run one at a time instead: one crash costs one module.
gpu_tests() {
  local root=${GPU_TESTS_ROOT:-tests} diag=benchmarks/diag pre=() plug=() skip=() dead=() ran=() rc n t
  local trace=/tmp/gc_trace.log
  if gcc -shared -fPIC -o /tmp/libsegv_bt.so "$diag/segv_bt.c" 2>/dev/null; then
    pre=(env LD_PRELOAD=/tmp/libsegv_bt.so GC_TRACE=$trace PYTHONPATH="$diag${PYTHONPATH:+:$PYTHONPATH}")
    plug=(-p gc_trace)
  fi
  for n in 1 2 3 4 5; do
    rm -f "$trace"
    "${pre[@]}" "$PY" -X faulthandler -m pytest "$root" -m gpu -q -ra --tb=short -p no:cacheprovider "${plug[@]}" \
      "${skip[@]}" "$@"
    rc=$?
    [ "$rc" -lt 128 ] && break
    echo "=== the test process died (exit $rc); the trace's last lines:"
    tail -n 6 "$trace" 2>/dev/null
    mapfile -t ran < <(grep '^TEST ' "$trace" 2>/dev/null | cut -d' ' -f2-)
    [ "${#ran[@]}" -eq 0 ] && break          # no trace: nothing known to skip
    dead+=("${ran[-1]}")
    [ "$n" -eq 5 ] && { echo "=== a fifth crash: stopping"; break; }
    echo "=== going on after ${ran[-1]}"
    for t in "${ran[@]}"; do skip+=(--deselect "$t"); done
  done
  if [ "$rc" -ge 128 ] && [ "${#plug[@]}" -eq 0 ]; then
    echo "=== the modules one at a time"
    local f
    for f in $("$PY" -m pytest "$root" -m gpu --collect-only -q -p no:cacheprovider "$@" 2>/dev/null | grep '::' | cut -d: -f1 | sort -u); do
      echo "--- $f"; "$PY" -X faulthandler -m pytest "$f" -m gpu -q -ra --tb=short -p no:cacheprovider
    done
  fi
  for t in "${dead[@]}"; do
    echo "=== died in the run: $t; alone:"
    "${pre[@]}" "$PY" -X faulthandler -m pytest "$t" -q -ra --tb=short -p no:cacheprovider "${plug[@]}"
    echo "=== alone: exit $?"
  done
  [ "${#dead[@]}" -gt 0 ] && return 134
  return "$rc"
}
