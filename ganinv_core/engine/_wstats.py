"""W statistics: mean and scalar spread of 10,000 mapped samples, as the projector computes them.

``z ~ RandomState(123).randn(10000, z_dim)``; ``w = G.mapping(z, None)[:, 0]``;
``w_avg = mean(w)`` [w_dim]; ``w_std = sqrt(sum((w - w_avg)^2) / N)`` (one scalar: the root of the total
variance). Cached on disk per network under ``$GANINV_CACHE`` (default ``~/.cache/ganinv``) in ``wstats/``,
keyed by a hash of the mapping network's state and the generator's configuration.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

SAMPLES = 10_000
SEED = 123


def cache_dir() -> Path:
    """The ganinv cache folder: ``$GANINV_CACHE`` or ``~/.cache/ganinv``."""
    return Path(os.environ.get('GANINV_CACHE') or Path.home() / '.cache' / 'ganinv')


def network_hash(G: torch.nn.Module) -> str:
    """sha256 over the mapping network's tensors (names, shapes, dtypes, bytes) and ``G.init_kwargs``."""
    h = hashlib.sha256(json.dumps(getattr(G, 'init_kwargs', {}), sort_keys=True, default=str).encode())
    for name, t in sorted(G.mapping.state_dict().items()):
        t = t.detach().to('cpu').contiguous()
        h.update(f'{name}:{tuple(t.shape)}:{t.dtype}'.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()[:32]


@torch.no_grad()
def compute_w_stats(G: torch.nn.Module, samples: int = SAMPLES, chunk: int = 2500) -> tuple[np.ndarray, float]:
    """Map ``samples`` latents from RandomState(123) and reduce them.

    Returns:
        ``(w_avg [w_dim] float32, w_std float)``.
    """
    if getattr(G, 'c_dim', 0):
        raise ValueError(f'generator: conditional networks (c_dim={G.c_dim}) are not supported')
    z = np.random.RandomState(SEED).randn(samples, G.z_dim)
    dev = next(iter(G.parameters())).device
    ws = [G.mapping(torch.from_numpy(z[i:i + chunk]).to(dev, torch.float32), None)[:, 0].float().cpu().numpy()
          for i in range(0, samples, chunk)]
    w = np.concatenate(ws).astype(np.float32)
    w_avg = np.mean(w, axis=0)
    w_std = float(np.sum((w - w_avg) ** 2) / samples) ** 0.5
    return w_avg.astype(np.float32), w_std


def w_stats(G: torch.nn.Module, use_cache: bool = True) -> tuple[np.ndarray, float]:
    """``compute_w_stats`` through the on-disk cache (an unreadable cache entry is recomputed).

    Returns:
        ``(w_avg [w_dim] float32, w_std float)``.
    """
    if not use_cache:
        return compute_w_stats(G)
    path = cache_dir() / 'wstats' / f'{network_hash(G)}.npz'
    try:
        with np.load(path, allow_pickle=False) as f:
            return f['w_avg'].astype(np.float32), float(f['w_std'])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):   # missing or damaged: recompute
        pass
    w_avg, w_std = compute_w_stats(G)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix='.tmp.npz')
        with os.fdopen(fd, 'wb') as f:
            np.savez(f, w_avg=w_avg, w_std=np.float64(w_std))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs recomputation
    return w_avg, w_std
