"""ganinv's built-in losses, registered through the ``ganinv`` entry-point group like any plugin."""
from ganinv_core.hooks import hookimpl

from .identity import Identity
from .init_dist import InitDist
from .latent_dist import LatentDist
from .noise_reg import NoiseReg
from .pixel import L1, MSE
from .ssim import SSIM
from .vgg16 import VGG16
from .w_cosine import WCosine

__all__ = ['Identity', 'InitDist', 'L1', 'LatentDist', 'MSE', 'NoiseReg', 'SSIM', 'VGG16', 'WCosine', 'ganinv_losses']


@hookimpl
def ganinv_losses():
    """The nine built-in loss classes."""
    return [VGG16, MSE, L1, SSIM, Identity, LatentDist, InitDist, WCosine, NoiseReg]
