"""Pivotal tuning (PTI, Roich et al. 2022): the rung past the latents on the expressivity ladder.

Once the latent search is done, each image's generator is fine-tuned around that image's latent (the pivot): the
synthesis network's weights take ``steps`` Adam steps at a small learning rate on the run's own loss (the same
degradations and terms, the latent and noise held fixed), so the degraded restoration can match the photo closer
than any latent of the frozen generator. PTI's recipe is LPIPS + L2 at lr 3e-4 for about 350 steps; add ``mse`` to
the losses for its L2 term.

Each image gets its own copy of G (the caller's is never changed), so a batch restores each photo as it would alone.
The copies run in ``auto`` precision (fp32 on a CPU, tf32 on a GPU) and eagerly: no CUDA graph, no loss scaling.
What tuning adds is fitted to the degraded photo only, so it can also fit its damage (noise, blocking); holes and
missing detail stay the generator's.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch

from ._result import InversionError

MAX_STEPS = 100_000


def check(steps, lr, restarts: int) -> int:
    """``steps`` as an int in [0, MAX_STEPS], ``lr`` > 0; tuning is refused with restarts (tune the chosen start in
    a run of its own, from its latent: ``init``)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 0 <= steps <= MAX_STEPS:
        raise InversionError(f'tune: must be an integer in [0, {MAX_STEPS}], got {steps!r}')
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise InversionError(f'tune_lr: must be a positive number, got {lr!r}')
    if steps and restarts > 1:
        raise InversionError('tune: not with restarts; tune the chosen start in a second run from its latent (init)')
    return int(steps)


def tune(inv, G, steps: int, lr: float, progress=None, keep: bool = False,
         **spec) -> tuple[torch.Tensor, list[dict], list]:
    """Fine-tune a copy of ``G`` per image of ``inv`` around its current latent and noise.

    Args:
        inv: the ``Inversion`` whose latent search is done.
        G: its generator (copied; left unchanged).
        steps, lr: Adam steps on the synthesis network's weights, and their learning rate.
        progress: called as ``progress(image, step)`` after each step (no host sync); it may raise to stop.
        keep: also return each image's tuned generator (on the CPU, frozen again); else an empty list.
        **spec: ``degradations``, ``losses``, ``seed``, ``w_stats``, ``modconv``: as the run's (each image keeps
            its id, ``inv.indices``).

    Returns:
        (images [N,C,R,R] float32 in [-1, 1] from the tuned copies; per image ``{'steps', 'lr', 'loss_before',
        'loss_after', 'seconds'}``, the total loss at the pivot before and after and the time its tuning took; the
        tuned generators, with ``keep``).
    """
    ws = inv.lat.ws().detach()
    noise = {k: v.detach() for k, v in inv.lat.noise.items()}
    ids = inv.indices
    images, info, kept = [], [], []
    for i in range(inv.n):
        t0 = time.perf_counter()
        one, opt = pivot(G, inv.target[i:i + 1], ws[i:i + 1], {k: v[i:i + 1] for k, v in noise.items()},
                         ids[i:i + 1], inv.device, lr, **spec)
        before = float(one.evaluate())
        for k in range(steps):
            step(one, opt)
            if progress is not None:
                progress(i, k + 1)
        after = float(one.evaluate())
        if not np.isfinite(after):
            raise InversionError(f'tune: image {i} (id {ids[i]}): the loss became {after} while tuning at lr {lr}; '
                                 'try a smaller tune_lr')
        images.append(one.render())
        info.append({'steps': steps, 'lr': lr, 'loss_before': before, 'loss_after': after,
                     'seconds': time.perf_counter() - t0})
        if keep:
            kept.append(one.G.requires_grad_(False).cpu())
        del one, opt
    return torch.cat(images), info, kept


def pivot(G, target, w, noise, ids, device, lr, **spec):
    """A one-image ``Inversion`` on a copy of ``G`` whose synthesis weights are trainable, at latent ``w``
    [1, num_ws, w_dim] and ``noise`` (held; None: the start's), and the Adam optimiser of those weights:
    ``(inversion, optimiser)``."""
    from ._inversion import Inversion
    Gi = copy.deepcopy(G).requires_grad_(False)
    one = Inversion(Gi, target, steps=1, latent_space='w+', precision='auto', device=device,
                    init={'w': w} | ({'noise': noise} if noise else {}), indices=ids, **spec)
    for p in one.lat.params:
        p.requires_grad_(False)
    return one, torch.optim.Adam([p.requires_grad_(True) for p in Gi.synthesis.parameters()], lr=lr)


def step(one, opt) -> None:
    """One tuning step: the run's loss at the pivot, backward into the copy's weights, Adam."""
    with one.prec.mode():
        loss = one._terms(one.lat.w, one.lat.w, cache=False).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
