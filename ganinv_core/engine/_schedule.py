"""The projector's learning-rate and w-noise schedules (reference doc §1.2, step 9).

Both are precomputed for the whole run in float64 and moved to the device once, so the loop indexes a device
tensor instead of feeding Python floats to the optimiser every step.
"""
from __future__ import annotations

import math

import numpy as np
import torch

LR_RAMPUP = 0.05          # fraction of the run spent ramping the learning rate up from 0
LR_RAMPDOWN = 0.25        # fraction of the run spent on the final cosine ramp down
NOISE_FACTOR = 0.05       # initial w-noise scale, relative to w_std
NOISE_RAMP = 0.75         # fraction of the run after which the w-noise is 0


def lr_at(t: float, lr: float = 0.1, rampup: float = LR_RAMPUP, rampdown: float = LR_RAMPDOWN) -> float:
    """Learning rate at run fraction ``t = step / steps``.

    lr(t) = lr * min(1, t/rampup) * (1/2 - 1/2 cos(pi * min(1, (1-t)/rampdown)))
    """
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(math.pi * ramp)
    return lr * ramp * min(1.0, t / rampup)


def w_noise_at(t: float, w_std: float, factor: float = NOISE_FACTOR, ramp: float = NOISE_RAMP) -> float:
    """Scale of the Gaussian noise added to w at run fraction ``t``: w_std * factor * max(0, 1 - t/ramp)^2."""
    return w_std * factor * max(0.0, 1.0 - t / ramp) ** 2


def schedule(steps: int, w_std: float, lr: float = 0.1, device: torch.device | str = 'cpu'
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole run's schedules.

    Args:
        steps: number of optimisation steps (> 0).
        w_std: the scalar spread of the mapped w samples.
        lr: peak learning rate.
        device: where the tensors live.

    Returns:
        ``(lrs [steps], w_noise [steps])`` float32 tensors on ``device``.
    """
    ts = [s / steps for s in range(steps)]
    lrs = np.array([lr_at(t, lr) for t in ts], dtype=np.float64)
    noise = np.array([w_noise_at(t, w_std) for t in ts], dtype=np.float64)
    return (torch.tensor(lrs, dtype=torch.float32, device=device),
            torch.tensor(noise, dtype=torch.float32, device=device))
