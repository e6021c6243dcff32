"""PSNR, SSIM and LPIPS on [-1, 1] images, per image."""
import math

import pytest
import torch

from ganinv_core import metrics
from ganinv_losses.vgg16 import _net


def test_psnr_values_and_mask():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[0] += 0.2
    b[1, :, :, :2] += 2.0                                                # only in the masked-out half
    m = torch.ones(2, 1, 4, 4)
    m[..., :2] = 0
    p = metrics.psnr(a, b, m)
    assert p[0].item() == pytest.approx(10 * math.log10(4 / 0.04), rel=1e-5) and math.isinf(p[1].item())
    assert metrics.psnr(a, b)[1].item() == pytest.approx(10 * math.log10(4 / 2.0), rel=1e-5)


def test_ssim_matches_skimage_per_image():
    from skimage.metrics import structural_similarity
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 24, 20, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    ref = [structural_similarity(a[i].numpy(), b[i].numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=2) for i in range(3)]
    torch.testing.assert_close(metrics.ssim(a, b), torch.tensor(ref), rtol=1e-4, atol=1e-5)
    assert torch.allclose(metrics.ssim(a, a), torch.ones(3))


def test_ssim_mask_ignores_holes():
    a = torch.rand(1, 3, 32, 32) * 2 - 1
    b = a.clone()
    b[..., :, :10] = -1
    m = torch.ones(1, 1, 32, 32)
    m[..., :, :10] = 0
    assert metrics.ssim(a, b, m).item() == pytest.approx(1.0, abs=1e-6) and metrics.ssim(a, b).item() < 0.99


def test_lpips_per_image():
    vgg = _net('random', 'cpu')  # shared random network
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    b = a.clone()
    b[1] = -b[1]
    d = metrics.lpips(a, b, vgg)
    assert d.shape == (2,) and d[0].item() == 0 and d[1].item() > 0
    torch.testing.assert_close(metrics.lpips(a[1:], b[1:], vgg), d[1:])


def test_shape_mismatch_is_one_clear_error():
    with pytest.raises(ValueError, match=r'psnr: need two NCHW tensors of one shape'):
        metrics.psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
