"""ganinv's built-in degradations, registered through the ``ganinv`` entry-point group like any plugin."""
from ganinv_core.hooks import hookimpl

from .blur import Blur
from .downsample import Downsample
from .grayscale import Grayscale
from .inpaint import Inpaint
from .jpeg import JPEG
from .noise import Noise

__all__ = ['Blur', 'Downsample', 'Grayscale', 'Inpaint', 'JPEG', 'Noise', 'ganinv_degradations']


@hookimpl
def ganinv_degradations():
    """The six built-in degradation classes."""
    return [Grayscale, Inpaint, Blur, Downsample, JPEG, Noise]
