"""Image quality metrics on NCHW images in [-1, 1], one value per image: PSNR, SSIM, LPIPS, ArcFace identity; and the
landmark error of two face photos."""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

PEAK = 2.0  # the data range of [-1, 1]
LUMA = (0.299, 0.587, 0.114)  # luminance Y of R, G, B (Rec. 601: YIQ's and JFIF's Y)


def _check(a: torch.Tensor, b: torch.Tensor, fn: str) -> None:
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(f'{fn}: need two NCHW tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}')


def masked_mean(v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[N,C,H,W] -> [N]: mean over known pixels (``mask`` [N|1,1,H,W], 1 = known) and channels."""
    if mask is None:
        return v.flatten(1).mean(1)
    m = mask.to(v.dtype).expand(v.shape[0], 1, *v.shape[2:])
    return (v * m).flatten(1).sum(1) / (m.flatten(1).sum(1) * v.shape[1]).clamp(min=1e-8)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[N] PSNR in dB, 10 log10(peak^2 / MSE) with peak 2 (the range of [-1, 1]); inf where a == b."""
    _check(a, b, 'psnr')
    mse = masked_mean((a.float() - b.float()).square(), mask)
    return 10 * torch.log10(PEAK ** 2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """[size] normalised 1-D Gaussian."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-r.square() / (2 * sigma ** 2))
    return (g / g.sum()).float()


@functools.lru_cache(maxsize=32)
def _window_on(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`gaussian_window` on ``device``, made once: no host-to-device copy per call (CUDA-graph capture forbids it)."""
    return gaussian_window(size, sigma).to(device, dtype)


def ssim_map(a: torch.Tensor, b: torch.Tensor, win: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """[N,C,H',W'] SSIM map (Wang et al. 2004), Gaussian window, valid positions only (H' = H - win + 1).

    SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)),
    C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = 2; population (co)variances. Images smaller than the window
    use the largest odd window that fits.
    """
    win = min(win, *(s - (s + 1) % 2 for s in a.shape[-2:]))
    g = _window_on(win, float(sigma), a.device, a.dtype)
    c = a.shape[1]

    def blur(x):  # separable Gaussian, valid, per channel
        x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, win), groups=c)
        return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, win, 1), groups=c)
    mu_a, mu_b = blur(a), blur(b)
    saa, sbb, sab = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2
    return (2 * mu_a * mu_b + c1) * (2 * sab + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))


def ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, win: int = 11) -> torch.Tensor:
    """[N] mean SSIM over channels and positions (with ``mask``: positions whose window is fully known)."""
    _check(a, b, 'ssim')
    s = ssim_map(a, b, win)
    if mask is not None:
        k = (a.shape[-2] - s.shape[-2] + 1, a.shape[-1] - s.shape[-1] + 1)
        mask = 1 - F.max_pool2d(1 - mask.to(s.dtype), k, stride=1)  # erode: whole window known
    return masked_mean(s, mask)


def to_vgg_input(x: torch.Tensor, size: int = 256) -> torch.Tensor:
    """[-1, 1] -> [0, 255], area-resized to ``size`` when larger (NVIDIA's projector).

    The area resize is an average, so it commutes with the affine map: resizing first maps 1/16 of the pixels of a
    1024² image (and its gradient), not all of them.
    """
    if x.shape[-1] > size or x.shape[-2] > size:
        x = F.interpolate(x, size=(size, size), mode='area')
    return (x + 1) * (255 / 2)


def lpips(a: torch.Tensor, b: torch.Tensor, vgg: torch.nn.Module) -> torch.Tensor:
    """[N] LPIPS(VGG16) distance with NVIDIA's projector conventions (area-resized to 256 when larger).

    Args:
        vgg: a ``ganinv_core.nets.vgg16.VGG16Features`` (see ``load_vgg16``).
    """
    _check(a, b, 'lpips')
    if a.shape[1] == 1:
        a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
    with torch.no_grad():
        return (vgg(to_vgg_input(a)) - vgg(to_vgg_input(b))).square().sum(1)


def identity(a: torch.Tensor, b: torch.Tensor, arcface: torch.nn.Module) -> torch.Tensor:
    """[N] ArcFace identity similarity: the cosine of the embeddings of FFHQ-aligned faces (1: the same face).

    Args:
        arcface: a ``ganinv_core.nets.arcface.IResNet`` (see ``load_arcface``).
    """
    _check(a, b, 'identity')
    with torch.no_grad():
        return (arcface.embed(a) * arcface.embed(b)).sum(1)


def landmarks(img: np.ndarray, detector) -> np.ndarray:
    """(68, 2) landmarks of the largest face (the biggest FFHQ crop, as ``--align`` picks) in a uint8 (H, W, 3)
    image.

    Args:
        detector: a ``LandmarkDetector`` or a detector spec string (``'dlib'``).

    Raises:
        ValueError: no face found.
    """
    from ganinv_core.io import align
    detector = align._resolve_detector(detector)
    faces = [np.asarray(f, np.float64) for f in detector.detect(np.ascontiguousarray(img))]
    if not faces:
        raise ValueError(f'no face found by detector {getattr(detector, "name", detector)!r}')
    return align.largest(faces)


def landmark_error(a: np.ndarray, b: np.ndarray, detector) -> float:
    """Normalised mean error of face ``a``'s 68 landmarks against face ``b``'s: the mean distance of corresponding
    points over ``b``'s outer-eye-corner distance (points 36 and 45, the 300-W convention). 0: the same shape.

    Args:
        a, b: uint8 (H, W, 3) images of one face each, the same size (e.g. restored and original crops).
        detector: a ``LandmarkDetector`` or a detector spec string.

    Raises:
        ValueError: sizes differ, or no face found in one of them (naming which).
    """
    if a.shape != b.shape:
        raise ValueError(f'landmark_error: images of {a.shape} and {b.shape}; need one size')
    pts = []
    for img, which in ((a, 'first'), (b, 'second')):
        try:
            pts.append(landmarks(img, detector))
        except ValueError as e:
            raise ValueError(f'landmark_error: {which} image: {e}') from None
    return nme(*pts)


def nme(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mean error of (68, 2) landmarks ``a`` against ``b``: the mean point distance over ``b``'s
    outer-eye-corner distance (points 36 and 45)."""
    ocular = float(np.linalg.norm(b[36] - b[45]))
    return float(np.linalg.norm(a - b, axis=1).mean() / max(ocular, 1e-9))


__all__ = ['identity', 'landmark_error', 'landmarks', 'lpips', 'nme', 'masked_mean', 'psnr', 'ssim', 'ssim_map',
           'gaussian_window', 'to_vgg_input']
