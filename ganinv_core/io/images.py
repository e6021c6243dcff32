"""Targets in: image files read with Pillow, ``seed:N`` targets rendered by the generator, masks.

Every file is oriented by its EXIF tag, converted to 8-bit RGB (L, LA, RGBA, P, CMYK, 1, I;16, I, F),
centre-cropped to a square and resized with Lanczos. Any problem is an ``ImageError`` naming the file.
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .._errors import exc_line

EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.gif')
MAX_PIXELS = 100_000_000   # refuse larger images (decompression bombs) before decoding them
_SEED = re.compile(r'^seed:(\d+)$')


class ImageError(ValueError):
    """A target or mask cannot be used (one line: the file and the reason)."""


@dataclasses.dataclass
class Target:
    """One target of a run: an image file or ``seed:N``; ``error`` is set when it cannot be used."""
    name: str
    source: str
    seed: int | None = None
    error: str | None = None


def expand_targets(specs: list[str]) -> list[Target]:
    """Files, folders (their images, sorted) and ``seed:N`` -> targets with unique output names.

    A folder without images or a path that does not exist becomes a target carrying its error, so the
    rest of the batch still runs.
    """
    out: list[Target] = []
    for spec in specs:
        m, p = _SEED.match(spec), Path(spec)
        if m and int(m[1]) < 2 ** 32:
            out.append(Target(f'seed{int(m[1])}', spec, seed=int(m[1])))
            continue
        if spec.startswith('seed:') and not p.exists():
            out.append(Target('seed', spec, error=f'{spec}: a seed must be a whole number in [0, 2**32)'))
            continue
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in EXTENSIONS and f.is_file())
            if not files:
                out.append(Target(p.name or 'folder', spec,
                                  error=f'{spec}: folder has no images ({", ".join(EXTENSIONS)})'))
            out += [Target(f.stem, str(f)) for f in files]
        elif not p.exists():
            out.append(Target(p.stem or 'target', spec, error=f'{spec}: no such file or folder'))
        else:
            out.append(Target(p.stem, spec))
    seen: dict[str, int] = {}
    for t in out:  # a.png and a.jpg (or two folders' a.png) get a, a-2, ...
        k = seen[t.name] = seen.get(t.name, 0) + 1
        t.name = _safe(t.name) + (f'-{k}' if k > 1 else '')
    return out


def _safe(name: str) -> str:
    """A file-system-safe folder name (letters, digits, ``._-``)."""
    return re.sub(r'[^A-Za-z0-9._\-]+', '_', name).strip('.') or 'target'


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3), upright.

    Args:
        max_pixels: refuse larger images before decoding them (default ``MAX_PIXELS``).

    Raises:
        ImageError: missing, unreadable, truncated, or larger than ``max_pixels``.
    """
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter('always')   # Pillow's warnings on damaged metadata: recorded, not printed
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:
                    raise ImageError(f'{path}: {im.width}x{im.height} is larger than the limit of '
                                     f'{max_pixels} pixels')
                im = ImageOps.exif_transpose(im)
                rgb = _rgb(im)
        cut = next((str(w.message) for w in said if 'truncated' in str(w.message).lower()), None)
        if cut is not None:   # a TIFF whose strips end early decodes, with a warning, to a partly blank image
            raise ImageError(f'{path}: cannot decode (truncated: {cut})')
        return rgb
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f'{path}: no such file') from None
    except UnidentifiedImageError:
        raise ImageError(f'{path}: not an image Pillow can read') from None
    except Image.DecompressionBombError:  # Pillow's own, stricter-than-ours limit on some formats
        raise ImageError(f'{path}: larger than the limit of {max_pixels} pixels (decompression bomb?)') from None
    except (OSError, ValueError) as e:
        raise ImageError(f'{path}: cannot decode ({exc_line(e)})') from None


def _rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 (H, W, 3); alpha is composited over white, 16/32-bit scaled to 8 bits."""
    if im.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
        a = np.asarray(im).astype(np.float64)
        if im.mode.startswith('I;16') or a.max(initial=0) > 255:
            a = a / 257.0
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode == 'P':
        im = im.convert('RGBA')
    if im.mode in ('LA', 'RGBA', 'PA', 'La', 'RGBa'):
        im = im.convert('RGBA')
        bg = Image.new('RGBA', im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert('RGB'), dtype=np.uint8).copy()


def square(img: np.ndarray, size: int, resample=Image.LANCZOS) -> np.ndarray:
    """Centre-crop (H, W, C) to a square, then resize it to ``size`` (Lanczos by default)."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(img[top:top + s, left:left + s].squeeze())
    if s != size:
        crop = crop.resize((size, size), resample)
    out = np.asarray(crop)
    return out.reshape(size, size, -1) if img.ndim == 3 else out


def load_target(path: str | Path, size: int) -> np.ndarray:
    """``read_image`` then ``square``: uint8 (size, size, 3)."""
    return square(read_image(path), size)


def load_mask(path: str | Path, photo_shape: tuple[int, int], size: int) -> np.ndarray:
    """A damage mask file -> float32 (size, size), 1 = known pixel, 0 = hole to fill.

    White (> 127) in the file marks known pixels, black the damage (the ``inpaint:mode=file`` convention).
    The file must have the photo's size, and gets the same centre crop; nearest-neighbour resizing keeps it
    binary.

    Raises:
        ImageError: unreadable, its size differs from the photo's ``(H, W)``, or no pixel is known.
    """
    m = read_image(path)
    if m.shape[:2] != tuple(photo_shape):
        raise ImageError(f'{path}: mask is {m.shape[1]}x{m.shape[0]} but the photo is '
                         f'{photo_shape[1]}x{photo_shape[0]}')
    grey = m.mean(axis=2).astype(np.uint8)
    known = (square(grey, size, Image.NEAREST) > 127).astype(np.float32)
    if not known.any():
        raise ImageError(f'{path}: the mask marks no pixel of the photo\'s centre square as known (white = known, '
                         'black = damage): nothing to restore from')
    return known


@torch.no_grad()
def render_seed(G, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """The generator's image for ``z = RandomState(seed).randn(1, z_dim)`` (constant noise, fp32).

    Returns:
        ``(uint8 (R, R, 3), w [1, num_ws, w_dim])``: the image and the latent it came from.
    """
    dev = next(iter(G.parameters())).device
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(dev, torch.float32)
    w = G.mapping(z, None)
    img = G.synthesis(w, noise_mode='const', force_fp32=True)
    return to_uint8(img)[0], w.cpu()


def to_tensor(imgs: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) or (N, H, W, 3) -> float32 [N, 3, H, W] in [-1, 1]."""
    a = imgs[None] if imgs.ndim == 3 else imgs
    return torch.from_numpy(np.array(a, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N, C, H, W] in [-1, 1] -> uint8 (N, H, W, C), rounded."""
    return ((x.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
