"""ganinv: restore damaged face photos by StyleGAN2 inversion.

The public API, re-exported in one place (submodules with a leading underscore are private)::

    import ganinv_core as gi
    G = gi.load_generator('ffhq', device='cuda')
    result = gi.invert(G, targets, degradations=['grayscale'], steps=1000)

Sub-packages: `ops` (bias_act, upfirdn2d), `nets` (StyleGAN2, VGG16, ArcFace), `weights` (loading, conversion),
`hooks` (the plugin API), `engine` (the inversion loop), `io` (targets, outputs, alignment), `metrics`.
"""
import os

__version__ = '0.1.0'
# OpenMP's default busy-waiting makes small CPU workloads several times slower when cores are shared.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

_MIN_TORCH = (2, 4)


def _check_torch():
    try:
        import torch
    except ImportError:
        raise ImportError('ganinv needs PyTorch: install your build of torch first (CPU: pip install '
                          'torch==2.13.0), then pip install --no-build-isolation -e .') from None
    have = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2])
    if have < _MIN_TORCH:
        raise ImportError(f'ganinv needs torch >= {".".join(map(str, _MIN_TORCH))}, found {torch.__version__}')


_check_torch()

from . import metrics  # noqa: E402
from .engine import InversionError, Result, consistent, invert  # noqa: E402
from .hooks import (Degradation, LandmarkDetector, Loss, LossContext, Param, PluginError, SpecError,  # noqa: E402
                    format_plugin_list, get_registry, hookimpl)
from .nets import Generator, VGG16Features, load_arcface, load_vgg16  # noqa: E402
from .weights import WeightsError, convert, load_generator, save_generator  # noqa: E402

__all__ = ['__version__', 'load_generator', 'save_generator', 'convert', 'WeightsError', 'Generator',
           'VGG16Features', 'load_vgg16', 'load_arcface', 'invert', 'consistent', 'Result', 'InversionError',
           'Degradation', 'Loss',
           'LossContext', 'LandmarkDetector', 'Param', 'PluginError', 'SpecError', 'get_registry',
           'format_plugin_list', 'hookimpl', 'metrics']
