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
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from . import _latents, _precision, _schedule, _wstats
from ._adam import Adam
from ._pipeline import build_losses, pipeline
from ._report import image_metrics


class InversionError(ValueError):
    """The optimisation cannot run or produced non-finite values (one line, naming what and why)."""


@dataclass
class Progress:
    """What a callback sees, after ``step`` of ``steps`` optimisation steps (step 0: before the first).

    Attributes:
        losses: {term: [N] float array} at this step (None at step 0); ``'total'`` included.
        rate: steps per second so far.
        render: () -> [N,3,H,W] float tensor in [-1,1], the current restoration (no w-noise).
    """
    step: int
    steps: int
    losses: dict | None
    rate: float
    render: Callable[[], torch.Tensor]


@dataclass
class Result:
    """The outcome of ``invert`` (all tensors on the CPU).

    Attributes:
        images: [N,3,H,W] restored images in [-1, 1] (G of the final latent and noise).
        degraded: [N,3,h,w] the restorations passed through the degradation pipeline.
        targets: [N,3,h,w] the (degraded) targets.
        clean: [N,3,H,W] clean originals, when known.
        w: [N,num_ws,w_dim] final latents (W runs have identical rows).
        noise: {layer: [N,1,R,R]} final noise buffers.
        history: {term: [steps, N]} weighted loss per step, ``'total'`` included.
        metrics: one dict per image (losses, psnr/ssim/lpips, speed).
        latent_space, steps, seed, precision: how it ran.
        wall_time: seconds in the loop; steps_per_second: steps / wall_time.
    """
    images: torch.Tensor
    degraded: torch.Tensor
    targets: torch.Tensor
    clean: torch.Tensor | None
    w: torch.Tensor
    noise: dict
    history: dict
    metrics: list
    latent_space: str
    steps: int
    seed: int
    precision: str
    wall_time: float
    steps_per_second: float
    mask: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def latent(self, i: int) -> dict:
        """Image ``i``'s latent as arrays: ``w`` [1,num_ws,w_dim] and ``noise.<layer>`` [1,1,R,R]."""
        out = {'w': self.w[i:i + 1].numpy()}
        out.update({f'noise.{k}': v[i:i + 1].numpy() for k, v in self.noise.items()})
        return out


def _as_images(x, name: str, device: torch.device) -> torch.Tensor:
    """uint8 [N,H,W,C] array or float [N,C,H,W] tensor in [-1,1] -> float32 [N,C,H,W] on ``device``."""
    if isinstance(x, np.ndarray) and x.dtype == np.uint8:
        x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
    x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or not x.is_floating_point():
        raise InversionError(f'{name}: expected float [N,C,H,W] in [-1,1] or uint8 [N,H,W,C], got {tuple(x.shape)} {x.dtype}')
    return x.to(device, torch.float32)


def invert(G, targets, *, degradations: Iterable = (), losses: Iterable | None = None, steps: int = 1000,
           latent_space: str = 'w', optimize_noise: bool = True, lr: float = 0.1, init: dict | None = None,
           seed: int = 303, precision: str = 'fp32', callbacks: Sequence[Callable[[Progress], None]] = (),
           clean=None, indices: Sequence[int] | None = None, log_every: int = 10,
           report_steps: Iterable[int] = (), w_stats: tuple | None = None, lpips_vgg=None, device=None) -> Result:
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
        device: default: G's device.

    Returns:
        A ``Result``.

    Raises:
        InversionError: bad arguments, or a loss that became NaN/inf (naming the step and images).
    """
    if not isinstance(steps, int) or steps < 1:
        raise InversionError(f'steps: must be a positive integer, got {steps!r}')
    device = torch.device(device) if device is not None else next(iter(G.parameters())).device
    try:
        prec = _precision.Precision(_precision.resolve(precision, device), device)
        pipe = pipeline(degradations).to(device)
        terms = build_losses(losses)
    except ValueError as e:
        raise InversionError(str(e)) from e
    terms = [t.to(device) for t in terms]
    target = _as_images(targets, 'targets', device)
    n, res = target.shape[0], G.img_resolution
    want = pipe.output_size(res)
    if target.shape[1:] != (G.img_channels, want, want):
        raise InversionError(f'targets: shape {tuple(target.shape[1:])} does not match the degraded '
                             f'generator output {(G.img_channels, want, want)}')
    clean_t = _as_images(clean, 'clean', device) if clean is not None else None
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    if len(indices) != n:
        raise InversionError(f'indices: {len(indices)} ids for {n} targets')

    w_avg, w_std = w_stats if w_stats is not None else _wstats.w_stats(G)
    w_avg = torch.as_tensor(np.asarray(w_avg), dtype=torch.float32, device=device).reshape(-1)
    gens = [_latents.image_generator(seed, i, device) for i in indices]
    try:
        lat = _latents.Latents(G, n, w_avg, latent_space, optimize_noise, gens, init)
    except ValueError as e:
        raise InversionError(str(e)) from e
    lrs, sigmas = _schedule.schedule(steps, float(w_std), lr, device)
    mask = pipe.mask(torch.zeros(n, G.img_channels, res, res, device=device))
    names = [t.name for t in terms]
    weights = torch.tensor([float(getattr(t, 'weight', 1.0)) for t in terms], device=device)
    from ganinv_core.hooks import LossContext
    with prec.autocast():
        for t in terms:
            t.prepare(target, mask)

    opt = Adam(lat.params)
    scaler = _precision.LossScaler(device, prec.name == 'fp16')
    hist = torch.zeros(steps, n, len(terms) + 1, device=device)
    report = set(int(s) for s in report_steps) | {steps}
    synth = lambda ws, force=True: G.synthesis(ws, noise_mode='const', noise=lat.noise, force_fp32=force)

    @torch.no_grad()
    def render() -> torch.Tensor:
        return synth(lat.ws()).float()

    def call(step: int, losses_now, rate: float) -> None:
        p = Progress(step, steps, losses_now, rate, render)
        for cb in callbacks:
            cb(p)

    call(0, None, 0.0)
    last, t0 = 0, time.perf_counter()
    with prec.mode():
        for step in range(steps):
            w = lat.w + lat.w_noise(step) * sigmas[step]
            img = synth(lat.ws(w), prec.force_fp32)
            with prec.autocast():
                ctx = LossContext(pred=pipe(img), target=target, mask=mask, image=img, w=lat.w,
                                  w_avg=w_avg, w_std=w_std, noise=list(lat.noise.values()))
                per = torch.stack([t(ctx).float().reshape(n) for t in terms], 1) * weights    # [N, K]
            total = per.sum(1)
            hist[step] = torch.cat([per, total[:, None]], 1).detach()
            (total.sum() * scaler.scale).backward()
            opt.step(lrs[step], scaler.unscale(lat.params))
            opt.zero_grad()
            lat.renormalise()
            done = step + 1
            if done % log_every == 0 or done in report:
                chunk = hist[last:done].cpu()
                _check_finite(chunk, last, names)
                last = done
                rate = done / max(time.perf_counter() - t0, 1e-9)
                call(done, {k: chunk[-1, :, j].numpy() for j, k in enumerate(names + ['total'])}, rate)
        wall = time.perf_counter() - t0
        if not all(torch.isfinite(p).all() for p in lat.params):
            raise InversionError('latents: became NaN/inf during the optimisation')
        with torch.no_grad():
            images = render()
            degraded = pipe(images)
    history = {k: hist[:, :, j].cpu().numpy() for j, k in enumerate(names + ['total'])}
    rate = steps / max(wall, 1e-9)
    vgg = lpips_vgg if lpips_vgg is not None else next((t.vgg for t in terms if getattr(t, 'vgg', None) is not None), None)
    metrics = image_metrics(images, degraded, target, clean_t, mask, history, rate, wall, vgg)
    return Result(images=images.cpu(), degraded=degraded.cpu(), targets=target.cpu(),
                  clean=None if clean_t is None else clean_t.cpu(),
                  w=lat.ws().detach().cpu().contiguous(), noise={k: v.detach().cpu() for k, v in lat.noise.items()},
                  history=history, metrics=metrics, latent_space=latent_space, steps=steps, seed=seed,
                  precision=prec.name, wall_time=wall, steps_per_second=rate,
                  mask=None if mask is None else mask.cpu())


def _check_finite(chunk: torch.Tensor, first: int, names: list[str]) -> None:
    """Raise on the first non-finite loss in ``chunk`` [steps, N, K+1] (step numbers from ``first``)."""
    bad = ~torch.isfinite(chunk)
    if bad.any():
        s, _, k = (int(v) for v in bad.nonzero()[0])
        imgs = sorted(set(int(i) for i in bad[s].any(1).nonzero()[:, 0]))
        term = (names + ['total'])[k]
        raise InversionError(f'step {first + s}: loss {term!r} is not finite for image(s) {imgs}; '
                             'try precision fp32 or a lower learning rate')
