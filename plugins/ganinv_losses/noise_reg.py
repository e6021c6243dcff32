"""NVIDIA's noise regulariser: squared lag-1 autocorrelations of every noise map over a pyramid down to 8x8."""
import torch
import torch.nn.functional as F

from ganinv_core.hooks import Loss
from ganinv_core.ops import noise_autocorr


class NoiseReg(Loss):
    name = 'noise-reg'
    help = "NVIDIA projector's multi-scale noise autocorrelation penalty"
    cuda_graph_safe = True
    default_weight = 1e5

    def forward(self, ctx):
        """[N] sum over maps and pyramid levels of mean(n * roll_x(n))^2 + mean(n * roll_y(n))^2.

        Each map n [N,1,R,R] contributes at R, R/2, ... (2x2 average pooling) while R > 8, then at the first
        R <= 8. All maps at one resolution (own or pooled) are stacked on the channel axis: one set of
        kernels per level (`ops.noise_autocorr`: one compiled kernel forward and one backward).
        """
        levels = {}
        for n in ctx.noise:
            levels.setdefault(n.shape[-1], []).append(n)
        reg = ctx.pred.new_zeros(ctx.pred.shape[0])
        while levels:
            r = max(levels)
            x = torch.cat(levels.pop(r), 1)                                        # [N, K, r, r]
            reg = reg + noise_autocorr(x).square().sum((1, 2))
            if r > 8:
                levels.setdefault(r // 2, []).append(F.avg_pool2d(x, 2))
        return reg
