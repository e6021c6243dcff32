"""The generator configuration a network file carries, checked before anything is built from it.

The file is untrusted and its configuration sets the sizes of everything the Generator allocates. So every known key
is checked for type and range first: a bad value is a one-line WeightsError naming it, not a ZeroDivisionError deep
in the constructor, a value that builds but fails at the first step (``conv_clamp='x'``), or an allocation as large
as the file asks for. The bounds are a few times StyleGAN2's largest published configuration (config-f: 512
channels and w_dim, 1024², 8 mapping layers). Keys not listed here are left to the Generator, which refuses unknown
ones.
"""
import math

from ..ops import ACTIVATIONS
from ._errors import WeightsError


def _int(lo, hi):
    return lambda v: type(v) is int and lo <= v <= hi, f'an integer in [{lo}, {hi}]'


def _number(lo, hi=math.inf):
    return (lambda v: type(v) in (int, float) and lo < v <= hi,
            f'a number in ({lo}, {hi}]' if hi < math.inf else f'a number > {lo}')


def _optional(check):
    test, what = check
    return lambda v: v is None or test(v), f'null or {what}'


def _one_of(*values):
    return lambda v: v in values, 'one of ' + ', '.join(map(repr, values))


_POW2 = (lambda v: type(v) is int and 4 <= v <= 4096 and v & (v - 1) == 0, 'a power of 2 in [4, 4096]')
_FILTER = (lambda v: isinstance(v, list) and 1 <= len(v) <= 16
           and all(type(t) in (int, float) and math.isfinite(t) for t in v), 'a list of 1 to 16 finite numbers')
_BOOL = (lambda v: type(v) is bool, 'true or false')

SCHEMA = {
    '': {'z_dim': _int(1, 2048), 'c_dim': _int(0, 2048), 'w_dim': _int(1, 2048), 'img_resolution': _POW2,
         'img_channels': _int(1, 4)},
    'mapping_kwargs': {'num_layers': _int(1, 32), 'embed_features': _optional(_int(1, 2048)),
                       'layer_features': _optional(_int(1, 2048)), 'activation': _one_of(*ACTIVATIONS),
                       'lr_multiplier': _number(0), 'w_avg_beta': _optional(_number(0, 1))},
    'synthesis_kwargs': {'channel_base': _int(1, 2 ** 24), 'channel_max': _int(1, 2048),
                         'num_fp16_res': _int(0, 13), 'conv_clamp': _optional(_number(0)),
                         'architecture': _one_of('orig', 'skip', 'resnet'), 'resample_filter': _FILTER,
                         'use_noise': _BOOL, 'fp16_channels_last': _BOOL},
}
REQUIRED = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels')


def check_config(cfg) -> None:
    """Raise WeightsError for the first key of ``cfg`` (ADA-nested Generator kwargs) outside ``SCHEMA``'s range.

    Raises:
        WeightsError: ``'generator configuration: <key>=<value> must be <what>'`` (no path: the caller adds it).
    """
    if not isinstance(cfg, dict) or any(k not in cfg for k in REQUIRED):
        raise WeightsError(f'generator configuration: expected a dict with {", ".join(REQUIRED)}')
    for group, checks in SCHEMA.items():
        values = cfg if not group else cfg.get(group) or {}
        if not isinstance(values, dict):
            raise WeightsError(f'generator configuration: {group} must be a dict, got {type(values).__name__}')
        for key, (test, what) in checks.items():
            if key in values and not test(values[key]):
                name = f'{group}.{key}' if group else key
                raise WeightsError(f'generator configuration: {name}={values[key]!r} must be {what}')
