"""Numeric precision of a run: fp32, tf32, bf16, fp16 (with dynamic loss scaling) or auto.

- ``fp32``: everything float32, TF32 off.
- ``tf32``: float32 tensors, TF32 matmuls/convolutions on (Ampere and newer).
- ``bf16``: the generator's fp16 blocks (its top ``num_fp16_res`` resolutions) in bfloat16, on any device; the
  losses under bfloat16 autocast (VGG's feature normalisation and distance stay float32); TF32 on for what stays
  float32 (the low-resolution blocks: 512-channel convolutions, a sixth of the FLOPs but, in true float32 on
  CUDA cores, over half of the convolutions' time, benchmarks/roofline.py).
- ``fp16``: the generator's own fp16 blocks (``force_fp32=False``, CUDA only, as NVIDIA's), the losses under
  float16 autocast, and dynamic loss scaling so small gradients survive; a step with non-finite gradients is
  skipped on the device. TF32 on for the float32 blocks, as in ``bf16``.
- ``auto``: the fastest one known to be accurate: ``tf32`` on CUDA devices of compute capability >= 8.0,
  else ``fp32``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ('auto', 'fp32', 'tf32', 'bf16', 'fp16')


def resolve(precision: str, device: torch.device) -> str:
    """Turn ``auto`` into a concrete precision for ``device``; reject unknown names."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision: {precision!r} is not one of {", ".join(PRECISIONS)}')
    if precision != 'auto':
        return precision
    if device.type == 'cuda' and torch.cuda.get_device_capability(device)[0] >= 8:
        return 'tf32'
    return 'fp32'


@contextlib.contextmanager
def tf32_mode(enabled: bool):
    """Set TF32 for matmuls and cuDNN convolutions for the duration, restoring the previous flags."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@dataclass
class Precision:
    """What a resolved precision means for the loop."""
    name: str
    device: torch.device

    @property
    def force_fp32(self) -> bool:
        """Passed to ``G.synthesis``: only fp16 and bf16 run the generator's fp16 blocks in reduced precision."""
        return self.name not in ('fp16', 'bf16')

    @property
    def half_dtype(self) -> torch.dtype:
        """Passed to ``G.synthesis``: the dtype of its fp16 blocks when ``force_fp32`` is False."""
        return torch.bfloat16 if self.name == 'bf16' else torch.float16

    @property
    def loss_dtype(self) -> torch.dtype | None:
        return {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(self.name)

    def autocast(self, cache: bool = True):
        """Autocast context for the losses (a no-op for fp32/tf32); ``cache=False`` inside CUDA-graph capture."""
        if self.loss_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.loss_dtype, cache_enabled=cache)

    @property
    def tf32(self) -> bool:
        """TF32 convolutions/matmuls for float32 tensors: ``tf32``, and the float32 blocks of ``bf16`` / ``fp16``
        (TF32 keeps 10 mantissa bits: as many as fp16, more than bf16's 7, which the other blocks already use)."""
        return self.name in ('tf32', 'bf16', 'fp16')

    def mode(self):
        """Process-wide flags for the run (TF32 as ``tf32`` says), restored on exit."""
        return tf32_mode(self.tf32)


class LossScaler:
    """Dynamic loss scaling, kept on the device: x2 every ``interval`` good steps, /2 on overflow.

    Args:
        device: where the scale lives.
        enabled: False makes every method a pass-through (scale 1, always ok).
    """

    def __init__(self, device: torch.device, enabled: bool, init: float = 2.0 ** 16, interval: int = 200):
        self.enabled = enabled
        self.scale = torch.tensor(init if enabled else 1.0, device=device)
        self.good = torch.zeros((), device=device)
        self.interval = interval

    def unscale(self, params: list[torch.Tensor]) -> torch.Tensor | None:
        """Divide the gradients by the scale; return a 0-d bool "all finite" (None when disabled)."""
        if not self.enabled:
            return None
        grads = [p.grad for p in params if p.grad is not None]
        ok = torch.stack([g.isfinite().all() for g in grads]).all()
        inv = 1.0 / self.scale
        for g in grads:
            g.mul_(inv)
        # update the scale without leaving the device, in place (the tensors keep their addresses: graph-safe)
        good = torch.where(ok, self.good + 1, torch.zeros_like(self.good))
        grow = good >= self.interval
        self.scale.copy_(torch.where(ok, torch.where(grow, self.scale * 2, self.scale), self.scale / 2))
        self.good.copy_(torch.where(grow, torch.zeros_like(good), good))
        return ok

    def state(self) -> list[torch.Tensor]:
        """The tensors a step changes."""
        return [self.scale, self.good]
