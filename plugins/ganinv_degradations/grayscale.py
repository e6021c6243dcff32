"""Colourisation: luminance (YIQ's Y row), replicated to 3 channels."""
import torch

from ganinv_core.hooks import Degradation

YIQ_Y = (0.299, 0.587, 0.114)


class Grayscale(Degradation):
    """Luminance with YIQ's Y row, the same value in all three channels."""
    name = 'grayscale'
    help = 'luminance Y = 0.299 R + 0.587 G + 0.114 B, replicated to 3 channels (colourisation)'

    def forward(self, x):
        """[N,3,H,W] -> [N,3,H,W]; the weights sum to 1, so [-1, 1] maps into [-1, 1]."""
        y = torch.einsum('nchw,c->nhw', x, x.new_tensor(YIQ_Y)).unsqueeze(1)
        return y.repeat(1, x.shape[1], 1, 1)
