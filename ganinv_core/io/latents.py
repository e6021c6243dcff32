"""projected_w.npz: a restoration's latent and noise buffers, enough to re-render it exactly.

Keys: ``w`` [1, num_ws, w_dim] float32 (NVIDIA's projector key and shape; its ``generate.py`` reads it),
``noise.<layer>`` [1, 1, R, R] float32 per noise layer (e.g. ``noise.b4.conv1``), ``latent_space`` ('w'|'w+').
Re-render with ``G.synthesis(w, noise_mode='const', noise={layer: buf}, force_fp32=True)``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from .._errors import exc_line
from .outputs import write_npz


class LatentFileError(ValueError):
    """A latent file cannot be used (one line: the file and the reason)."""


def save_latent(path: str | Path, w: torch.Tensor, noise: dict, latent_space: str) -> None:
    """Write one image's latent: ``w`` [1|num_ws...] and noise {layer: [1,1,R,R]} (tensors or arrays)."""
    arrays = {'w': np.asarray(w, dtype=np.float32).reshape(1, *np.shape(w)[-2:]),
              'latent_space': np.array(latent_space)}
    arrays.update({f'noise.{k}': np.asarray(v, dtype=np.float32).reshape(1, 1, *np.shape(v)[-2:])
                   for k, v in noise.items()})
    write_npz(path, arrays)


def load_latent(path: str | Path) -> dict:
    """Read a latent file (ours, or NVIDIA's ``projected_w.npz`` with only ``w``).

    Returns:
        ``{'w': float32 [N, rows, w_dim], 'noise': {layer: float32 [N,1,R,R]}}`` (noise may be empty).
    """
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise LatentFileError(f'{path}: a single array (.npy format), not an .npz archive holding "w"')
        with f:
            if 'w' not in f.files:
                raise LatentFileError(f'{path}: no array "w" in this .npz (keys: {", ".join(f.files) or "none"})')
            w = f['w'].astype(np.float32)
            noise = {k[len('noise.'):]: f[k].astype(np.float32) for k in f.files if k.startswith('noise.')}
    except LatentFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise LatentFileError(f'{path}: not a readable .npz ({exc_line(e)})') from None
    if w.ndim == 2:
        w = w[:, None]
    if w.ndim != 3:
        raise LatentFileError(f'{path}: "w" has shape {w.shape}, expected [N, num_ws, w_dim]')
    return {'w': w, 'noise': noise}


@torch.no_grad()
def render_latent(G, latent: dict) -> torch.Tensor:
    """G's image [N,3,H,W] in [-1,1] for a ``load_latent`` dict (constant noise where none is stored)."""
    dev = next(iter(G.parameters())).device
    w = torch.as_tensor(latent['w'], device=dev)
    w = w.expand(-1, G.synthesis.num_ws, -1) if w.shape[1] == 1 else w
    noise = {k: torch.as_tensor(v, device=dev) for k, v in latent['noise'].items()} or None
    return G.synthesis(w, noise_mode='const', noise=noise, force_fp32=True).float()
