"""Initial-latent search (DGP's initialisation): each target starts from the best of K candidate latents under the
run's own loss, found with K forward passes and no optimisation.

The candidates are the restarts' starts (``_restarts.starts``): w_avg, then K - 1 random latents of ordinary
typicality drawn from (seed, target, k), so a search is reproducible and its first candidate is the plain start.
Only the loss the run minimises is used (never the clean original): valid on real photos.
"""
from __future__ import annotations

import numpy as np
import torch

from . import _restarts
from ._result import InversionError

MAX_CANDIDATES = 1024


def check(k, init, restarts: int) -> int:
    """``k`` as an int in [1, MAX_CANDIDATES]; refuses a search with ``init`` or with restarts."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_CANDIDATES:
        raise InversionError(f'init_search: must be an integer in [1, {MAX_CANDIDATES}], got {k!r}')
    if k > 1 and init is not None:
        raise InversionError('init_search: searches for the starting latent, so init cannot be given too')
    if k > 1 and restarts > 1:
        raise InversionError('init_search: restarts already start from several latents; use one or the other')
    return int(k)


@torch.no_grad()
def best_starts(probe, G, k: int, seed: int, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per target, the candidate with the lowest loss.

    Args:
        probe: an ``Inversion`` of the targets with the run's degradations, losses, noise and precision.
        k: candidates per target.

    Returns:
        (w [N, 1, w_dim] on the probe's device; losses [K, N], every candidate's total loss, and best [N], the
        chosen candidate, on the CPU).
    """
    n = probe.n
    cand = _restarts.starts(G, probe.w_avg, seed, ids, k).reshape(k, n, 1, -1)
    losses = torch.stack([probe.evaluate(c) for c in cand]).float().cpu()   # [K, N]
    if not torch.isfinite(losses).any(0).all():
        raise InversionError('init_search: every candidate of a target gave a non-finite loss')
    best = torch.nan_to_num(losses, nan=float('inf')).argmin(0)
    return cand[best.to(cand.device), torch.arange(n, device=cand.device)], losses, best
