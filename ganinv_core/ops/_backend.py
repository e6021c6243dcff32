"""Backend choice for the custom ops: the compiled kernels ('ext') or the PyTorch reference ('ref').

Rules, per call: `impl` ('auto' | 'ref' | 'ext'), else the GANINV_OPS environment variable (default
'auto'). 'ref' always takes the reference. 'ext' takes the compiled kernel for the tensor's device and
raises `ExtUnavailableError` when it cannot. 'auto' takes the compiled kernel when it is available for
the tensor's device and dtype, else the reference, with ONE warning per reason naming it.

Under `torch.compile` the choice is a constant of the traced graph: `_choose` runs eagerly while
tracing (loading the kernels, or warning, there), so a graph never contains the loading machinery.
"""
import warnings

import torch

from . import _ext, _selftest
from ._fast import device_type, getenv

_CHOICES = ('auto', 'ref', 'ext')
_warned = set()


class BackendChoiceError(ValueError):
    """`impl` or GANINV_OPS holds something other than 'auto', 'ref' or 'ext'."""


def requested(op: str, impl=None) -> str:
    """The requested backend.

    Args:
        op: the op's name, for error messages.
        impl: 'auto', 'ref', 'ext', or None to read GANINV_OPS (unset or empty: 'auto').

    Returns:
        'auto', 'ref' or 'ext'.

    Raises:
        BackendChoiceError: `impl` or GANINV_OPS is not one of the three.
    """
    if impl is None:
        value = getenv('GANINV_OPS').strip().lower() or 'auto'
        if value not in _CHOICES:
            raise BackendChoiceError(f'{op}: GANINV_OPS must be auto, ref or ext, got {value!r}')
        return value
    if impl not in _CHOICES:
        raise BackendChoiceError(f"{op}: impl must be 'auto', 'ref' or 'ext', got {impl!r}")
    return impl


def ext_status(dev: str, dtype, op: str = ''):
    """Whether the compiled kernels (of `op`, when given) can run on device type `dev` with `dtype`.

    Returns:
        (ok, reason): `reason` is '' when ok, else one phrase saying why not.
    """
    ok, reason = _ext.available(dev)
    if ok and dtype not in _ext.DTYPES.get(dev, ()):
        names = ', '.join(str(d).replace('torch.', '') for d in _ext.DTYPES[dev])
        return False, f'the {dev} kernels take {names}, not {str(dtype).replace("torch.", "")}'
    if ok and op:
        failed = _selftest.failure(dev, op)
        if failed:
            return False, (f'the {op} kernels failed their self-test against the reference ({failed}; '
                           f'GANINV_SELFTEST=0 skips the check)')
    return ok, reason


@torch.compiler.assume_constant_result
def _choose(op: str, choice: str, dev: str, dtype) -> str:
    if choice == 'ref':
        return 'ref'
    ok, reason = ext_status(dev, dtype, op)
    if ok:
        return 'ext'
    if choice == 'ext':
        raise _ext.ExtUnavailableError(f'{op}: the compiled kernels were requested (GANINV_OPS=ext / impl=ext) '
                                  f'but cannot run on {dev}: {reason}')
    if (dev, reason) not in _warned:
        _warned.add((dev, reason))
        warnings.warn(f'ganinv.ops: using the slower reference path on {dev}: {reason} '
                      f'(see `ganinv-run --doctor`; GANINV_OPS=ref silences this)', RuntimeWarning, stacklevel=4)
    return 'ref'


def resolve(op: str, x, impl=None) -> str:
    """The backend for one call of `op` on tensor `x` (see the module docstring).

    Args:
        op: the op's name, for messages.
        x: the op's input tensor (its device type and dtype decide).
        impl: 'auto', 'ref', 'ext', or None to follow GANINV_OPS.

    Returns:
        'ref' or 'ext'.

    Raises:
        BackendChoiceError: a bad `impl` or GANINV_OPS.
        ExtUnavailableError: 'ext' was requested but the kernels cannot run on `x`.
    """
    choice = requested(op, impl)
    if choice == 'ref':
        return 'ref'
    if torch.compiler.is_compiling():   # traced once: no memo inside a graph
        return _choose(op, choice, x.device.type, x.dtype)
    dev = device_type(x)
    key = (op, choice, getenv('GANINV_SELFTEST'), dev, x.dtype)
    status, checked = _ext._status.get(dev), _selftest._results.get(dev)
    hit = _memo.get(key)
    if hit is not None and hit[0] is status and hit[1] is checked:
        return 'ext'
    backend = _choose(op, choice, dev, x.dtype)
    # kept only if the state it was drawn from did not change meanwhile (another thread may finish the self-test or
    # a load during the choice: the answer would then be from the state before, the memo's key objects from after)
    if (backend == 'ext' and status is not None and status is _ext._status.get(dev)
            and checked is _selftest._results.get(dev) and (checked is not None or not _selftest.enabled())):
        _memo[key] = (status, checked)
    return backend


# (op, requested backend, GANINV_SELFTEST, device type, dtype) -> the (availability, self-test outcome) objects an
# 'ext' answer was drawn from. At batch 1 the full choice costs as much as a small kernel launch, so a call whose
# inputs and state are unchanged (the same objects: a retried build or a reset self-test replaces them) skips it.
# Only 'ext' is kept: a 'ref' answer may owe a warning, and 'ref' by request is already cheap.
_memo = {}
