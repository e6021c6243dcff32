"""Colourisation: luminance (YIQ's Y row), replicated to 3 channels."""
import functools

import torch

from ganinv_core.hooks import Degradation
from ganinv_core.metrics import LUMA as YIQ_Y


@functools.lru_cache(maxsize=8)
def _weights(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """YIQ_Y on ``device``, made once (no host-to-device copy per step: CUDA-graph safe)."""
    return torch.tensor(YIQ_Y, dtype=dtype, device=device)


class Grayscale(Degradation):
    """Luminance with YIQ's Y row, the same value in all three channels."""
    name = 'grayscale'
    help = 'luminance Y = 0.299 R + 0.587 G + 0.114 B, replicated to 3 channels (colourisation)'
    cuda_graph_safe = True
    affine = True

    def forward(self, x):
        """[N,3,H,W] -> [N,3,H,W]; the weights sum to 1, so [-1, 1] maps into [-1, 1]."""
        y = torch.einsum('nchw,c->nhw', x, _weights(x.device, x.dtype)).unsqueeze(1)
        return y.repeat(1, x.shape[1], 1, 1)
