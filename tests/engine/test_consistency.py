"""engine.consistent: the restoration moved onto {x : M (A x - y) = 0}, checked against a dense least-norm solve."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganinv_core.engine import consistent
from ganinv_core.hooks import Pipeline, get_registry
from ganinv_core.metrics import LUMA


def pipeline(*specs):
    return Pipeline([get_registry().build_degradation(s) for s in specs])


def smooth_pair(n=2, size=32, seed=0):
    """A clean image and a restoration of it that is off by a smooth and a fine error, both inside (-0.9, 0.9) (no
    clipping)."""
    g = torch.Generator().manual_seed(seed)
    clean = F.interpolate(torch.rand(n, 3, 4, 4, generator=g) * 1.2 - 0.6, size=size, mode='bilinear')
    err = F.interpolate(torch.randn(n, 3, 8, 8, generator=g), size=size, mode='bilinear') * 0.1
    return clean, clean + err + 0.03 * torch.randn(clean.shape, generator=g)


def dense(pipe, shape):
    """The matrix L of an affine pipe and its offset c, column by column (tiny images only)."""
    zero = torch.zeros(1, *shape)
    c = pipe(zero).flatten()
    cols = [pipe(torch.eye(int(np.prod(shape)))[k].view(1, *shape)).flatten() - c for k in range(int(np.prod(shape)))]
    return torch.stack(cols, 1).double(), c.double()


@pytest.mark.parametrize('specs', [('blur:sigma=0.8',), ('downsample:factor=2',),
                                   ('blur:sigma=0.7', 'downsample:factor=2'), ('inpaint:mode=center,size=0.5',)])
def test_matches_the_least_change_solution_computed_densely(specs):
    """x_c = x̂ + Lᵀ (L Lᵀ)⁺ (y - A x̂) over the known pixels: the Euclidean projection, from numpy's pseudo-inverse."""
    pipe = pipeline(*specs)
    clean, rest = smooth_pair(n=1, size=8)
    y, m = pipe(clean), pipe.mask(clean)
    L, c = dense(pipe, (3, 8, 8))
    keep = torch.ones_like(c, dtype=torch.bool) if m is None else m.expand_as(y).flatten() > 0.5
    L, r = L[keep], (y.flatten().double() - (L @ rest.flatten().double() + c))[keep]   # (masked rows)
    want = rest.flatten().double() + L.T @ torch.from_numpy(np.linalg.pinv((L @ L.T).numpy())) @ r
    got = consistent(pipe, rest, y, m, iters=500, tol=1e-7, rounds=1, smooth=0)
    assert torch.allclose(got.flatten().double(), want, atol=2e-4), (got.flatten().double() - want).abs().max()


@pytest.mark.parametrize('specs', [('blur:sigma=2',), ('downsample:factor=4',), ('blur:sigma=1', 'downsample:factor=2'),
                                   ('downsample:factor=2', 'inpaint:mode=strokes,strokes=6')])
def test_degrades_back_to_the_target_and_comes_closer_to_the_clean_image(specs):
    pipe = pipeline(*specs)
    clean, rest = smooth_pair()
    y, m = pipe(clean), pipe.mask(clean)
    mm = 1 if m is None else m
    got = consistent(pipe, rest, y, m)

    def rms(a):
        return a.square().flatten(1).mean(1).sqrt() * 127.5
    assert (rms(mm * (pipe(rest) - y)) > 3).all()
    assert (rms(mm * (pipe(got) - y)) <= 0.3 + 1e-3).all()          # the default tol: 8-bit rounding noise
    assert (rms(got - clean) < 0.8 * rms(rest - clean)).all()       # a projection onto a set that holds clean
    # already consistent: nothing to move
    assert torch.allclose(consistent(pipe, clean, y, m), clean, atol=1e-6)


def test_after_a_resize_the_correction_is_smooth_not_blocky():
    """Euclidean (smooth=0): Lᵀ of a box mean spreads each low-resolution residual evenly over its 4 x 4 block, a
    jump at every block edge. By default the correction is smoothed and as consistent."""
    pipe = pipeline('downsample:factor=4')
    clean, rest = smooth_pair()
    y = pipe(clean)

    def edge_to_inner_jump(delta):   # mean horizontal step across block edges over that inside blocks
        dx = (delta[..., 1:] - delta[..., :-1]).abs().mean((0, 1, 2))
        return (dx[3::4].mean() / torch.cat([dx[i::4] for i in range(3)]).mean()).item()
    flat = consistent(pipe, rest, y, smooth=0) - rest
    blocks = flat.unfold(2, 4, 4).unfold(3, 4, 4)   # [N,3,8,8,4,4]
    assert (blocks.amax((-1, -2)) - blocks.amin((-1, -2))).abs().max() < 1e-5 and edge_to_inner_jump(flat) > 1e3
    smooth = consistent(pipe, rest, y) - rest
    assert edge_to_inner_jump(smooth) < 1.5
    for delta in (flat, smooth):
        assert (F.avg_pool2d(rest + delta, 4) - y).square().mean().sqrt() * 127.5 < 0.3


def test_holes_get_the_target_pixels_pasted_and_keep_the_restoration():
    pipe = pipeline('inpaint:mode=center,size=0.5')
    clean, rest = smooth_pair()
    m = pipe.mask(clean)
    got = consistent(pipe, rest, pipe(clean), m)
    assert torch.allclose(got, torch.where(m > 0.5, clean, rest), atol=1e-6)


def test_a_colourless_measurement_shifts_every_channel_of_a_pixel_equally():
    """Grayscale (here after a blur): the correction leaves G's colour (YIQ's I and Q) alone, and the luminance
    then matches the target's."""
    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    for specs in [('grayscale',), ('blur:sigma=1', 'grayscale')]:
        pipe = pipeline(*specs)
        clean, rest = smooth_pair()
        got = consistent(pipe, rest, pipe(clean))
        delta = got - rest
        assert (delta - delta.mean(1, keepdim=True)).abs().max() < 1e-6 and delta.abs().max() > 0.05
        if specs == ('grayscale',):   # one step: Y(x_c) = Y(y) exactly
            assert torch.allclose((got * luma).sum(1), (clean * luma).sum(1), atol=1e-5)


def test_a_tinted_grey_photo_is_matched_in_brightness_only():
    """A sepia 'grey' photo has unequal channels no colourless measurement can produce: the colourless fit is their
    mean, and the colour stays G's."""
    pipe = pipeline('grayscale')
    clean, rest = smooth_pair()
    sepia = pipe(clean) + torch.tensor([0.06, 0.0, -0.06]).view(1, 3, 1, 1)
    delta = consistent(pipe, rest, sepia) - rest
    assert (delta - delta.mean(1, keepdim=True)).abs().max() < 1e-6
    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    assert torch.allclose(((rest + delta) * luma).sum(1), sepia.mean(1), atol=1e-5)


def test_clipping_rounds_bring_a_saturated_restoration_closer():
    """Where the correction leaves [-1, 1], clipping undoes part of it; alternating the two projections gets closer
    to the target (and to the clean image) round by round."""
    pipe = pipeline('downsample:factor=4')
    clean, _ = smooth_pair()
    clean = (clean * 2.5).clamp(-1, 1)   # saturated regions; half the restoration's pixels too dark
    dark = torch.rand(clean.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    rest = torch.where(dark, clean - 0.6, clean).clamp(-1, 1)
    assert (clean.abs() == 1).float().mean() > 0.1
    y = pipe(clean)
    resid = [(pipe(consistent(pipe, rest, y, rounds=k)) - y).square().mean().sqrt().item() for k in (1, 2, 4)]
    err = [(consistent(pipe, rest, y, rounds=k) - clean).square().mean().sqrt().item() for k in (1, 2, 4)]
    assert resid[0] > resid[1] > resid[2] and err[0] >= err[1] >= err[2]


def test_images_of_a_batch_are_solved_independently():
    pipe = pipeline('blur:sigma=1.5', 'downsample:factor=2')
    clean, rest = smooth_pair(n=3)
    y = pipe(clean)
    both = consistent(pipe, rest, y)
    for i in range(3):
        assert torch.allclose(both[i:i + 1], consistent(pipe, rest[i:i + 1], y[i:i + 1]), atol=1e-5)


def test_mismatched_shapes_are_named():
    pipe = pipeline('downsample:factor=2')
    clean, rest = smooth_pair()
    with pytest.raises(ValueError, match=r'consistent: the degradation gives \(3, 16, 16\), observed is \(3, 32, 32\)'):
        consistent(pipe, rest, clean)
    with pytest.raises(ValueError, match='same N'):
        consistent(pipe, rest, pipe(clean)[:1])


def low_pass(v, sigma=3.0):
    from ganinv_core.metrics import gaussian_window
    g = gaussian_window(2 * int(3 * sigma) + 1, sigma)
    k, c = g.numel() // 2, v.shape[1]
    v = F.conv2d(F.pad(v, (0, 0, k, k), mode='replicate'), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(F.pad(v, (k, k, 0, 0), mode='replicate'), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


@pytest.mark.parametrize('specs', [('jpeg:quality=20',), ('downsample:factor=2,method=bicubic',), ()])
def test_low_frequencies_take_the_photo_s_colour_and_leave_g_s_detail(specs):
    """A restoration with the right detail but a colour cast: matched, the cast is gone and the detail stays."""
    from ganinv_core.engine import match_low_frequencies
    pipe = pipeline(*specs)
    g = torch.Generator().manual_seed(3)
    clean = F.interpolate(torch.rand(2, 3, 4, 4, generator=g) * 1.2 - 0.6, size=32, mode='bilinear')
    clean = (clean + 0.15 * torch.randn(clean.shape, generator=g)).clamp(-0.95, 0.95)   # fine detail
    cast = torch.tensor([0.25, -0.1, -0.2]).view(1, 3, 1, 1)
    rest = (clean + cast).clamp(-1, 1)
    got = match_low_frequencies(pipe, rest, pipe(clean))
    mean_err = lambda x: (pipe(x) - pipe(clean)).mean((2, 3)).abs().max().item()   # noqa: E731  (degraded)
    assert mean_err(rest) > 0.09 and mean_err(got) < 0.005
    assert (got - clean).mean((2, 3)).abs().max() < 0.2 * (rest - clean).mean((2, 3)).abs().max()   # (JPEG's bias)
    detail = lambda x: x - low_pass(x)   # noqa: E731
    assert (detail(got) - detail(clean)).abs().mean() < 0.25 * (detail(clean)).abs().mean()
    assert torch.allclose(match_low_frequencies(pipe, clean, pipe(clean)), clean, atol=0.03)   # matched already


def test_low_frequencies_are_matched_up_to_the_edge_of_a_hole():
    """Normalised convolution: the hole (no residual there) does not weaken the correction beside it."""
    from ganinv_core.engine import match_low_frequencies
    pipe = pipeline('inpaint:mode=center,size=0.5', 'jpeg:quality=90')
    clean = torch.zeros(1, 3, 32, 32) + 0.3
    rest = clean + 0.2
    m = pipe.mask(clean)
    edge = F.max_pool2d(1 - m, 3, stride=1, padding=1) * m > 0   # known pixels next to the hole
    off = [(match_low_frequencies(pipe, rest, pipe(clean), mask) - clean)[edge.expand(1, 3, 32, 32)].abs().mean()
           for mask in (m, None)]
    assert off[0] < 0.02 < off[1], off


def test_low_frequencies_name_mismatched_batches():
    from ganinv_core.engine import match_low_frequencies
    clean, rest = smooth_pair()
    with pytest.raises(ValueError, match='match_low_frequencies: restored .* same N'):
        match_low_frequencies(pipeline('jpeg'), rest, clean[:1])
