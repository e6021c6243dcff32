"""The inversion loop: NVIDIA's projector, batched, with degradations, W/W+, per-image noise and precisions.

One step for the whole batch (reference doc §1.2, step 9):
    w_t   = w + n_t * sigma_t                (sigma_t: the w-noise ramp; n_t drawn per image)
    x     = G.synthesis(broadcast(w_t), noise=per-image buffers)
    L_i   = sum_k weight_k * loss_k(D(x)_i, y_i, ...)      (D: the degradation pipeline; y: the targets)
    Adam step on (w, noise) with lr_t; noise buffers renormalised per image.
Images never interact: the loss is a sum of per-image terms, Adam is elementwise, and each image's random
numbers come from its own generator, so image i's result equals a batch-of-one run with the same seed.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Sequence

import numpy as np

from . import _restarts, _search, _tune, _wstats
from ._inversion import Inversion
from ._result import InversionError, Progress, Result

__all__ = ['invert', 'Inversion', 'InversionError', 'Progress', 'Result']


def invert(G, targets, *, degradations: Iterable = (), losses: Iterable | None = None, steps: int = 1000,
           latent_space: str = 'w', optimize_noise: bool = True, lr: float = 0.1, init: dict | None = None,
           seed: int = 303, precision: str = 'fp32', callbacks: Sequence[Callable[[Progress], None]] = (),
           clean=None, indices: Sequence[int] | None = None, log_every: int = 10,
           report_steps: Iterable[int] = (), w_stats: tuple | None = None, lpips_vgg=None, arcface=None, device=None,
           modconv: str = 'auto', cuda_graph: bool | str = False, compile=False, channels_last: bool = False,
           polish: float = 0.0, restarts: int = 1, init_search: int = 1, tune: int = 0,
           tune_lr: float = 3e-4, on_tune: Callable[[int, int], None] | None = None,
           keep_tuned: bool = False) -> Result:
    """Find, for each target, the latent (and noise) whose degraded image matches it.

    Args:
        G: generator (``ganinv_core.nets.Generator``), left unchanged.
        targets: observed images, float [N,C,h,w] in [-1,1] or uint8 [N,h,w,C], at the pipeline's output size.
        degradations: Degradation modules or spec strings applied to G's image before the losses.
        losses: Loss modules or spec strings; None: ``vgg16``, ``latent-dist``, ``noise-reg``.
        steps: optimisation steps.
        latent_space: ``'w'`` or ``'w+'``.
        optimize_noise: optimise per-image noise buffers (else G's constant noise).
        lr: peak learning rate of the projector's schedule.
        init: ``{'w': [N|1, 1|num_ws, w_dim], 'noise': {layer: [N|1,1,R,R]}}`` to start from (else w_avg).
        seed: base seed; image i draws from a generator seeded with (seed, indices[i]).
        precision: ``fp32``, ``tf32``, ``bf16``, ``fp16`` or ``auto``.
        callbacks: called with a ``Progress`` at step 0, every ``log_every`` steps, at ``report_steps``
            and at the end.
        clean: optional clean originals [N,C,H,W] (simulation), for metrics.
        indices: per-image ids for seeding (default 0..N-1).
        log_every: steps between reads of the loss buffer (the only host syncs).
        report_steps: extra steps at which callbacks run (e.g. snapshots).
        w_stats: ``(w_avg [w_dim], w_std)`` to use instead of the cached statistics.
        lpips_vgg: VGG16Features for the LPIPS metric (default: the vgg16 loss's network, if any).
        arcface: ArcFace ``IResNet`` for the identity metric (default: the identity loss's network, if any; none:
            no identity metric).
        device: default: G's device.
        modconv, cuda_graph, compile, channels_last: speed options, see ``Inversion`` (equal results within float
            tolerance); ``cuda_graph='auto'`` captures the step on CUDA devices when every plugin of the run is
            ``cuda_graph_safe``.
        polish: with ``bf16`` / ``fp16``, the fraction of the steps, at the end, run in full precision (see
            ``Inversion``).
        restarts: optimise each target from this many starts at once (w_avg, then random latents pulled towards
            it) and keep, per target, the one with the lowest final loss; each image's metrics then hold
            ``restarts`` (every start's final loss, the chosen one, and their PSNR against ``clean`` when given)
            and ``Result.extra['restarts']['images']`` every start's restoration [K,N,C,H,W]. Callbacks see all
            K*N rows, start-major (rows 0..N-1 are the first start). Not with ``init``.
        init_search: evaluate this many starting latents per target (w_avg, then random latents pulled towards
            it, as ``restarts`` draws them) under the run's loss, with no optimisation, and start from the lowest
            (DGP's initialisation); each image's metrics then hold ``init_search`` (every candidate's loss and the
            one chosen). Not with ``init`` or ``restarts``.
        tune: pivotal tuning (PTI) after the latent search: this many Adam steps on the synthesis weights of a copy
            of G per image, at ``tune_lr``, on the run's loss with the latent held (see ``engine/_tune.py``). The
            images are the tuned copies'; ``w`` stays the pivot; each image's metrics hold ``tune`` (steps, lr,
            loss before and after, seconds). Not with ``restarts``.
        tune_lr: its learning rate (PTI's: 3e-4).
        on_tune: called as ``on_tune(image, step)`` after each tuning step (image in 0..N-1, step in 1..tune).
        keep_tuned: with ``tune``, ``Result.extra['tuned']`` holds each image's tuned generator (CPU, frozen), which
            renders its ``images`` from its ``w`` and ``noise``.

    Returns:
        A ``Result``.

    Raises:
        InversionError: bad arguments, or a loss that became NaN/inf (naming the step and images).
    """
    bad = next((cb for cb in callbacks if not callable(cb)), None)
    if bad is not None:
        raise InversionError(f'callbacks: {bad!r} is not callable')
    k = _restarts.check(restarts, init)
    tune = _tune.check(tune, tune_lr, k)
    searched = None
    if _search.check(init_search, init, k) > 1:   # a probe of the same targets, losses and noise: K forward passes
        probe = Inversion(G, targets, degradations=degradations, losses=losses, steps=1, latent_space=latent_space,
                          optimize_noise=optimize_noise, seed=seed, precision=precision, indices=indices,
                          w_stats=w_stats, device=device, modconv=modconv)
        ids = list(range(probe.n)) if indices is None else [int(i) for i in indices]
        w0, *searched = _search.best_starts(probe, G, int(init_search), seed, ids)
        init, probe = {'w': w0}, None
    if k > 1:   # K starts of every target in one batch, start-major
        import torch
        from ._result import _as_images
        targets = _as_images(targets, 'targets', torch.device('cpu'))
        n = targets.shape[0]
        ids = list(range(n)) if indices is None else [int(i) for i in indices]
        if len(ids) != n:
            raise InversionError(f'indices: {len(ids)} ids for {n} targets')
        w_avg = torch.as_tensor(np.asarray((w_stats or _wstats.w_stats(G))[0]), dtype=torch.float32)
        init = {'w': _restarts.starts(G, w_avg.to(next(iter(G.parameters())).device), seed, ids, k).cpu()}
        targets = targets.repeat(k, 1, 1, 1)
        clean = None if clean is None else _as_images(clean, 'clean', torch.device('cpu')).repeat(k, 1, 1, 1)
        indices = _restarts.indices(ids, k)
    inv = Inversion(G, targets, degradations=degradations, losses=losses, steps=steps, latent_space=latent_space,
                    optimize_noise=optimize_noise, lr=lr, init=init, seed=seed, precision=precision, clean=clean,
                    indices=indices, w_stats=w_stats, device=device, modconv=modconv, cuda_graph=cuda_graph,
                    compile=compile, channels_last=channels_last, polish=polish)
    report = set(int(s) for s in report_steps) | {steps}
    names = inv.names + ['total']

    def call(step: int, losses_now, rate: float) -> None:
        p = Progress(step, steps, losses_now, rate, inv.render)
        for cb in callbacks:
            cb(p)

    call(0, None, 0.0)
    last, t0 = 0, time.perf_counter()
    while inv.done < steps:
        nxt = min([s for s in report if s > inv.done] + [(inv.done // log_every + 1) * log_every])
        inv.run(nxt - inv.done)
        chunk = inv.losses(last)          # the only host sync: every log_every steps and at report steps
        last = inv.done
        call(inv.done, {k: chunk[-1, :, j].numpy() for j, k in enumerate(names)},
             inv.done / max(time.perf_counter() - t0, 1e-9))
    wall, images, tuned, gens = time.perf_counter() - t0, None, [], []
    if tune:   # the latents' wall time and rate stay theirs; each image's tuning time is in its metrics
        images, tuned, gens = _tune.tune(inv, G, tune, tune_lr, on_tune, keep_tuned, degradations=degradations,
                                         losses=losses, seed=seed, w_stats=(inv.w_avg.cpu().numpy(), inv.w_std),
                                         modconv=modconv)
    res = inv.result(wall, lpips_vgg, arcface, images=images)
    for m, t in zip(res.metrics, tuned):
        m['tune'] = t
    if keep_tuned and gens:
        res.extra['tuned'] = gens
    if searched is not None:
        tried, best = searched
        for i, m in enumerate(res.metrics):
            m['init_search'] = {'losses': tried[:, i].tolist(), 'chosen': int(best[i])}
    return _restarts.choose(res, res.images.shape[0] // k, k) if k > 1 else res
