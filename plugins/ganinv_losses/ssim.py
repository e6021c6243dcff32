"""Structural dissimilarity 1 - SSIM (Gaussian window 11, sigma 1.5) over known windows."""
from ganinv_core.hooks import Loss, Param
from ganinv_core.metrics import ssim


class SSIM(Loss):
    name = 'ssim'
    help = '1 - SSIM (Gaussian window, over windows made of known pixels only)'
    params = (Param('window', int, 11, 'side of the Gaussian window (odd)'),)

    def forward(self, ctx):
        """[N] 1 - mean SSIM."""
        return 1 - ssim(ctx.pred, ctx.target, ctx.mask, self.window)
