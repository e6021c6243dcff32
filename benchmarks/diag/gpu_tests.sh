# Sourced by benchmarks/gpu_run.sh and gpu_recheck.sh: gpu_tests [pytest args...] runs every test marked gpu ($PY).
# With gcc present, the run carries a native-stack printer for segfaults (segv_bt.c) and a trace of test starts and
# garbage collections (gc_trace.py, to /tmp/gc_trace.log). A crash (exit >= 128) would lose every test after it, so
# then the trace's last lines are printed and the modules run one at a time: one crash costs one module.
gpu_tests() {
  local diag=benchmarks/diag pre=() plug=()
  if gcc -shared -fPIC -o /tmp/libsegv_bt.so "$diag/segv_bt.c" 2>/dev/null; then
    pre=(env LD_PRELOAD=/tmp/libsegv_bt.so GC_TRACE=/tmp/gc_trace.log PYTHONPATH="$diag${PYTHONPATH:+:$PYTHONPATH}")
    plug=(-p gc_trace)
  fi
  "${pre[@]}" "$PY" -X faulthandler -m pytest tests -m gpu -q -ra --tb=short -p no:cacheprovider "${plug[@]}" "$@"
  local rc=$?
  [ "$rc" -lt 128 ] && return "$rc"
  echo "=== the test process died (exit $rc); the trace's last lines:"
  tail -n 6 /tmp/gc_trace.log 2>/dev/null
  echo "=== the modules one at a time"
  local f
  for f in $("$PY" -m pytest tests -m gpu --collect-only -q -p no:cacheprovider "$@" 2>/dev/null | grep '::' | cut -d: -f1 | sort -u); do
    echo "--- $f"; "${pre[@]}" "$PY" -X faulthandler -m pytest "$f" -m gpu -q -ra --tb=short -p no:cacheprovider "${plug[@]}"
  done
  return "$rc"
}
