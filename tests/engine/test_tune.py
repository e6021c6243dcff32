"""engine/_tune.py: pivotal tuning after the latent search."""
import numpy as np
import pytest
import torch

from ganinv_core.engine import Inversion, InversionError, invert
from ganinv_core.ops import _ext

from _devices import DEVICES

KW = dict(losses=['mse', 'latent-dist', 'noise-reg'], steps=4, seed=2)


def _targets(G, n=2):
    """Smooth colour fields a random generator cannot make: tuning has something to close."""
    res = G.img_resolution
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, res), torch.linspace(-1, 1, res), indexing='ij')
    fields = [torch.stack([xx, yy, xx * yy]) * 0.8, torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx]) * 0.7]
    return torch.stack(fields[:n])


def test_tuning_lowers_each_images_loss_keeps_the_pivot_and_leaves_G_unchanged(G):
    t = _targets(G)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    kw = KW | {'losses': ['mse']}   # the regularisers do not depend on G's weights: their share would not move
    plain = invert(G, t, **kw)
    tuned = invert(G, t, tune=8, tune_lr=1e-3, **kw)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    torch.testing.assert_close(tuned.w, plain.w, rtol=0, atol=0)   # the latent is the pivot, as found
    for m, p in zip(tuned.metrics, plain.metrics):
        info = m['tune']
        assert info['steps'] == 8 and info['lr'] == 1e-3 and info['seconds'] > 0
        assert info['loss_after'] < 0.9 * info['loss_before']
        assert m['vs_target']['psnr'] > p['vs_target']['psnr'] + 0.5
        assert 'tune' not in p
    assert (tuned.images - plain.images).abs().max() > 1e-2


def test_the_loss_before_tuning_is_the_pivots(G):
    """``loss_before`` is the run's loss at the found latent and noise, evaluated apart (no w-noise)."""
    t = _targets(G, 1)
    res = invert(G, t, tune=1, **KW)
    inv = Inversion(G, t, latent_space='w+', init={'w': res.w, 'noise': res.noise}, **KW | {'steps': 1})
    assert res.metrics[0]['tune']['loss_before'] == pytest.approx(float(inv.evaluate()), rel=1e-5)


def test_a_batch_tunes_each_image_as_it_would_alone(G):
    """From the same pivots, tuning a batch gives each image what tuning it alone gives: no image sees another."""
    from ganinv_core.engine import _tune
    t, w = _targets(G), torch.randn(2, 1, G.w_dim, generator=torch.Generator().manual_seed(4)) * 0.3
    spec = dict(degradations=['downsample:factor=2'], losses=['mse', 'latent-dist'], seed=2, w_stats=None,
                modconv='auto')

    def tuned(k):
        ids = [[5, 9][k]]
        inv = Inversion(G, torch.nn.functional.avg_pool2d(t[k:k + 1], 2), init={'w': w[k:k + 1]}, indices=ids,
                        steps=1, **spec)
        return _tune.tune(inv, G, 3, 1e-3, **spec)
    both_inv = Inversion(G, torch.nn.functional.avg_pool2d(t, 2), init={'w': w}, indices=[5, 9], steps=1, **spec)
    both, info, _ = _tune.tune(both_inv, G, 3, 1e-3, **spec)
    for k in range(2):
        alone, one, _ = tuned(k)
        torch.testing.assert_close(both[k:k + 1], alone, rtol=0, atol=1e-6)
        assert info[k]['loss_after'] == pytest.approx(one[0]['loss_after'], rel=1e-6)


@pytest.mark.parametrize('device', DEVICES)
def test_the_compiled_ops_give_the_weights_the_reference_gradient(device, monkeypatch):
    """Tuning differentiates the synthesis weights through the compiled ops (bias_act's and the epilogue's bias and
    noise-strength gradients, which a frozen generator never asks for): the same gradients as the reference ops."""
    import copy
    from ganinv_core.weights import load_generator
    if not _ext.available(device)[0]:
        pytest.skip(f'the compiled {device} ops are not built')
    G = load_generator('random-32', device=device)
    t = _targets(G, 1).to(device)

    def grads(ops):
        monkeypatch.setenv('GANINV_OPS', ops)
        Gi = copy.deepcopy(G).requires_grad_(False)
        inv = Inversion(Gi, t, **KW | {'losses': ['mse'], 'precision': 'fp32'})   # no TF32 noise on a GPU
        for p in inv.lat.params:
            p.requires_grad_(False)
        params = dict(Gi.synthesis.named_parameters())
        for p in params.values():
            p.requires_grad_(True)
        inv._terms(inv.lat.w, inv.lat.w, cache=False).sum().backward()
        return {k: p.grad for k, p in params.items()}
    ref, ext = grads('ref'), grads('ext')
    assert ref.keys() == ext.keys()
    for k in ref:
        assert ref[k] is not None and ext[k] is not None, k
        scale = float(ref[k].abs().max()) + 1e-12
        torch.testing.assert_close(ext[k] / scale, ref[k] / scale, rtol=0, atol=1e-4, msg=k)


@pytest.mark.parametrize('kw,message', [
    (dict(tune=-1), r'tune: must be an integer in \[0, 100000\], got -1'),
    (dict(tune=2.5), 'tune: must be an integer'),
    (dict(tune=True), 'tune: must be an integer'),
    (dict(tune=3, tune_lr=0), 'tune_lr: must be a positive number, got 0'),
    (dict(tune=3, tune_lr=float('nan')), 'tune_lr: must be a positive number'),
    (dict(tune=3, restarts=2), 'tune: not with restarts'),
])
def test_bad_tuning_arguments_are_named(G, kw, message):
    with pytest.raises(InversionError, match=message):
        invert(G, _targets(G, 1), **KW | kw)


def test_no_tuning_is_the_plain_run(G):
    t = _targets(G, 1)
    a, b = invert(G, t, **KW), invert(G, t, tune=0, tune_lr=5.0, **KW)
    np.testing.assert_array_equal(a.images.numpy(), b.images.numpy())
    assert 'tune' not in b.metrics[0]


def test_on_tune_reports_every_step_in_order_and_can_stop_the_tuning(G):
    seen = []
    invert(G, _targets(G), tune=3, on_tune=lambda i, s: seen.append((i, s)), **KW)
    assert seen == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]

    class Stop(Exception):
        pass

    def stop(i, s):
        if (i, s) == (0, 2):
            raise Stop
    with pytest.raises(Stop):
        invert(G, _targets(G), tune=3, on_tune=stop, **KW)


def test_a_kept_tuned_generator_renders_the_restoration_from_the_pivot(G):
    """keep_tuned: each image's tuned copy, rendering its w and noise as the run did, gives its restoration; the
    copies are frozen and on the CPU, and differ from G."""
    res = invert(G, _targets(G), tune=4, tune_lr=1e-3, keep_tuned=True, **KW)
    gens = res.extra['tuned']
    assert len(gens) == 2 and all(not any(p.requires_grad for p in g.parameters()) for g in gens)
    for i, g in enumerate(gens):
        assert next(g.parameters()).device.type == 'cpu'
        assert any(not torch.equal(a, b) for a, b in zip(g.state_dict().values(), G.state_dict().values()))
        with torch.no_grad():
            img = g.synthesis(res.w[i:i + 1], noise_mode='const', noise={k: v[i:i + 1] for k, v in res.noise.items()})
        torch.testing.assert_close(img, res.images[i:i + 1], rtol=0, atol=1e-5)
    assert 'tuned' not in invert(G, _targets(G, 1), tune=2, **KW).extra
