"""Adam with a device-tensor learning rate and an optional device-side skip flag (no host sync).

Matches ``torch.optim.Adam`` (same update order and bias corrections); the lr lives on the device so the
schedule never leaves it, and ``ok`` lets fp16 loss scaling drop a step with non-finite gradients without
asking the host.
"""
from __future__ import annotations

import torch


class Adam:
    """Adam over a fixed list of tensors.

    Args:
        params: leaf tensors with ``requires_grad``.
        betas: moment decay rates.
        eps: denominator epsilon.
    """

    def __init__(self, params: list[torch.Tensor], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self, lr: torch.Tensor, ok: torch.Tensor | None = None) -> None:
        """One update; ``lr`` is a 0-d device tensor; ``ok`` (0-d bool) skips the step when False."""
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = (1 - self.b2 ** self.t) ** 0.5
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            if g is None:
                continue
            m1 = m * self.b1 + g * (1 - self.b1)
            v1 = v * self.b2 + g * g * (1 - self.b2)
            # p -= (lr / c1) * m / (sqrt(v) / c2 + eps), exactly torch.optim.Adam's formula
            p1 = p - (lr / c1) * m1 / (v1.sqrt() / c2 + self.eps)
            if ok is not None:
                m1, v1, p1 = (torch.where(ok, a, b) for a, b in ((m1, m), (v1, v), (p1, p)))
            m.copy_(m1)
            v.copy_(v1)
            p.copy_(p1)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
