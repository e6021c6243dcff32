"""Built-in losses: values against direct formulas and NVIDIA's reference loops."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ganinv_core.hooks import Loss, LossContext, get_registry
from ganinv_core.metrics import to_vgg_input
from ganinv_losses import L1, MSE, SSIM, LatentDist, NoiseReg


def test_default_weights():
    reg = get_registry()
    assert {n: reg.build_loss(n).weight for n in ('vgg16', 'latent-dist', 'noise-reg', 'mse', 'l1', 'ssim',
                                                  'w-cosine')} == \
        {'vgg16': 1.0, 'latent-dist': 0.001, 'noise-reg': 1e5, 'mse': 1.0, 'l1': 1.0, 'ssim': 1.0, 'w-cosine': 0.01}


def test_pixel_losses_with_mask():
    t = torch.zeros(2, 3, 4, 4)
    p = torch.ones(2, 3, 4, 4)
    p[1] *= 2
    m = torch.zeros(2, 1, 4, 4)
    m[..., :2] = 1
    p[..., 2:] = 100                                                     # in the hole: ignored
    torch.testing.assert_close(MSE()(LossContext(pred=p, target=t, mask=m)), torch.tensor([1.0, 4.0]))
    torch.testing.assert_close(L1()(LossContext(pred=p, target=t, mask=m)), torch.tensor([1.0, 2.0]))


def test_ssim_loss_is_one_minus_ssim():
    from skimage.metrics import structural_similarity
    t = torch.rand(1, 3, 16, 16) * 2 - 1
    p = (t + 0.2 * torch.randn_like(t)).clamp(-1, 1)
    ref = structural_similarity(p[0].numpy(), t[0].numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=2)
    assert SSIM()(LossContext(pred=p, target=t)).item() == pytest.approx(1 - ref, abs=1e-5)


@pytest.mark.parametrize('spec, message', [
    ('ssim:window=2', "loss 'ssim': window=2 must be in [3, 255]"),
    ('ssim:window=12', "loss 'ssim': window=12 must be odd"),
    ('ssim:window=100001', "loss 'ssim': window=100001 must be in [3, 255]"),
    ('mse:weight=nan', "loss 'mse': weight='nan' is not a finite number"),
    ('latent-dist:weight=1e999', "loss 'latent-dist': weight='1e999' is not a finite number"),
])
def test_bad_parameters_are_refused_by_name(spec, message):
    with pytest.raises(ValueError) as e:
        get_registry().build_loss(spec)
    assert str(e.value).startswith(message) and '\n' not in str(e.value), str(e.value)


def test_latent_dist_w_and_wplus():
    w_avg = torch.tensor([1.0, 2.0])
    w = torch.tensor([[[1.0, 2.0], [3.0, 2.0]], [[1.0, 4.0], [1.0, 4.0]]])   # [N=2, K=2, D=2]
    v = LatentDist()(LossContext(pred=torch.zeros(2, 3, 2, 2), target=torch.zeros(2, 3, 2, 2), w=w, w_avg=w_avg))
    torch.testing.assert_close(v, torch.tensor([2.0, 4.0]))


def test_init_dist_measures_from_the_start_not_the_mean():
    from ganinv_losses import InitDist
    w_init = torch.tensor([[[1.0, 2.0], [1.0, 2.0]], [[0.0, 0.0], [0.0, 1.0]]])
    w = torch.tensor([[[1.0, 2.0], [3.0, 2.0]], [[1.0, 4.0], [1.0, 4.0]]])   # [N=2, K=2, D=2]
    ctx = LossContext(pred=torch.zeros(2, 3, 2, 2), target=torch.zeros(2, 3, 2, 2), w=w, w_avg=torch.zeros(2),
                      w_init=w_init)
    torch.testing.assert_close(InitDist()(ctx), torch.tensor([2.0, (17 + 10) / 2]))
    torch.testing.assert_close(InitDist()(dataclasses.replace(ctx, w_init=None)), torch.zeros(2))   # no start known


def test_the_engine_hands_losses_the_starting_latent(G):
    """LossContext.w_init is the latent the run started from (here init's), fixed while w moves."""
    from ganinv_core.engine import invert
    seen = []

    class Spy(Loss):
        name = 'spy'

        def forward(self, ctx):
            seen.append((ctx.w_init.clone(), ctx.w.detach().clone()))
            return ctx.pred.square().flatten(1).mean(1)
    start = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)), None)[:, :1]
    invert(G, torch.zeros(2, 3, G.img_resolution, G.img_resolution), losses=[Spy()], steps=3, init={'w': start})
    assert len(seen) == 3 and all(torch.equal(w0, start) for w0, _ in seen)
    assert not torch.equal(seen[-1][1], start)


def test_w_cosine_by_hand():
    """Three rows: two along x, one along y (cosines 1, 0, 0 between the pairs): 1 - 2*(1+0+0)/6 = 2/3. A W latent
    (one row, or equal rows) costs nothing, and the length of a row does not matter."""
    from ganinv_losses import WCosine
    w = torch.tensor([[[1.0, 0.0], [5.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
    ctx = LossContext(pred=torch.zeros(2, 3, 2, 2), target=torch.zeros(2, 3, 2, 2), w=w, w_avg=torch.zeros(2))
    torch.testing.assert_close(WCosine()(ctx), torch.tensor([2 / 3, 0.0]))
    one = dataclasses.replace(ctx, w=w[:, :1])
    torch.testing.assert_close(WCosine()(one), torch.zeros(2))
    opposite = dataclasses.replace(ctx, w=torch.tensor([[[1.0, 0.0], [-3.0, 0.0]]]))
    torch.testing.assert_close(WCosine()(opposite), torch.tensor([2.0]))


def _nvidia_noise_reg(bufs):
    """NVIDIA projector's loop, one image: bufs are [R, R] maps."""
    reg = 0.0
    for v in bufs:
        noise = v[None, None, :, :]
        while True:
            reg += (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            reg += (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg


def test_noise_reg_matches_nvidia_per_image():
    g = torch.Generator().manual_seed(0)
    res = [4, 8, 8, 16, 16, 32, 32]                                     # a StyleGAN2-32 layout
    noise = [torch.randn(3, 1, r, r, generator=g) for r in res]
    v = NoiseReg()(LossContext(pred=torch.zeros(3, 3, 32, 32), target=torch.zeros(3, 3, 32, 32), noise=noise))
    ref = torch.stack([_nvidia_noise_reg([n[i, 0] for n in noise]) for i in range(3)])
    torch.testing.assert_close(v, ref, rtol=1e-5, atol=1e-9)


def test_vgg_input_is_nvidia_preprocessing():
    x = torch.rand(1, 3, 512, 512) * 2 - 1
    box = ((x + 1) * 127.5).view(1, 3, 256, 2, 256, 2).mean((3, 5))       # exact 2x2 area mean
    torch.testing.assert_close(to_vgg_input(x), box)
    torch.testing.assert_close(to_vgg_input(x[..., :64, :64]), (x[..., :64, :64] + 1) * 127.5)   # no upscaling


def test_vgg16_loss_nvidia_semantics():
    t = torch.rand(2, 3, 32, 32) * 2 - 1
    p = torch.rand(2, 3, 32, 32) * 2 - 1
    loss = get_registry().build_loss('vgg16:weights=random')
    loss.prepare(t, None)
    vgg = loss.vgg
    assert not any(q.requires_grad for q in vgg.parameters())
    ref = (vgg((t + 1) * 127.5) - vgg((p + 1) * 127.5)).square().sum(1)   # (f_t - f_s)^2 per image
    torch.testing.assert_close(loss(LossContext(pred=p, target=t)), ref, rtol=1e-4, atol=1e-5)
    gray = t.mean(1, keepdim=True)                                       # one channel -> replicated to 3
    loss.prepare(gray, None)
    assert loss(LossContext(pred=gray, target=gray)).abs().max() == 0
