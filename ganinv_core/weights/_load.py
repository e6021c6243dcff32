"""`load_generator` / `save_generator` / `convert`: every accepted source -> a Generator, and back to disk."""
import os

from .._devices import usable_device
from .._errors import exc_line
from . import _hub, _nvidia, _safetensors
from ._config import check_config
from ._errors import UnsupportedNetworkError, WeightsError
from ._random import RANDOM_NETWORKS, random_generator

_PICKLE_MAGIC = b'\x80'   # pickle protocol >= 2
_ZIP_MAGIC = b'PK\x03\x04'


def _sniff(path):
    """'pickle', 'safetensors' or a reason string for anything else."""
    with open(path, 'rb') as f:
        head = f.read(16)
    if not head:
        return 'the file is empty'
    if len(head) >= 9 and head[8:9] == b'{' and 8 + int.from_bytes(head[:8], 'little') <= os.path.getsize(path):
        return 'safetensors'  # u64 header length, then a JSON header
    if head[:1] == _PICKLE_MAGIC:
        return 'pickle'
    if head[:4] == _ZIP_MAGIC:
        return 'a zip archive (a torch.save checkpoint?), not an NVIDIA network pickle or .safetensors file'
    return 'neither an NVIDIA network pickle nor a .safetensors file'


def _build(cfg, state_dict, path):
    """Generator from ADA-nested config + NVIDIA-named state dict (resample_filter buffers optional)."""
    from ..nets import Generator
    try:
        check_config(cfg)
    except WeightsError as e:
        raise WeightsError(f'{path}: {e}') from None
    if cfg['c_dim']:
        raise UnsupportedNetworkError(f'{path}: conditional networks (c_dim={cfg["c_dim"]}) are not supported')
    try:
        G = Generator(**cfg)
    except (TypeError, ValueError, KeyError, ArithmeticError, RuntimeError) as e:
        raise WeightsError(f'{path}: unsupported generator configuration ({exc_line(e)})') from None
    own = G.state_dict()
    state = {k: v for k, v in state_dict.items() if not k.endswith('resample_filter')}
    missing = [k for k in own if k not in state and not k.endswith('resample_filter')]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise WeightsError(f'{path}: state does not match the configuration (missing: {missing[:3]}, '
                           f'unexpected: {unexpected[:3]})')
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise WeightsError(f'{path}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, '
                           f'expected {tuple(own[bad[0]].shape)}')
    G.load_state_dict(state, strict=False)
    return G


def _read(path):
    """(init_kwargs, state_dict) of a local pickle or safetensors file."""
    if not os.path.exists(path):
        raise WeightsError(f'{path}: no such file')
    if os.path.isdir(path):
        raise WeightsError(f'{path}: is a directory, not a network file')
    kind = _sniff(path)
    if kind == 'pickle':
        return _nvidia.read_nvidia_pickle(path)
    if kind == 'safetensors':
        return _safetensors.read(path)
    raise WeightsError(f'{path}: {kind}')


def _local_path(source):
    """A local file for a path, URL or short name (downloading if needed); WeightsError for unknown names."""
    source = os.fspath(source)
    if source in _hub.NETWORKS:
        return _hub.fetch(_hub.NETWORKS[source], label=source)
    if source.startswith(('http://', 'https://')):
        return _hub.fetch(source)
    if not os.path.exists(source) and os.sep not in source and '.' not in source:
        names = ', '.join([*_hub.NETWORKS, *RANDOM_NETWORKS])
        raise WeightsError(f'{source}: no such file and not a known network name (known: {names})')
    return source


def load_generator(source, device='cpu'):
    """Load a StyleGAN2 generator.

    Args:
        source: path to an NVIDIA `.pkl` or a ganinv `.safetensors`, a URL, a short name (see `NETWORKS`),
            or a built-in random network `random-32`, `random-64`, `random-256`, `random-1024`.
        device: where to put it.

    Returns:
        Generator in eval mode with requires_grad False.

    Raises:
        WeightsError: one line naming the file and the reason.
    """
    if isinstance(source, str) and source in RANDOM_NETWORKS:
        G = random_generator(source)
    else:
        path = _local_path(source)
        G = _build(*_read(path), path)
    return G.eval().requires_grad_(False).to(usable_device(device, 'device'))


def save_generator(G, path, overwrite=False):
    """Write `G` as `.safetensors` (state dict + `G.init_kwargs` in the metadata), atomically.

    Args:
        G: a `Generator` (anything with `init_kwargs` and a state dict).
        path: destination file.
        overwrite: replace an existing file.

    Raises:
        WeightsError: no init_kwargs, or the file exists and overwrite is False.
    """
    if not hasattr(G, 'init_kwargs'):
        raise WeightsError(f'{path}: cannot save a {type(G).__name__}: it has no init_kwargs')
    _safetensors.write(G.state_dict(), G.init_kwargs, path, overwrite=overwrite)


def convert(source, dest, overwrite=False):
    """Convert any `load_generator` source (e.g. an NVIDIA pickle) to a ganinv `.safetensors` file.

    Args:
        source: anything `load_generator` accepts.
        dest: the `.safetensors` file to write.
        overwrite: replace an existing file.

    Returns:
        dest.
    """
    if os.fspath(dest) == os.fspath(source):
        raise WeightsError(f'{dest}: the destination is the source file')
    save_generator(load_generator(source), dest, overwrite=overwrite)
    return dest


__all__ = ['load_generator', 'save_generator', 'convert']
