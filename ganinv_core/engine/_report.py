"""Per-image metrics of a finished inversion: losses, PSNR/SSIM/LPIPS, speed."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._errors import exc_line


def _suite(a: torch.Tensor, b: torch.Tensor, vgg, errors: dict, arcface=None) -> list[dict]:
    """PSNR, SSIM, LPIPS (and ArcFace identity, given an ``arcface``) between batches ``a`` and ``b``
    [N,3,H,W] in [-1,1]; one dict per image.

    A metric that cannot run (LPIPS without a VGG16) is None, with the reason kept in ``errors``.
    """
    from ganinv_core import metrics
    fns = {'psnr': metrics.psnr, 'ssim': metrics.ssim, 'lpips': lambda x, y: metrics.lpips(x, y, vgg)}
    if arcface is not None:
        fns['identity'] = lambda x, y: metrics.identity(x, y, arcface)
    out = [dict() for _ in range(a.shape[0])]
    for name, fn in fns.items():
        try:
            if name == 'lpips' and vgg is None:
                raise ValueError('no VGG16 loaded (it comes with the vgg16 loss)')
            vals = [float(v) for v in fn(a, b).reshape(-1)]
        except Exception as e:  # noqa: BLE001 - a metric that cannot run is reported, not fatal
            errors[name] = exc_line(e)
            vals = [None] * a.shape[0]
        for d, v in zip(out, vals):
            d[name] = v
    return out


@torch.no_grad()
def image_metrics(images, degraded, target, clean, mask, history, rate, wall, vgg=None, arcface=None,
                  reference=None) -> list[dict]:
    """One metrics dict per image.

    Keys: ``loss`` {term: final weighted value}; ``vs_target`` (degraded restoration vs the target; each comparison
    holds PSNR, SSIM, LPIPS, and ``identity`` (ArcFace cosine) given an ``arcface``);
    with a clean original: ``vs_clean`` (restoration vs clean), ``degraded_vs_clean`` (the target, resized
    to the clean size, vs clean: the "before"), and for masked degradations ``hole`` (PSNR inside the
    unknown region, restoration and degraded target); given ``reference`` (unit ArcFace embeddings [1|N, D] of
    photos of the person), ``reference_identity`` (cosine to it of the restoration and of the target);
    ``steps``, ``steps_per_second``, ``wall_time_s``.

    The restoration is scored as it is shown and saved, clipped to [-1, 1]: G's raw output can leave the range (a
    clamping degradation passes no gradient to pull it back), and scoring the raw values measured an image nobody
    sees (on ``random-64`` with bicubic 8x: 12.9 dB for a restored.png 24.5 dB from the original).
    """
    n = images.shape[0]
    images, degraded = images.float().clamp(-1, 1), degraded.float().clamp(-1, 1)
    errors: dict = {}
    per = [{'loss': {k: float(v[-1, i]) for k, v in history.items()}} for i in range(n)]
    for d, m in zip(per, _suite(degraded.float(), target.float(), vgg, errors, arcface)):
        d['vs_target'] = m
    if clean is not None:
        before = target if target.shape[-1] == clean.shape[-1] else \
            F.interpolate(target, size=clean.shape[-2:], mode='bicubic', align_corners=False).clamp(-1, 1)
        for d, a, b in zip(per, _suite(images.float(), clean, vgg, errors, arcface),
                            _suite(before, clean, vgg, errors, arcface)):
            d['vs_clean'], d['degraded_vs_clean'] = a, b
        if mask is not None and mask.shape[-1] == clean.shape[-1] and bool((mask < 0.5).any()):
            from ganinv_core.metrics import psnr
            hole = (mask < 0.5).float().expand(n, 1, -1, -1)
            for d, a, b in zip(per, psnr(images, clean, hole).tolist(), psnr(before, clean, hole).tolist()):
                d['hole'] = {'psnr_restored': a, 'psnr_degraded': b}
    if arcface is not None and reference is not None:
        cos = [(arcface.embed(x.float()) * reference).sum(1).tolist() for x in (images, target)]
        for d, a, b in zip(per, *cos):
            d['reference_identity'] = {'restored': a, 'target': b}
    for d in per:
        d.update(steps=int(next(iter(history.values())).shape[0]), steps_per_second=rate, wall_time_s=wall)
        if errors:
            d['metric_errors'] = dict(errors)
    return per
