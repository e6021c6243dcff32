"""W+ prior: the rows of a W+ latent kept pointing the same way (BRGM's cosine-similarity prior)."""
import torch.nn.functional as F

from ganinv_core.hooks import Loss


class WCosine(Loss):
    """Mean over pairs of rows i != j of 1 - cos(w_i, w_j), per image: 0 for a W latent (all rows equal), up to 2.

    W+ gives each layer its own row; free rows reach images G never makes (faces that fit the target but break
    apart). This term pulls the rows towards one direction without tying their lengths, as BRGM's does.
    """
    name = 'w-cosine'
    help = 'W+ rows kept colinear: mean over row pairs of 1 - cos(w_i, w_j) (BRGM\'s prior); 0 for a W latent'
    cuda_graph_safe = True
    default_weight = 0.01

    def forward(self, ctx):
        """w [N,K,D] -> [N] (sum of the K x K cosine matrix minus its diagonal) / (K (K - 1)), subtracted from 1."""
        n, k = ctx.w.shape[:2]
        if k == 1:
            return ctx.w.new_zeros(n)
        u = F.normalize(ctx.w.float(), dim=-1)
        cos = u @ u.transpose(1, 2)                                  # [N, K, K], ones on the diagonal
        return 1 - (cos.sum((1, 2)) - k) / (k * (k - 1))
