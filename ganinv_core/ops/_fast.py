"""Cheap reads for the per-call path of the ops: the environment switches (GANINV_OPS, GANINV_SELFTEST) and a
tensor's device type.

At batch 1 a small op's host cost is a few microseconds of dispatcher and launch, so its Python wrapper must not
add more. Two standard reads cost more than they should there: `os.environ.get` answers a name that is not set
by raising and catching a KeyError inside the mapping (~1.8 us), and `tensor.device` builds a device object
(~0.45 us). On POSIX, `os.environ` keeps its values encoded in a plain dict (`os.environ._data`) that every
assignment through the mapping (monkeypatch included) updates; reading it directly costs ~0.1 us. Elsewhere, or
if CPython ever changes that, the public mapping is read.
"""
import os

_ENVIRON = os.environ
_DATA = getattr(os.environ, '_data', None)
_RAW = os.name == 'posix' and isinstance(_DATA, dict) and all(isinstance(k, bytes) for k in list(_DATA)[:1])
# the per-call names, encoded once (fixed at import: nothing here mutates state, so torch.compile traces it whole)
_KEYS = {name: os.fsencode(name) for name in ('GANINV_OPS', 'GANINV_SELFTEST')}


def getenv(name: str, default: str = '') -> str:
    """`os.environ.get(name, default)`, without the cost of a miss."""
    if not _RAW or os.environ is not _ENVIRON:   # no raw dict, or os.environ itself replaced (a test's mock)
        return os.environ.get(name, default)
    key = _KEYS.get(name)
    value = _DATA.get(os.fsencode(name) if key is None else key)
    return default if value is None else os.fsdecode(value)


def device_type(x) -> str:
    """`x.device.type` ('cpu', 'cuda', ...), from the tensor's flags where they answer."""
    return 'cuda' if x.is_cuda else 'cpu' if x.is_cpu else x.device.type
