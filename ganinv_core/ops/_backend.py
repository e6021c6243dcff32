"""Backend choice for the custom ops: the compiled kernels ('ext') or the PyTorch reference ('ref').

Rules, per call: `impl` ('auto' | 'ref' | 'ext'), else the GANINV_OPS environment variable (default
'auto'). 'ref' always takes the reference. 'ext' takes the compiled kernel for the tensor's device and
raises `ExtUnavailableError` when it cannot. 'auto' takes the compiled kernel when it is available for
the tensor's device and dtype, else the reference, with ONE warning per reason naming it.
"""
import os
import warnings

_CHOICES = ('auto', 'ref', 'ext')
_warned = set()


class BackendChoiceError(ValueError):
    """`impl` or GANINV_OPS holds something other than 'auto', 'ref' or 'ext'."""


def requested(op: str, impl=None) -> str:
    """The requested backend: `impl` if given, else GANINV_OPS, else 'auto'."""
    if impl is None:
        value = os.environ.get('GANINV_OPS', '').strip().lower() or 'auto'
        if value not in _CHOICES:
            raise BackendChoiceError(f'{op}: GANINV_OPS must be auto, ref or ext, got {value!r}')
        return value
    if impl not in _CHOICES:
        raise BackendChoiceError(f"{op}: impl must be 'auto', 'ref' or 'ext', got {impl!r}")
    return impl


def ext_status(x):
    """(ok, reason): can the compiled kernels run on tensor `x` (its device type and dtype)?"""
    from . import _ext
    dev = x.device.type
    ok, reason = _ext.available(dev)
    if ok and x.dtype not in _ext.DTYPES.get(dev, ()):
        names = ', '.join(str(d).replace('torch.', '') for d in _ext.DTYPES[dev])
        return False, f'the {dev} kernels take {names}, not {str(x.dtype).replace("torch.", "")}'
    return ok, reason


def resolve(op: str, x, impl=None) -> str:
    """Return 'ref' or 'ext' for one call of `op` on tensor `x` (see the module docstring)."""
    choice = requested(op, impl)
    if choice == 'ref':
        return 'ref'
    ok, reason = ext_status(x)
    if ok:
        return 'ext'
    if choice == 'ext':
        from ._ext import ExtUnavailableError
        raise ExtUnavailableError(f'{op}: the compiled kernels were requested (GANINV_OPS=ext / impl=ext) '
                                  f'but cannot run on {x.device.type}: {reason}')
    key = (x.device.type, reason)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f'ganinv.ops: using the slower reference path on {x.device.type}: {reason} '
                      f'(see `ganinv-run --doctor`; GANINV_OPS=ref silences this)', RuntimeWarning, stacklevel=3)
    return 'ref'
