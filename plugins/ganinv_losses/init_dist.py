"""Temporal prior: squared distance of w to the latent the run started from (a video's previous frame)."""
import torch

from ganinv_core.hooks import Loss


class InitDist(Loss):
    """weight * ||w - w_init||^2 per image (mean over the rows of a W+ latent): stay near the start.

    ``ganinv-run`` adds it to every video frame after the first, which starts from the previous frame's latent
    (``--temporal`` sets its weight): the face changes only as much as the footage asks. With ``--init`` it keeps
    the restoration near the given latent. Zero where no start is known.
    """
    name = 'init-dist'
    help = '||w - w_init||^2 (mean over W+ rows): stay near the starting latent (video frames: the previous one)'
    cuda_graph_safe = True
    default_weight = 0.01

    def forward(self, ctx):
        """w, w_init [N,K,D] -> [N] mean_k sum_d (w - w_init)^2."""
        if ctx.w_init is None:
            return torch.zeros(ctx.w.shape[0], device=ctx.w.device)
        return (ctx.w - ctx.w_init.to(ctx.w.dtype)).square().sum(-1).reshape(ctx.w.shape[0], -1).mean(1)
