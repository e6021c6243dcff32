"""NVIDIA network pickles (stylegan2-ada-pytorch and stylegan3's StyleGAN2) -> (config, state dict)."""
import collections
import logging

import numpy as np
import torch

from ._errors import UnsupportedNetworkError, WeightsError
from ._unpickle import PersistentStub, TFNetworkStub, safe_load_pickle

# Classes that may appear inside a StyleGAN2 G_ema (both code bases).
G_CLASSES = frozenset({'Generator', 'MappingNetwork', 'SynthesisNetwork', 'SynthesisBlock', 'SynthesisLayer',
                       'ToRGBLayer', 'FullyConnectedLayer', 'Conv2dLayer'})
# Only in StyleGAN3's alias-free generator (training.networks_stylegan3).
SG3_CLASSES = frozenset({'SynthesisInput'})
_log = logging.getLogger(__name__)
_G_ARGS = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'mapping_kwargs', 'synthesis_kwargs')


def _plain(v):
    """JSON-friendly copy of a pickled config value: EasyDicts / OrderedDicts / tuples / numpy scalars -> JSON-friendly python values."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _a(v) -> str:
    """``'a list'``, ``'an int'``: the type of ``v`` with its article, for messages."""
    name = type(v).__name__
    return f'{"an" if name[0] in "aeiou" else "a"} {name}'


def _walk(stub, prefix, state_dict, classes):
    """Collect the parameters and buffers of a stub tree under NVIDIA's dotted names.

    Args:
        stub: a `PersistentStub`; prefix: its dotted name plus '.' ('' for G_ema);
        state_dict: filled in place; classes: filled with the class names met.

    Raises:
        WeightsError: a parameter that is not a tensor or a child that is not a persistent module.
    """
    classes.add(stub.class_name)
    st = stub.state
    for group in ('_parameters', '_buffers', '_modules'):
        if not isinstance(st.get(group) or {}, dict):
            raise WeightsError(f'{prefix}{group} is {_a(st[group])}, not a dict')
    for group in ('_parameters', '_buffers'):
        for k, v in (st.get(group) or {}).items():
            if v is not None:
                if not isinstance(v, torch.Tensor):
                    raise WeightsError(f'{prefix}{k} is {_a(v)}, not a tensor')
                state_dict[prefix + k] = v.detach().contiguous()
    for k, child in (st.get('_modules') or {}).items():
        if isinstance(child, PersistentStub):
            _walk(child, f'{prefix}{k}.', state_dict, classes)
        elif child is not None:
            raise WeightsError(f'{prefix}{k} is {_a(child)}, not a network module')


def _config(g_stub):
    """ADA-nested Generator kwargs from the G stub's `_init_args` / `_init_kwargs` (nested or flat).

    Raises:
        WeightsError: malformed kwargs, or one of z_dim, c_dim, w_dim, img_resolution, img_channels missing.
    """
    args = _plain(g_stub.state.get('_init_args') or [])
    kwargs = _plain(g_stub.state.get('_init_kwargs') or {})
    if not isinstance(kwargs, dict) or not isinstance(args, list) or len(args) > len(_G_ARGS):
        raise WeightsError('G_ema has malformed _init_args / _init_kwargs')
    kwargs.update(zip(_G_ARGS, args))
    cfg = {k: kwargs.pop(k) for k in _G_ARGS[:5] if k in kwargs}
    missing = [k for k in _G_ARGS[:5] if k not in cfg]
    if missing:
        raise WeightsError(f'G_ema._init_kwargs lacks {", ".join(missing)}')
    for group in ('mapping_kwargs', 'synthesis_kwargs'):
        if not isinstance(kwargs.get(group) or {}, dict):
            raise WeightsError(f'G_ema._init_kwargs.{group} is {_a(kwargs[group])}, not a dict')
    cfg['mapping_kwargs'] = dict(kwargs.pop('mapping_kwargs', None) or {})
    synthesis = dict(kwargs.pop('synthesis_kwargs', None) or {})
    synthesis.update(kwargs)  # stylegan3 repo: synthesis kwargs passed flat
    cfg['synthesis_kwargs'] = synthesis
    return cfg


def read_nvidia_pickle(path):
    """Read `G_ema` of an NVIDIA network pickle safely.

    The layout (stylegan2-ada-pytorch or stylegan3) and the sha256 of the embedded (never run) source are
    logged at INFO level for provenance.

    Args:
        path: the pickle file.

    Returns:
        (init_kwargs: ADA-nested dict, state_dict: {name: tensor}).

    Raises:
        WeightsError: unreadable / refused file, no G_ema, malformed network.
        UnsupportedNetworkError: StyleGAN3 or TensorFlow networks (conditional ones: `load_generator`).
    """
    data = safe_load_pickle(path)
    if isinstance(data, tuple) and any(isinstance(x, TFNetworkStub) for x in data):
        raise UnsupportedNetworkError(f'{path}: TensorFlow StyleGAN2 pickles are not supported; convert it with '
                                      "NVIDIA's stylegan2-ada-pytorch `legacy.py --source ... --dest ...` first")
    if not isinstance(data, dict):
        raise WeightsError(f'{path}: not an NVIDIA network pickle (top level is {_a(data)}, '
                           'expected a dict with G_ema)')
    g = data.get('G_ema')
    if not isinstance(g, PersistentStub):
        raise WeightsError(f'{path}: no G_ema network in the pickle (keys: {", ".join(map(str, data))})')
    state_dict, classes = collections.OrderedDict(), set()
    try:
        _walk(g, '', state_dict, classes)
    except WeightsError as e:
        raise WeightsError(f'{path}: G_ema: {e}') from None
    if classes & SG3_CLASSES or 'synthesis.input.affine.weight' in state_dict:
        raise UnsupportedNetworkError(f'{path}: StyleGAN3 (alias-free) generators are not supported; '
                                      'use a StyleGAN2 network')
    if g.class_name != 'Generator' or not classes <= G_CLASSES:
        raise WeightsError(f'{path}: G_ema is not a StyleGAN2 generator (classes: {", ".join(sorted(classes))})')
    if g.version != 6:
        raise WeightsError(f'{path}: unknown persistence format version {g.version!r} (expected 6)')
    try:
        cfg = _config(g)
    except WeightsError as e:
        raise WeightsError(f'{path}: {e}') from None
    layout = 'stylegan2-ada-pytorch' if 'synthesis_kwargs' in (g.state.get('_init_kwargs') or {}) else 'stylegan3'
    _log.info('%s: G_ema from a %s pickle, module_src sha256 %s', path, layout, g.src_sha256)
    return cfg, state_dict
