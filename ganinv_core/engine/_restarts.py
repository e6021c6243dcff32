"""Restarts: each target optimised from K starting latents in one batch; the one with the lowest final loss is kept.

Start 0 is the projector's (w_avg); start k >= 1 is a random latent pulled towards the mean,
    w_k = w_avg + psi * (mapping(z_k) - w_avg),   z_k ~ N(0, I) drawn from (seed, index, k),
so the starts are distinct, reproducible faces of ordinary typicality (psi = 0.7, DGP's starts are similar). The
choice uses only the loss the run minimised (never the clean original), so it is valid when restoring real photos.
Rows of the batch are start-major: rows [k*N, (k+1)*N) are start k of the N targets.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ._result import InversionError, Result

MAX_RESTARTS = 64
PSI = 0.7
_STRIDE = 2 ** 32   # start k of image id i draws its numbers as image id i + k * 2**32 (ids below 2**32 stay apart)


def check(restarts, init) -> int:
    """``restarts`` as an int in [1, MAX_RESTARTS]; refuses ``init`` with more than one start."""
    if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or \
            not 1 <= restarts <= MAX_RESTARTS:
        raise InversionError(f'restarts: must be an integer in [1, {MAX_RESTARTS}], got {restarts!r}')
    if restarts > 1 and init is not None:
        raise InversionError('restarts: the starts are w_avg and random latents, so init cannot be given too; '
                             'use one or the other')
    return int(restarts)


def indices(ids: list[int], k: int) -> list[int]:
    """The image ids of all K starts, start-major (start 0 keeps the ids: a one-start run is unchanged)."""
    return [i + s * _STRIDE for s in range(k) for i in ids]


@torch.no_grad()
def starts(G, w_avg: torch.Tensor, seed: int, ids: list[int], k: int) -> torch.Tensor:
    """Starting latents [k*N, 1, w_dim], start-major: w_avg for start 0, random typical latents after."""
    n = len(ids)
    z = np.stack([np.random.default_rng([int(seed) & 0xFFFFFFFF, int(i), s]).standard_normal(G.z_dim)
                  for s in range(1, k) for i in ids])
    dev = w_avg.device
    w = G.mapping(torch.from_numpy(z).float().to(dev), None)[:, :1].float()
    w = w_avg + PSI * (w - w_avg)
    return torch.cat([w_avg.reshape(1, 1, -1).expand(n, 1, -1), w])


def choose(res: Result, n: int, k: int) -> Result:
    """The result of each target's start with the lowest final total loss, with what the starts gave in its
    metrics (``restarts``: ``losses``, ``chosen``, and ``psnr_vs_clean`` when the clean original is known) and every
    start's restoration in ``extra['restarts']`` ([K, N, C, H, W])."""
    final = torch.as_tensor(res.history['total'][-1]).reshape(k, n)                # [K, N]
    best = final.argmin(0)                                                         # [N]
    rows = best * n + torch.arange(n)

    def pick(t):
        return None if t is None else t[rows] if t.shape[0] == k * n else t

    metrics = []
    for i, r in enumerate(rows.tolist()):
        m = dict(res.metrics[r])
        info = {'losses': final[:, i].tolist(), 'chosen': int(best[i])}
        if 'vs_clean' in m:
            info['psnr_vs_clean'] = [res.metrics[s * n + i]['vs_clean']['psnr'] for s in range(k)]
        metrics.append(dict(m, restarts=info))
    return dataclasses.replace(
        res, images=pick(res.images), degraded=pick(res.degraded), targets=res.targets[:n],
        clean=None if res.clean is None else res.clean[:n], w=pick(res.w),
        noise={name: pick(v) for name, v in res.noise.items()},
        history={name: v[:, rows.numpy()] for name, v in res.history.items()}, metrics=metrics,
        mask=pick(res.mask), extra=dict(res.extra, restarts={'images': res.images.reshape(k, n, *res.images.shape[1:]),
                                                            'losses': final, 'chosen': best}))
