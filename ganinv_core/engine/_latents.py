"""The optimised variables of a batch: one latent and one set of noise buffers per image.

Each image draws its random numbers (initial noise, then the per-step w-noise in chunks) from its own
``torch.Generator`` seeded from ``(seed, image index)``, so an image's trajectory does not depend on the
other images of its batch.
"""
from __future__ import annotations

import numpy as np
import torch

LATENT_SPACES = ('w', 'w+')


def image_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """A generator seeded from ``(seed, index)`` through numpy's SeedSequence (well-mixed, reproducible)."""
    s = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(1, np.uint64)[0])
    return torch.Generator(device=device).manual_seed(s & 0x7FFF_FFFF_FFFF_FFFF)


class Latents:
    """Latents ``w`` [N, 1|num_ws, w_dim] and noise buffers {layer: [N, 1, R, R]} of a batch.

    Args:
        G: the generator (for ``num_ws``, ``w_dim`` and its noise layers).
        n: batch size.
        w_avg: [w_dim] starting latent.
        latent_space: ``'w'`` (one row broadcast to all layers) or ``'w+'`` (one row per layer).
        optimize_noise: optimise per-image noise buffers (initialised N(0, 1)); otherwise the generator's
            ``noise_const`` buffers are used, fixed.
        gens: one ``torch.Generator`` per image.
        init: optional ``{'w': [N|1, rows, w_dim], 'noise': {layer: [N|1, 1, R, R]}}`` to start from.
    """

    def __init__(self, G, n: int, w_avg: torch.Tensor, latent_space: str, optimize_noise: bool,
                 gens: list[torch.Generator], init: dict | None = None):
        if latent_space not in LATENT_SPACES:
            raise ValueError(f'latent_space: {latent_space!r} is not one of {", ".join(LATENT_SPACES)}')
        dev = w_avg.device
        self.num_ws = G.synthesis.num_ws if hasattr(G.synthesis, 'num_ws') else G.num_ws
        self.gens = gens
        rows = 1 if latent_space == 'w' else self.num_ws
        w = w_avg.reshape(1, 1, -1).repeat(n, rows, 1)
        init = init or {}
        if init.get('w') is not None:
            try:
                w = torch.as_tensor(init['w'], dtype=torch.float32, device=dev)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f'init: w must be an array of numbers, got {type(init["w"]).__name__}') from None
            w = _fit_w(w, n, rows, self.num_ws, w_avg.shape[-1])
        self.w = w.detach().clone().requires_grad_(True)
        self.w_init = w.detach().clone()   # where the run started (LossContext.w_init)
        self.layers = [name for name, _ in G.synthesis.noise_layers()]
        consts = dict(G.synthesis.named_buffers())
        self.noise: dict[str, torch.Tensor] = {}
        for name, res in G.synthesis.noise_layers():
            given = (init.get('noise') or {}).get(name)
            if given is not None:
                buf = torch.as_tensor(given, dtype=torch.float32, device=dev).reshape(-1, 1, res, res).expand(n, 1, res, res)
            elif optimize_noise:
                buf = torch.cat([torch.randn(1, 1, res, res, generator=g, device=dev) for g in gens])
            else:
                buf = consts[f'{name}.noise_const'].float().reshape(1, 1, res, res).expand(n, 1, res, res)
            self.noise[name] = buf.detach().clone().requires_grad_(optimize_noise)
        self.optimize_noise = optimize_noise
        self._chunk: torch.Tensor | None = None
        self._chunk_start = 0

    @property
    def params(self) -> list[torch.Tensor]:
        """The tensors the optimiser updates."""
        return [self.w] + (list(self.noise.values()) if self.optimize_noise else [])

    def w_noise(self, step: int, chunk: int = 64) -> torch.Tensor:
        """Unit Gaussian w-noise for ``step`` [N, rows, w_dim], drawn per image ``chunk`` steps at a time."""
        if self._chunk is None or not (self._chunk_start <= step < self._chunk_start + chunk):
            self._chunk_start = step - step % chunk
            shape = (chunk, 1) + tuple(self.w.shape[1:])
            self._chunk = torch.cat([torch.randn(shape, generator=g, device=self.w.device) for g in self.gens], 1)
        return self._chunk[step - self._chunk_start]

    def w_noise_all(self, steps: int, chunk: int = 64) -> torch.Tensor:
        """Every step's w-noise at once [steps, N, rows, w_dim]: the numbers ``w_noise`` would draw, in order.

        For a static step (CUDA graphs) that indexes the noise with a device step counter; consumes the
        per-image generators, so use either this or ``w_noise`` in one run.
        """
        shape = (chunk, 1) + tuple(self.w.shape[1:])
        n_chunks = -(-steps // chunk)
        return torch.cat([torch.cat([torch.randn(shape, generator=g, device=self.w.device) for g in self.gens], 1)
                          for _ in range(n_chunks)])[:steps]

    def ws(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """Broadcast a latent (default the current one) to [N, num_ws, w_dim]."""
        w = self.w if w is None else w
        return w.expand(-1, self.num_ws, -1)

    @torch.no_grad()
    def renormalise(self) -> None:
        """Each image's noise buffer to zero mean and unit (population) variance, as the projector does."""
        if not self.optimize_noise:
            return
        for buf in self.noise.values():
            buf -= buf.mean(dim=(1, 2, 3), keepdim=True)
            buf *= buf.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()


def _fit_w(w: torch.Tensor, n: int, rows: int, num_ws: int, w_dim: int) -> torch.Tensor:
    """Shape an initial latent [N|1, 1|num_ws, w_dim] into [n, rows, w_dim]."""
    if w.ndim == 2:
        w = w[:, None]
    if w.ndim != 3 or w.shape[0] not in (1, n) or w.shape[1] not in (1, num_ws) or w.shape[2] != w_dim:
        raise ValueError(f'init: latent of shape {tuple(w.shape)} does not fit [{n}|1, 1|{num_ws}, {w_dim}]')
    if rows == 1 and w.shape[1] > 1:
        if not torch.allclose(w, w[:, :1].expand_as(w)):
            raise ValueError('init: a W+ latent (rows differ) cannot start a W run; use latent_space="w+"')
        w = w[:, :1]
    return w.expand(n, rows, -1)
