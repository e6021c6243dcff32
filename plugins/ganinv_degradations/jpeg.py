"""JPEG artefact removal: baseline JPEG compression as a differentiable forward model.

Encode then decode, as libjpeg does at a given quality (what Pillow's ``save(quality=q)`` runs):
    RGB -> YCbCr (JFIF), chroma averaged over 2x2 (4:2:0) or kept (4:4:4),
    per 8x8 block: c = DCT(x - 128),  c_hat = Q * round(c / Q)   (Q: the quality-scaled Annex K tables),
    x_hat = IDCT(c_hat) + 128 clipped to [0, 255], chroma upsampled (libjpeg's "fancy" triangle filter),
    YCbCr -> RGB.
The rounding's gradient is taken as 1 (straight-through), so G's image is pulled towards what compresses to the
target. The block grid starts at the image's top-left corner: the model matches a photo saved as JPEG at the size
ganinv compares it (an FFHQ-aligned crop at the network's resolution, or ``--simulate``), not one resized since.
"""
import torch
import torch.nn.functional as F

from ganinv_core.hooks import Degradation, Param
from ganinv_core.metrics import LUMA as Y_WEIGHTS

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), quality 50, row-major (not zig-zag)
LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
        14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
          47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32

# JFIF's full-range YCbCr (offsets of 128 on Cb, Cr applied separately)
RGB_TO_YCC = (Y_WEIGHTS, (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
YCC_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def quant_table(base, quality: int) -> torch.Tensor:
    """libjpeg's ``jpeg_set_quality``: the table scaled by 5000/q (q < 50) or 200 - 2q percent, in [1, 255]."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return torch.tensor([min(max((t * scale + 50) // 100, 1), 255) for t in base], dtype=torch.float32).view(8, 8)


def dct_matrix() -> torch.Tensor:
    """Orthonormal 8-point DCT-II: ``D[k, i] = a_k cos((2i + 1) k pi / 16)``; a block's coefficients are D X D^T."""
    k, i = torch.arange(8.0)[:, None], torch.arange(8.0)[None]
    d = 0.5 * torch.cos((2 * i + 1) * k * torch.pi / 16)   # a_k = sqrt(2/8) ...
    d[0] /= 2 ** 0.5                                         # ... and sqrt(1/8) for k = 0
    return d


def _st(smooth: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``exact``'s values with ``smooth``'s gradient (straight-through)."""
    return smooth + (exact - smooth).detach()


def _round_st(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return _st(x, torch.round(x))


def _round_away(x: torch.Tensor) -> torch.Tensor:
    """Halves rounded away from zero, as libjpeg's quantiser does (``torch.round`` takes them to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def downsample_2x2(c: torch.Tensor) -> torch.Tensor:
    """libjpeg's h2v2 chroma downsampling of 8-bit samples [N,C,2H,2W]: the 2x2 mean, rounded with a bias that
    alternates 1, 2 along a row (``(sum + bias) >> 2``); the gradient is the mean's."""
    s = c[..., 0::2, 0::2] + c[..., 0::2, 1::2] + c[..., 1::2, 0::2] + c[..., 1::2, 1::2]
    bias = torch.arange(s.shape[-1], dtype=s.dtype, device=s.device).remainder(2) + 1   # 1, 2, 1, 2, ...
    return _st(s / 4, torch.floor((s + bias) / 4))


def upsample_2x2(c: torch.Tensor) -> torch.Tensor:
    """libjpeg's "fancy" h2v2 upsampling of 8-bit samples [N,C,H,W] -> [N,C,2H,2W]: a triangle filter, 3/4 of the
    nearer sample and 1/4 of the next along each axis (edges replicated), in integers: column sums 3 near + far, then
    ``(3 this + other + 8) >> 4`` for even outputs and ``+ 7`` for odd ones; the gradient is the bilinear filter's."""
    smooth = F.interpolate(c, scale_factor=2, mode='bilinear', align_corners=False)
    with torch.no_grad():
        up, down = torch.cat([c[..., :1, :], c[..., :-1, :]], -2), torch.cat([c[..., 1:, :], c[..., -1:, :]], -2)
        rows = torch.stack([3 * c + up, 3 * c + down], -2).flatten(-3, -2)
        left, right = torch.cat([rows[..., :1], rows[..., :-1]], -1), torch.cat([rows[..., 1:], rows[..., -1:]], -1)
        exact = torch.stack([torch.floor((3 * rows + left + 8) / 16), torch.floor((3 * rows + right + 7) / 16)],
                            -1).flatten(-2)
    return _st(smooth, exact)


class JPEG(Degradation):
    """Baseline JPEG at ``quality`` (1-100, libjpeg's scale), decoded again; differentiable (straight-through)."""
    name = 'jpeg'
    help = 'JPEG compression at a quality 1-100 (artefact removal); 8x8 blocks from the top-left corner'
    cuda_graph_safe = True
    params = (Param('quality', int, 30, "libjpeg's quality, as Pillow's save(quality=)", bounds=(1, 100)),
              Param('subsampling', str, '4:2:0', 'chroma resolution (4:2:0 halves it, as Pillow does by default)',
                    ('4:2:0', '4:4:4')))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer('q', torch.stack([quant_table(LUMA, self.quality), quant_table(CHROMA, self.quality),
                                               quant_table(CHROMA, self.quality)]), persistent=False)
        self.register_buffer('dct', dct_matrix(), persistent=False)
        self.register_buffer('to_ycc', torch.tensor(RGB_TO_YCC), persistent=False)
        self.register_buffer('to_rgb', torch.tensor(YCC_TO_RGB), persistent=False)
        self.register_buffer('offset', torch.tensor([0.0, 128.0, 128.0]).view(1, 3, 1, 1), persistent=False)

    def _code(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Each 8x8 block of [N,C,H,W] (0-255, H and W multiples of 8) quantised with ``q`` [C,8,8], decoded."""
        n, c, h, w = x.shape
        d = self.dct
        blocks = (x - 128).reshape(n, c, h // 8, 8, w // 8, 8)
        coef = torch.einsum('ki,ncaibj,lj->ncakbl', d, blocks, d)
        q = q[None, :, None, :, None, :]
        steps = coef / q
        coef = _st(steps, _round_away(steps)) * q
        out = torch.einsum('ki,ncakbl,lj->ncaibj', d, coef, d).reshape(n, c, h, w) + 128
        return _round_st(out.clamp(0, 255))   # decoded samples are 8-bit

    def forward(self, x):
        """[N,C,H,W] in [-1, 1] (C = 3, or 1 for a grey image) -> the same shape, dtype and range.

        Computed in float32 whatever the run's precision: the rounding steps need 8-bit samples and DCT
        coefficients exact to well under one quantisation step, which bfloat16 (8 significant bits) is not."""
        if x.shape[1] not in (1, 3):
            raise ValueError(f"degradation 'jpeg': needs 1 or 3 channels, got {x.shape[1]}")
        if not torch.amp.is_autocast_available(x.device.type):   # e.g. the meta tensors of a shape trace
            return self._jpeg(x.float()).to(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            return self._jpeg(x.float()).to(x.dtype)

    def _jpeg(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        u = (x + 1) * 127.5
        if c == 1:
            return self._code(_fill(_round_st(u), _up8(h), _up8(w)), self.q[:1])[..., :h, :w] / 127.5 - 1
        ycc = _round_st(torch.einsum('kc,nchw->nkhw', self.to_ycc, u) + self.offset)
        luma = self._code(_fill(ycc[:, :1], _up8(h), _up8(w)), self.q[:1])[..., :h, :w]
        chroma = ycc[:, 1:]
        if self.subsampling == '4:2:0':
            # libjpeg's edges: the photo's last column repeated to a whole block of chroma, its last row to an even
            # count; after the 2x2 mean, the last chroma row repeated to a whole block
            ch, cw = -(-h // 2), -(-w // 2)
            chroma = downsample_2x2(_fill(chroma, 2 * ch, 2 * _up8(cw)))
            chroma = self._code(_fill(chroma, _up8(ch), chroma.shape[-1]), self.q[1:])[..., :ch, :cw]
            chroma = upsample_2x2(chroma)[..., :h, :w]   # from the real samples only, edges repeated
        else:
            chroma = self._code(_fill(chroma, _up8(h), _up8(w)), self.q[1:])[..., :h, :w]
        ycc = torch.cat([luma, chroma], 1) - self.offset
        return _round_st(torch.einsum('kc,nchw->nkhw', self.to_rgb, ycc).clamp(0, 255)) / 127.5 - 1


def _up8(n: int) -> int:
    """``n`` rounded up to a whole number of 8-sample blocks."""
    return -(-n // 8) * 8


def _fill(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[..., H, W] -> [..., h, w] (h >= H, w >= W), the last row and column repeated."""
    dh, dw = h - t.shape[-2], w - t.shape[-1]
    return F.pad(t, (0, dw, 0, dh), mode='replicate') if dh or dw else t
