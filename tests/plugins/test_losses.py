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


def _faces(n, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode='bilinear') * 2 - 1


def test_identity_without_references_compares_the_degraded_restoration_with_the_photo():
    from ganinv_core.nets.arcface import shared_arcface
    from ganinv_losses import Identity
    net, t, x = shared_arcface('random:4'), _faces(2), _faces(2, seed=1)
    loss = Identity(weights='random:4')
    loss.prepare(t, None)
    v = loss(LossContext(pred=x, target=t, image=torch.zeros(2, 3, 128, 128)))
    torch.testing.assert_close(v, 1 - (net.embed(x) * net.embed(t)).sum(1))
    assert loss.anchor.shape == (2, 512)


def test_identity_with_references_compares_the_restoration_with_their_mean(tmp_path):
    """A folder of reference photos: their normalised mean embedding; the restoration G(w), not its degraded image,
    is compared; a restoration equal to the one reference costs nothing."""
    from PIL import Image

    from ganinv_core.io.images import to_uint8
    from ganinv_core.nets.arcface import shared_arcface
    from ganinv_losses import Identity
    net, refs = shared_arcface('random:4'), _faces(2, size=256, seed=2)
    (tmp_path / 'refs').mkdir()
    for i, r in enumerate(to_uint8(refs)):
        Image.fromarray(r).save(tmp_path / 'refs' / f'{i}.png')
    (tmp_path / 'refs' / 'notes.txt').write_text('not an image')
    refs = torch.from_numpy(to_uint8(refs)).permute(0, 3, 1, 2).float() / 127.5 - 1   # as saved
    loss = Identity(weights='random:4', reference=str(tmp_path / 'refs'))
    x, t = _faces(3, size=128, seed=3), _faces(3, size=32, seed=4)
    loss.prepare(t, None)
    anchor = F.normalize(net.embed(refs).mean(0, keepdim=True), dim=1)
    v = loss(LossContext(pred=torch.zeros(3, 3, 32, 32), target=t, image=x))
    torch.testing.assert_close(v, 1 - (net.embed(x) * anchor).sum(1), atol=1e-5, rtol=0)
    one = Identity(weights='random:4', reference=str(tmp_path / 'refs' / '0.png'))
    one.prepare(t, None)
    assert one(LossContext(pred=x, target=t, image=refs[:1])).abs().item() < 1e-5


def test_identity_refuses_bad_input_by_name(tmp_path, monkeypatch):
    from ganinv_losses import Identity
    monkeypatch.delenv('GANINV_ARCFACE', raising=False)
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'bad.png').write_text('not a png')
    cases = [({}, "loss 'identity': weights=None no ArcFace weights: pass identity:weights="),
             ({'weights': str(tmp_path / 'r50.pth')}, 'no such file'),
             ({'weights': 'random', 'reference': str(tmp_path / 'empty')}, 'has no images'),
             ({'weights': 'random', 'reference': str(tmp_path / 'none.png')}, 'none.png: no such file'),
             ({'weights': 'random', 'reference': str(tmp_path / 'bad.png')}, 'not an image Pillow can read')]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as e:
            Identity(**kwargs)
        assert message in str(e.value) and '\n' not in str(e.value), str(e.value)
    monkeypatch.setenv('GANINV_ARCFACE', str(tmp_path / 'r100.pth'))
    with pytest.raises(ValueError, match=r"\$GANINV_ARCFACE='.*r100.pth': no such file"):
        Identity()
    monkeypatch.setenv('GANINV_ARCFACE', 'random:5')
    assert Identity().source == 'random:5'


def test_identity_loss_and_metrics_in_a_run(G):
    """The identity loss's network scores identity in every comparison of the metrics, and its references' embedding
    the restoration and the target; an ``arcface`` given to invert scores too, without the loss."""
    from ganinv_core.engine import invert
    from ganinv_core.nets.arcface import shared_arcface
    from ganinv_losses import Identity
    net, r = shared_arcface('random:4'), G.img_resolution
    clean, t = _faces(2, r, seed=5), _faces(2, r, seed=6)
    ident = Identity(weights='random:4')
    ident.references = _faces(1, 64, seed=7).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()
    res = invert(G, t, losses=['mse', ident], steps=3, clean=clean)
    m = res.metrics[1]
    anchor = net.embed(torch.from_numpy(ident.references).permute(0, 3, 1, 2).float() / 127.5 - 1)
    img = res.images.clamp(-1, 1)
    assert m['vs_clean']['identity'] == pytest.approx(float((net.embed(img) * net.embed(clean)).sum(1)[1]), abs=1e-5)
    assert m['degraded_vs_clean']['identity'] == pytest.approx(float((net.embed(t) * net.embed(clean)).sum(1)[1]),
                                                               abs=1e-5)
    assert m['reference_identity']['restored'] == pytest.approx(float((net.embed(img[1:]) * anchor).sum()), abs=1e-5)
    assert m['reference_identity']['target'] == pytest.approx(float((net.embed(t[1:]) * anchor).sum()), abs=1e-5)
    plain = invert(G, t, losses=['mse'], steps=3, clean=clean, arcface=net).metrics[0]
    assert plain['vs_target']['identity'] is not None and 'reference_identity' not in plain
    assert 'identity' not in invert(G, t, losses=['mse'], steps=3).metrics[0]['vs_target']


def test_identity_aligns_reference_photos_with_a_detector(tmp_path, monkeypatch):
    """align=<detector>: each reference photo is FFHQ-aligned first (its largest face), as --align does targets;
    a photo without a face is refused by name."""
    import types

    import numpy as np
    from PIL import Image

    from ganinv_core import hooks
    from ganinv_core.io.align import align_faces
    from ganinv_losses import Identity
    from ganinv_losses.identity import REF_SIZE

    class Found(hooks.LandmarkDetector):
        name, help = 'found-face', 'test detector: a face at a fixed place, or none in a dark photo'

        def detect(self, image):
            if image.mean() < 10:
                return []
            lm = np.full((68, 2), 56.0)
            lm[36:42], lm[42:48], lm[48], lm[54] = (38, 52), (74, 52), (42, 92), (71, 92)
            return [lm * 1.5 + (30, 20)]
    plugin = types.ModuleType('faces')
    plugin.ganinv_landmark_detectors = hooks.hookimpl(lambda: [Found])
    monkeypatch.setattr(hooks, 'get_registry', lambda: hooks.Registry(plugins={'t': plugin}, entry_points=False))
    photo = np.random.RandomState(0).randint(20, 256, (240, 300, 3)).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / 'me.png')
    loss = Identity(weights='random', reference=str(tmp_path / 'me.png'), align='found-face')
    np.testing.assert_array_equal(loss.references[0], align_faces(photo, REF_SIZE, 'found-face')[0].crop)
    Image.fromarray(photo // 20).save(tmp_path / 'dark.png')
    with pytest.raises(ValueError, match=r"reference=.*dark.png: photo: no face found by detector 'found-face'"):
        Identity(weights='random', reference=str(tmp_path / 'dark.png'), align='found-face')
    with pytest.raises(ValueError, match='align=.*aligns the reference photos; give them with reference='):
        Identity(weights='random', align='found-face')


def test_vgg16_fill_mode_fills_the_photo_s_holes_with_the_generated_image():
    """holes=fill (ILO): LPIPS(x, m y + (1 - m) x) with the fill held constant; without holes, the black mode;
    a degraded image that is not the generated one masked is refused in one line."""
    g = torch.Generator().manual_seed(0)
    y, x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1)
    m = torch.ones(2, 1, 32, 32)
    m[..., 8:20, 10:24] = 0
    y = m * (y + 1) - 1                                                   # the photo: black holes
    fill, black = (get_registry().build_loss(f'vgg16:weights=random,holes={h}') for h in ('fill', 'black'))
    for loss in (fill, black):
        loss.prepare(y, m)
    vgg = fill.vgg
    xg = x.clone().requires_grad_()
    v = fill(LossContext(pred=m * (xg + 1) - 1, target=y, mask=m, image=xg))
    want = (vgg(to_vgg_input(m * y + (1 - m) * x)) - vgg(to_vgg_input(x))).square().sum(1)
    torch.testing.assert_close(v, want, rtol=1e-4, atol=1e-5)
    v.sum().backward()
    xr = x.clone().requires_grad_()   # the gradient: through the generated side only
    vgg.distance(to_vgg_input(xr), vgg(to_vgg_input(m * y + (1 - m) * x))).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)
    assert not torch.allclose(v, black(LossContext(pred=m * (x + 1) - 1, target=y, mask=m, image=x)))
    plain = LossContext(pred=x, target=y, mask=None, image=x)
    torch.testing.assert_close(fill(plain), black(plain))
    with pytest.raises(ValueError, match=r"holes=fill: needs the holes at the generated image's size .* the "
                                         r"generated images are \(2, 3, 64, 64\), the degraded ones \(2, 3, 32, 32\)"):
        fill(LossContext(pred=x, target=y, mask=m, image=torch.zeros(2, 3, 64, 64)))


def test_vgg16_fill_mode_in_an_inpainting_run(G):
    from ganinv_core.engine import invert
    t = torch.rand(2, 3, G.img_resolution, G.img_resolution, generator=torch.Generator().manual_seed(1)) * 2 - 1
    res = invert(G, t, degradations=['inpaint'], losses=['vgg16:weights=random,holes=fill', 'latent-dist'], steps=3)
    assert res.history['vgg16'].shape == (3, 2) and (res.history['vgg16'] > 0).all()
