"""ganinv's built-in degradations, registered through the ``ganinv`` entry-point group like any plugin."""
from ganinv_core.hooks import hookimpl

from .blur import Blur
from .downsample import Downsample
from .grayscale import Grayscale
from .inpaint import Inpaint
from .noise import Noise

__all__ = ['Blur', 'Downsample', 'Grayscale', 'Inpaint', 'Noise', 'ganinv_degradations']


@hookimpl
def ganinv_degradations():
    """The five built-in degradation classes."""
    return [Grayscale, Inpaint, Blur, Downsample, Noise]
