"""Adam with a device-tensor learning rate, a device step counter and an optional device-side skip flag.

Matches ``torch.optim.Adam`` (same update order and bias corrections). Everything that changes from step to
step lives on the device (lr, step count), so a step never asks the host and can be captured in a CUDA graph.
On CPU and CUDA the update is PyTorch's fused Adam kernel (``torch._fused_adam_``, what ``torch.optim.Adam(
fused=True)`` runs): one pass that reads p, g, m, v and writes p, m, v, where the ``torch._foreach_*`` form (kept
for other devices, and as ``fused=False``) makes nine passes and two temporaries. ``ok`` lets fp16 loss scaling
drop a step with non-finite gradients without asking the host; a dropped step is not counted in the bias
corrections, as ``torch.optim.Adam`` under a ``GradScaler`` (which does not call ``step`` then).
"""
from __future__ import annotations

import torch


class Adam:
    """Adam over a fixed list of tensors.

    Args:
        params: leaf tensors with ``requires_grad``.
        betas: moment decay rates.
        eps: denominator epsilon.
        fused: the fused kernel (None: where it exists, i.e. every tensor on one CPU or CUDA device).
    """

    def __init__(self, params: list[torch.Tensor], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 fused: bool | None = None):
        self.params = list(params)
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        dev = self.params[0].device if self.params else torch.device('cpu')
        self.t = torch.zeros((), dtype=torch.float32, device=dev)     # steps taken, on the device (exact to 2^24)
        fusable = dev.type in ('cpu', 'cuda') and all(p.device == dev for p in self.params)
        if fused and not fusable:
            raise ValueError(f'Adam: fused=True needs every tensor on one CPU or CUDA device, got {dev}')
        self.fused = fusable if fused is None else bool(fused)

    def state(self) -> list[torch.Tensor]:
        """The tensors that change during a step (for snapshot / restore around CUDA-graph warm-up)."""
        return self.m + self.v + [self.t]

    @torch.no_grad()
    def step(self, lr: torch.Tensor, ok: torch.Tensor | None = None) -> None:
        """One update; ``lr`` is a 0-d device tensor; ``ok`` (0-d bool) skips the step when False."""
        self.t.add_(1)
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        ps, ms, vs = ([xs[i] for i in live] for xs in (self.params, self.m, self.v))
        gs = [ps[k].grad for k in range(len(live))]
        if self.fused:  # one call per dtype (the kernel takes one); found_inf = 1 leaves p, m and v as they were
            found = None if ok is None else (~ok).float()
            for dt in dict.fromkeys(p.dtype for p in ps):
                k = [j for j, p in enumerate(ps) if p.dtype == dt]
                torch._fused_adam_([ps[j] for j in k], [gs[j] for j in k], [ms[j] for j in k], [vs[j] for j in k],
                                   [], [self.t] * len(k), lr=lr, beta1=self.b1, beta2=self.b2, weight_decay=0.0,
                                   eps=self.eps, amsgrad=False, maximize=False, found_inf=found)
            if found is not None:
                self.t.sub_(found)   # a skipped step is not counted (as torch.optim.Adam under a GradScaler)
            return
        # bias corrections in float64 on the device: c1 = 1 - b1^t, c2 = sqrt(1 - b2^t)
        t = self.t.double()
        c1 = (1 - torch.pow(self.b1, t)).float()
        c2 = (1 - torch.pow(self.b2, t)).sqrt().float()
        if ok is not None:
            ms0, vs0, ps0 = ([x.clone() for x in xs] for xs in (ms, vs, ps))
        # m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= (lr/c1) m / (sqrt(v)/c2 + eps)
        torch._foreach_lerp_(ms, gs, 1 - self.b1)
        torch._foreach_mul_(vs, self.b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - self.b2)
        den = torch._foreach_sqrt(vs)
        torch._foreach_div_(den, c2)
        torch._foreach_add_(den, self.eps)
        upd = torch._foreach_div(ms, den)
        torch._foreach_mul_(upd, lr / c1)
        torch._foreach_sub_(ps, upd)
        if ok is not None:  # a skipped step leaves every tensor as it was, and is not counted
            for new, old in ((ms, ms0), (vs, vs0), (ps, ps0)):
                for a, b in zip(new, old):
                    a.copy_(torch.where(ok, a, b))
            self.t.sub_((~ok).float())

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
