"""PSNR, SSIM, LPIPS, identity on [-1, 1] images, per image; the landmark error of two faces."""
import math

import numpy as np
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


class _ShiftedFace:
    """A detector whose one face is a fixed 68-point shape moved right by the red mean / 25.5 pixels (so a landmark
    error is known by hand), a second face half its size, and no face in a black image."""
    name = 'shifted'
    base = np.stack([np.linspace(10, 50, 68), np.linspace(20, 40, 68)], 1)

    def detect(self, img):
        if img.max() == 0:
            return []
        shift = np.array([img[..., 0].mean() / 25.5, 0])
        return [self.base * 0.5, self.base + shift]


def test_landmark_error_is_the_mean_point_distance_over_the_outer_eye_corners():
    from ganinv_core.metrics import landmark_error, landmarks
    a, b = np.full((16, 16, 3), 51, np.uint8), np.full((16, 16, 3), 204, np.uint8)
    det = _ShiftedFace()
    np.testing.assert_allclose(landmarks(a, det), det.base + [2, 0])          # the larger face
    ocular = np.linalg.norm(det.base[36] - det.base[45])
    assert landmark_error(a, b, det) == pytest.approx(6 / ocular)             # shifts 2 and 8 pixels
    assert landmark_error(b, b, det) == 0
    with pytest.raises(ValueError, match="landmark_error: second image: no face found by detector 'shifted'"):
        landmark_error(a, np.zeros_like(a), det)
    with pytest.raises(ValueError, match='need one size'):
        landmark_error(a, b[:8], det)
