"""Read NVIDIA StyleGAN2 network pickles without executing anything they contain.

`torch_utils.persistence` pickles every network module as
`_reconstruct_persistent_obj(dict(type, version, module_src, class_name, state))`; loading normally `exec`s
`module_src`. Here that global maps to a `PersistentStub` that only keeps the class name and state, and every
other global must be on a short allow-list (reference doc §4.3); anything else is refused by name.
"""
import codecs
import collections
import hashlib
import io
import pickle

import numpy as np
import torch

from .._errors import exc_line
from ._errors import WeightsError


class EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict`: a dict with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


class TFNetworkStub(EasyDict):
    """Stand-in for `dnnlib.tflib.network.Network` (TensorFlow-era pickles); holds its state only."""

    def __setstate__(self, state):
        self.update(state)


class PersistentStub:
    """What a persistent module becomes: its class name, version, `__dict__` and the sha256 of its source."""

    def __init__(self, meta):
        if not isinstance(meta, dict) or not isinstance(meta.get('state'), dict):
            raise pickle.UnpicklingError('malformed persistent object (no state dict)')
        self.class_name = str(meta.get('class_name'))
        self.version = meta.get('version')
        self.state = meta['state']
        src = meta.get('module_src')
        self.src_sha256 = hashlib.sha256(src.encode('utf-8')).hexdigest() if isinstance(src, str) else None

    def __repr__(self):
        return f'PersistentStub({self.class_name})'


def _np_scalar(dtype, data=None):
    """`numpy.core.multiarray.scalar` for plain numeric dtypes only (NVIDIA's numpy.float64 attributes)."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError(f'numpy scalar of dtype {dtype!r} is not allowed')
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_reconstruct(cls, shape, typecode):
    """`numpy.core.multiarray._reconstruct`, restricted to plain `numpy.ndarray`."""
    if cls is not np.ndarray:
        raise pickle.UnpicklingError('numpy _reconstruct of a class other than numpy.ndarray')
    return np.ndarray.__new__(np.ndarray, shape, typecode)


def _codecs_encode(text, encoding='utf-8'):
    """`_codecs.encode` as protocol-2 pickles use it for bytes: latin-1 only."""
    if encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError(f'_codecs.encode with encoding {encoding!r} is not allowed')
    return codecs.encode(text, encoding)


def _load_storage(data):
    """A storage serialised by `torch.save` (legacy format); read with torch's own weights-only unpickler."""
    return torch.load(io.BytesIO(data), weights_only=True, map_location='cpu')


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, *extra):
    """torch's tensor rebuild, dropping pickled backward hooks and metadata."""
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad, hooks):
    """torch's Parameter rebuild, dropping pickled backward hooks."""
    return torch._utils._rebuild_parameter(data, requires_grad, collections.OrderedDict())


ALLOWED = {
    'torch_utils.persistence._reconstruct_persistent_obj': PersistentStub,  # module_src hashed, never exec'd
    'torch.storage._load_from_bytes': _load_storage,
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor_v2,
    'torch._utils._rebuild_parameter': _rebuild_parameter,
    'collections.OrderedDict': collections.OrderedDict,
    'builtins.set': set,
    'builtins.frozenset': frozenset,
    'dnnlib.util.EasyDict': EasyDict,
    'numpy.core.multiarray.scalar': _np_scalar,
    'numpy._core.multiarray.scalar': _np_scalar,
    'numpy.dtype': np.dtype,
    'numpy.core.multiarray._reconstruct': _np_reconstruct,
    'numpy._core.multiarray._reconstruct': _np_reconstruct,
    'numpy.ndarray': np.ndarray,
    '_codecs.encode': _codecs_encode,
    'dnnlib.tflib.network.Network': TFNetworkStub,
}


class BlockedGlobalError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class SafeUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves globals only through `ALLOWED` and has no persistent ids."""

    def find_class(self, module, name):
        """The allow-listed stand-in for `module.name`; BlockedGlobalError for anything else."""
        key = f'{module}.{name}'
        if key not in ALLOWED:
            raise BlockedGlobalError(key)
        return ALLOWED[key]

    def persistent_load(self, pid):
        """Refuse persistent ids (a `torch.save` stream is not a network pickle)."""
        raise pickle.UnpicklingError('persistent ids are not used by NVIDIA network pickles')


def safe_load_pickle(path):
    """Unpickle `path` with `SafeUnpickler`.

    Args:
        path: the pickle file.

    Returns:
        The top-level object, with persistent modules as `PersistentStub`s.

    Raises:
        WeightsError: refused global, truncated / corrupt data.
    """
    with open(path, 'rb') as fp:
        try:
            return SafeUnpickler(fp).load()
        except BlockedGlobalError as e:
            raise WeightsError(f'{path}: refused: the pickle names the global {e.args[0]!r}, which is not on the '
                               'allow-list of NVIDIA network pickles (nothing in it was run)') from None
        except EOFError:
            raise WeightsError(f'{path}: truncated pickle (unexpected end of file)') from None
        except WeightsError:
            raise
        except Exception as e:  # noqa: BLE001 -- any parse failure of untrusted data is one line
            raise WeightsError(f'{path}: not a readable network pickle ({exc_line(e)})') from None
