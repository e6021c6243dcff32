"""Structural dissimilarity 1 - SSIM (Gaussian window 11, sigma 1.5) over known windows."""
from ganinv_core.hooks import Loss, Param
from ganinv_core.metrics import ssim


class SSIM(Loss):
    """Structural dissimilarity, 1 - SSIM per image (0 for identical images)."""
    name = 'ssim'
    help = '1 - SSIM (Gaussian window, over windows made of known pixels only)'
    cuda_graph_safe = True
    params = (Param('window', int, 11, 'side of the Gaussian window (odd)', bounds=(3, 255)),)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.window % 2 == 0:
            raise self.fail('window', 'must be odd')

    def forward(self, ctx):
        """[N] 1 - mean SSIM."""
        return 1 - ssim(ctx.pred, ctx.target, ctx.mask, self.window)
