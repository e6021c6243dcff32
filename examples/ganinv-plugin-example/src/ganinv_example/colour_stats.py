"""Match each channel's mean and standard deviation (a cheap colour-balance loss)."""
import torch

from ganinv_core.hooks import Loss, Param


def _stats(x, m):
    """Per-channel mean and std over known pixels: [N,C] each."""
    m = torch.ones_like(x[:, :1]) if m is None else m.to(x.dtype).expand(x.shape[0], 1, *x.shape[2:])
    n = m.sum((2, 3)).clamp(min=1)
    mu = (x * m).sum((2, 3)) / n
    var = ((x - mu[..., None, None]).square() * m).sum((2, 3)) / n
    return mu, (var + 1e-8).sqrt()


class ColourStats(Loss):
    """Per image, squared differences of each channel's mean and (weighted) standard deviation over known pixels."""
    name = 'colour-stats'
    help = 'squared differences of per-channel mean and std between prediction and target'
    default_weight = 0.1
    params = (Param('std_weight', float, 1.0, 'relative weight of the std term'),)

    def forward(self, ctx):
        """[N] sum_c (mu_p - mu_t)^2 + std_weight (s_p - s_t)^2."""
        (mp, sp), (mt, st) = _stats(ctx.pred, ctx.mask), _stats(ctx.target, ctx.mask)
        return ((mp - mt).square() + self.std_weight * (sp - st).square()).sum(1)
