"""`doctor_report()`: which backend each op takes on each device, the outcome of its kernels' self-test against
the reference (`_selftest`), the toolchain, and why a build failed.

Run as `ganinv-run --doctor` or `python -m ganinv_core.ops.doctor`. Probing a device may start the
one-time just-in-time build of its kernels (that is the point: the report says whether it worked).
"""
import os
import platform
import shutil
import subprocess
import sys

import torch


def _first_line(cmd):
    exe = shutil.which(cmd[0])
    if exe is None:
        return 'not found'
    try:
        out = subprocess.run([exe] + cmd[1:], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f'error ({e})'
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return lines[-1 if cmd[0] == 'nvcc' else 0].strip() if lines else '?'


def _devices():
    devs = ['cpu']
    if torch.cuda.is_available():
        devs.append('cuda')
    elif torch.version.cuda is not None:
        devs.append('cuda (no GPU visible)')
    else:
        devs.append('cuda')
    return devs


def doctor_report() -> str:
    """A multi-line, human-readable report (see the module docstring)."""
    from . import _backend, _ext, _jit, _linking, _selftest
    lines = ['ganinv ops doctor',
             f'  python {platform.python_version()} on {platform.platform()}',
             f'  torch {torch.__version__}, CUDA {torch.version.cuda or "none (CPU-only build)"}'
             + (f', GPU {torch.cuda.get_device_name(0)} (sm_{"".join(map(str, torch.cuda.get_device_capability(0)))})'
                if torch.cuda.is_available() else ', no GPU visible'),
             f'  c++ compiler: {_first_line([os.environ.get("CXX", "c++"), "--version"])}',
             f'  nvcc: {_first_line(["nvcc", "--version"])}',
             f'  ninja: {_first_line(["ninja", "--version"])}',
             f'  GANINV_OPS={os.environ.get("GANINV_OPS", "") or "(unset: auto)"}  '
             f'GANINV_JIT={os.environ.get("GANINV_JIT", "") or "(unset: 1)"}  '
             f'TORCH_CUDA_ARCH_LIST={os.environ.get("TORCH_CUDA_ARCH_LIST", "") or "(unset)"}  '
             f'GANINV_SELFTEST={os.environ.get("GANINV_SELFTEST", "") or "(unset: 1)"}']
    try:
        import ganinv_core._C as c
        lines.append(f'  extension: {c.__file__}')
        if _linking.exports_libstdcxx(c.__file__):
            lines.append('  ! the extension exports its own (static) copy of libstdc++: an error message can crash '
                         'the process; reinstall it (setup.py keeps such a copy private; docs/kernels.md)')
    except ImportError as e:
        lines.append(f'  extension: ganinv_core._C not importable ({e})')
    lines.append(f'  kernel sources: {_ext.csrc_dir() or "not installed"};  JIT cache: {_jit.cache_root()}')
    lines.append('  device  op                backend  reason')
    try:
        choice = _backend.requested('doctor')
    except ValueError as e:
        choice = 'auto'
        lines.append(f'  ! {e}')
    for dev in _devices():
        ok, reason = _ext.available(dev.split()[0])
        checked = ok and choice != 'ref' and _selftest.enabled()
        checks = _selftest.results(dev.split()[0]) if checked else {}
        for op in _selftest.CASES:
            passed, detail = checks.get(op, (True, ''))
            usable = ok and passed
            backend = 'ref' if choice == 'ref' else ('ext' if usable else ('ERROR' if choice == 'ext' else 'ref'))
            why = ('GANINV_OPS=ref' if choice == 'ref' else reason if not ok else
                   f'self-test FAILED: {detail}' if not passed else
                   f'self-test passed: {detail}' if checked else 'self-test off (GANINV_SELFTEST=0)')
            lines.append(f'  {dev.split()[0]:<7} {op:<17} {backend:<8} {why}')
    if _jit._FAILED:
        lines.append('  remembered build failures (delete the FAILED file or set GANINV_REBUILD=1 to retry):')
        lines += [f'    {msg}' for msg in _jit._FAILED.values()]
    return '\n'.join(lines)


if __name__ == '__main__':
    print(doctor_report())
    sys.exit(0)
