import math

import numpy as np
import pytest
import torch

from ganinv_core.engine import InversionError, invert
from ganinv_core.engine._latents import Latents, image_generator
from ganinv_core.io.images import render_seed, to_tensor
from ganinv_core.io.latents import load_latent, render_latent, save_latent

from _devices import gpu_only


def seeds(G, *ss):
    imgs, ws = zip(*(render_seed(G, s) for s in ss))
    return to_tensor(np.stack(imgs)), torch.cat(ws)


def test_batch_equals_one_at_a_time(G):
    targets, _ = seeds(G, 1, 2, 3)
    kw = dict(losses=['mse', 'latent-dist', 'noise-reg'], steps=6, latent_space='w+', seed=11)
    batch = invert(G, targets, **kw)
    # Batched and single convolutions round differently (~1e-7); Adam's first steps move each element by about
    # lr * sign(grad), so where a gradient element is near zero that rounding can flip a step: the runs agree
    # to ~1e-3, not bit for bit. A cross-talk between images would show up as O(lr) = 0.1 differences.
    for i in range(3):
        one = invert(G, targets[i:i + 1], indices=[i], **kw)
        torch.testing.assert_close(batch.w[i:i + 1], one.w, rtol=0, atol=5e-3)
        torch.testing.assert_close(batch.images[i:i + 1], one.images, rtol=0, atol=2e-2)
        for k in one.noise:
            torch.testing.assert_close(batch.noise[k][i:i + 1], one.noise[k], rtol=0, atol=5e-3)
    assert not torch.allclose(batch.w[0], batch.w[1])  # the images really differ


def test_known_latent_loss_drops_and_w_approaches(G):
    # the known latent: halfway from w_avg to seed 5's w (a tiny random net is far from identifiable at full
    # distance); lr 0.01 suits its small w spread (the projector's 0.1 is tuned for FFHQ)
    from ganinv_core.engine import w_stats
    w0 = torch.from_numpy(w_stats(G)[0])
    w_true = w0 + 0.5 * (render_seed(G, 5)[1][0, 0] - w0)
    with torch.no_grad():
        target = G.synthesis(w_true.view(1, 1, -1).expand(1, G.synthesis.num_ws, -1), force_fp32=True)
    res = invert(G, target, losses=['mse'], steps=100, lr=0.01, optimize_noise=False)
    total = res.history['total'][:, 0]
    assert total[-1] * 10 <= total[0]
    moved, wanted = res.w[0, 0] - w0, w_true - w0
    assert (res.w[0, 0] - w_true).norm() < wanted.norm()
    assert torch.dot(moved, wanted) / (moved.norm() * wanted.norm()) > 0.3


def test_inpainting_fills_the_hole(G):
    clean, _ = seeds(G, 9)
    from ganinv_core.hooks import get_registry
    pipe = get_registry().build_degradation('inpaint:mode=center,size=0.4')
    res = invert(G, pipe(clean), degradations=[pipe], losses=['mse'], steps=100, clean=clean,
                 optimize_noise=False)
    hole = res.metrics[0]['hole']
    assert hole['psnr_restored'] > hole['psnr_degraded']
    m = res.mask[0, 0] < 0.5
    assert m.float().mean() == pytest.approx(0.16, abs=0.03)


def test_w_and_w_plus_shapes(G):
    target, _ = seeds(G, 4)
    rw = invert(G, target, losses=['mse'], steps=3, latent_space='w')
    rp = invert(G, target, losses=['mse'], steps=3, latent_space='w+')
    n = G.synthesis.num_ws
    assert rw.w.shape == rp.w.shape == (1, n, G.w_dim)
    assert torch.equal(rw.w, rw.w[:, :1].expand_as(rw.w))
    assert not torch.allclose(rp.w, rp.w[:, :1].expand_as(rp.w))
    assert set(rw.history) == {'mse', 'total'} and rw.history['total'].shape == (3, 1)


def test_latent_file_rerenders_restoration(G, tmp_path):
    target, _ = seeds(G, 6)
    res = invert(G, target, losses=['mse', 'noise-reg'], steps=4, latent_space='w+')
    save_latent(tmp_path / 'p.npz', res.w[:1], {k: v[:1] for k, v in res.noise.items()}, 'w+')
    again = render_latent(G, load_latent(tmp_path / 'p.npz'))
    assert (again - res.images).abs().max() * 127.5 < 1
    # and it can start a new run exactly where this one ended
    cont = invert(G, target, losses=['mse'], steps=1, lr=0.0, latent_space='w+', init=load_latent(tmp_path / 'p.npz'))
    torch.testing.assert_close(cont.w, res.w)


def test_nan_is_detected_and_named(G):
    from ganinv_core.hooks import Loss

    class Bad(Loss):
        name = 'bad'

        def forward(self, ctx):
            return ctx.pred.mean((1, 2, 3)) * float('nan')

    target, _ = seeds(G, 1)
    with pytest.raises(InversionError, match=r"step 0: loss 'bad' is not finite for image\(s\) \[0\]"):
        invert(G, target, losses=[Bad()], steps=4, log_every=2)


@pytest.mark.parametrize('precision', ['bf16', 'fp16', 'tf32', 'auto'])
def test_precisions_run_on_cpu(G, precision):
    target, _ = seeds(G, 2)
    res = invert(G, target, losses=['mse', 'noise-reg'], steps=3, precision=precision)
    assert torch.isfinite(res.images).all()
    assert res.precision == {'auto': 'fp32'}.get(precision, precision)


def test_bad_arguments(G):
    target, _ = seeds(G, 1)
    with pytest.raises(InversionError, match='targets: shape'):
        invert(G, target[:, :, :16, :16], losses=['mse'], steps=1)
    with pytest.raises(InversionError, match='latent_space'):
        invert(G, target, losses=['mse'], steps=1, latent_space='z')
    with pytest.raises(InversionError, match='precision'):
        invert(G, target, losses=['mse'], steps=1, precision='fp8')
    for steps in (0, 10 ** 7, True, 2.0):
        with pytest.raises(InversionError, match=rf'steps: must be an integer in \[1, 1000000\], got {steps!r}'):
            invert(G, target, losses=['mse'], steps=steps)
    with pytest.raises(InversionError, match='W\\+ latent'):
        invert(G, target, losses=['mse'], steps=1, init={'w': torch.randn(1, G.synthesis.num_ws, G.w_dim)})
    n = G.synthesis.num_ws
    with pytest.raises(ValueError, match=rf'init: latent of shape \(1, 3, {G.w_dim}\) does not fit '
                                         rf'\[1\|1, 1\|{n}, {G.w_dim}\]'):
        invert(G, target, losses=['mse'], steps=1, init={'w': torch.randn(1, 3, G.w_dim)})
    with pytest.raises(InversionError, match=r'targets: expected float \[N,C,H,W\] in \[-1,1\] or uint8 \[N,H,W,C\], '
                                             r'got \(1, 3, 32, 32\) torch.int64'):
        invert(G, target.long(), losses=['mse'], steps=1)
    with pytest.raises(InversionError, match=r'targets: values span \[0, 255\]; expected \[-1, 1\] \(a uint8'):
        invert(G, (target + 1) * 127.5, losses=['mse'], steps=1)                # 0-255 floats
    with pytest.raises(ValueError, match=rf'init: latent of shape \(1, 1, 5\) does not fit '
                                         rf'\[1\|1, 1\|{n}, {G.w_dim}\]'):
        invert(G, target, losses=['mse'], steps=1, init={'w': np.zeros((1, 1, 5))})    # was a synthesis error
    with pytest.raises(ValueError, match='init: w must be an array of numbers, got str'):
        invert(G, target, losses=['mse'], steps=1, init={'w': 'x'})
    with pytest.raises(InversionError, match="seed: must be an integer, got 'a'"):
        invert(G, target, losses=['mse'], steps=1, seed='a')
    with pytest.raises(InversionError, match='callbacks: 1 is not callable'):
        invert(G, target, losses=['mse'], steps=1, callbacks=[1])
    with pytest.raises(ValueError, match="device 'nosuch': not usable here \\(RuntimeError: "):
        invert(G, target, losses=['mse'], steps=1, device='nosuch')
    with pytest.raises(InversionError, match='clean: contains NaN or inf'):
        invert(G, target, clean=target * float('nan'), losses=['mse'], steps=1)
    with pytest.raises(InversionError, match='polish: must be a fraction of the steps in \\[0, 1\\], got 2'):
        invert(G, target, losses=['mse'], steps=1, polish=2)
    for lr in (-0.1, float('nan'), float('inf'), True):   # ascent, or a NaN loss blamed on the learning rate
        with pytest.raises(InversionError, match=f'lr: must be a finite number >= 0, got {lr!r}'):
            invert(G, target, losses=['mse'], steps=1, lr=lr)


def test_uint8_targets_and_a_2d_init_are_their_float_and_3d_forms(G):
    """A uint8 [N,H,W,C] photo is the float [N,C,H,W] target in [-1, 1]; an init w [N, w_dim] is [N, 1, w_dim]."""
    target, _ = seeds(G, 1)
    photo = ((target + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    w0 = G.mapping.w_avg[None] + 0.1
    kw = dict(losses=['mse'], steps=2, seed=1)
    a = invert(G, photo, init={'w': w0}, **kw)
    b = invert(G, torch.from_numpy(photo).permute(0, 3, 1, 2).float() / 127.5 - 1, init={'w': w0[:, None]}, **kw)
    assert torch.equal(a.targets, b.targets) and torch.equal(a.w, b.w)


def test_noise_renormalised_per_image(G):
    gens = [image_generator(0, i, torch.device('cpu')) for i in range(2)]
    lat = Latents(G, 2, torch.zeros(G.w_dim), 'w', True, gens)
    with torch.no_grad():
        for v in lat.noise.values():
            v.mul_(3).add_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
    want = {}
    for k, v in lat.noise.items():   # the projector's two steps, in float64
        c = v.detach().double() - v.detach().double().mean((1, 2, 3), keepdim=True)
        want[k] = c * c.square().mean((1, 2, 3), keepdim=True).rsqrt()
    lat.renormalise()
    for k, v in lat.noise.items():
        torch.testing.assert_close(v.detach().double(), want[k], atol=2e-6, rtol=2e-6)
        torch.testing.assert_close(v.mean((1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(v.square().mean((1, 2, 3)), torch.ones(2), atol=1e-5, rtol=0)


def test_callbacks_see_progress(G):
    target, _ = seeds(G, 3)
    seen = []
    invert(G, target, losses=['mse'], steps=7, log_every=3, report_steps=[5],
           callbacks=[lambda p: seen.append((p.step, p.losses is None, tuple(p.render().shape)))])
    assert [s for s, *_ in seen] == [0, 3, 5, 6, 7]
    assert seen[0][1] and not seen[-1][1] and seen[-1][2] == (1, 3, 32, 32)


def test_metrics_hand_made():
    from ganinv_core.engine._report import image_metrics
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16) * 1.6 - 0.8
    sigma = 0.05
    noisy = x + sigma * torch.randn_like(x).sign()  # |error| = sigma everywhere: MSE = sigma^2 exactly
    hist = {'total': np.ones((3, 2))}
    m = image_metrics(x, x, x, x, None, hist, 1.0, 1.0)
    assert m[0]['vs_target']['psnr'] == math.inf and m[0]['vs_clean']['psnr'] == math.inf
    m = image_metrics(noisy, noisy, x, x, None, hist, 1.0, 1.0)
    assert m[1]['vs_clean']['psnr'] == pytest.approx(10 * math.log10(4 / sigma ** 2), abs=1e-3)


@gpu_only
def test_batch_independence_on_gpu():
    from ganinv_core.weights import load_generator
    G = load_generator('random-32', device='cuda')
    targets, _ = seeds(G, 1, 2)
    kw = dict(losses=['mse', 'noise-reg'], steps=5, precision='fp32')
    batch = invert(G, targets.cuda(), **kw)
    one = invert(G, targets[1:].cuda(), indices=[1], **kw)
    torch.testing.assert_close(batch.w[1:], one.w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('precision, tf32', [('fp32', False), ('tf32', True), ('bf16', True), ('fp16', True)])
def test_precision_mode_sets_tf32_and_restores_it(precision, tf32):
    from ganinv_core.engine._precision import Precision
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731
    before = flags()
    for start in (True, False):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = start
        with Precision(precision, torch.device('cpu')).mode():
            assert flags() == (tf32, tf32)
        assert flags() == (start, start)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
