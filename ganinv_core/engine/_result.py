"""What the engine hands out: the result, progress reports and its error type; input checks."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch._subclasses.fake_tensor import is_fake


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
        step_mode: how the steps ran: ``'cuda graph'``, or ``'eager'`` / ``'static, eager'`` with the reason
            (e.g. ``"eager (auto: loss 'x' not marked cuda_graph_safe)"``).
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
    step_mode: str = ''

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
    # checked once, before the loop: a NaN would fail at the first step as if the run diverged, and 0-255 floats
    # would run to a meaningless end (a generator's raw output, which may pass [-1, 1] a little, is a valid target).
    # Where the input lies (usually the host), with one read of the result; not on a tensor traced without data
    # (benchmarks/roofline.py).
    if not is_fake(x):
        lo, hi = torch.stack(torch.aminmax(x)).tolist()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InversionError(f'{name}: contains NaN or inf')
        if lo < -16 or hi > 16:
            raise InversionError(f'{name}: values span [{lo:.3g}, {hi:.3g}]; expected [-1, 1] (a uint8 [N,H,W,C] '
                                 'array is converted for you)')
    return x.to(device, torch.float32)


def _check_finite(chunk: torch.Tensor, first: int, names: list[str]) -> None:
    """Raise on the first non-finite loss in ``chunk`` [steps, N, K+1] (step numbers from ``first``)."""
    bad = ~torch.isfinite(chunk)
    if bad.any():
        s, _, k = (int(v) for v in bad.nonzero()[0])
        imgs = sorted(set(int(i) for i in bad[s].any(1).nonzero()[:, 0]))
        term = (names + ['total'])[k]
        raise InversionError(f'step {first + s}: loss {term!r} is not finite for image(s) {imgs}; '
                             'try precision fp32 or a lower learning rate')
