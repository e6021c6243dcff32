"""Latent prior: squared distance of w to the mean latent."""
from ganinv_core.hooks import Loss


class LatentDist(Loss):
    """Latent prior: weight * ||w - w_avg||^2 per image.

    The weight is the exercise's ``latent_dist_reg_weight``: 0.001 by default, 0.5 for colourisation and 0.7
    for inpainting (``--loss latent-dist:weight=0.7``).
    """
    name = 'latent-dist'
    help = '||w - w_avg||^2 (mean over the rows of a W+ latent); 0.5 suits colourisation, 0.7 inpainting'
    cuda_graph_safe = True
    default_weight = 0.001

    def forward(self, ctx):
        """w [N,K,D], w_avg broadcastable -> [N] mean_k sum_d (w - w_avg)^2."""
        return (ctx.w - ctx.w_avg.to(ctx.w.dtype)).square().sum(-1).reshape(ctx.w.shape[0], -1).mean(1)
