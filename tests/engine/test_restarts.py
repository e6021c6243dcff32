"""invert(restarts=K): K starts per target in one batch, the lowest final loss kept."""
import numpy as np
import pytest
import torch

from ganinv_core.engine import InversionError, invert, w_stats
from ganinv_core.engine import _restarts
from ganinv_core.io.images import render_seed, to_tensor

KW = dict(losses=['mse', 'latent-dist', 'noise-reg'], steps=8, seed=5, lr=0.05)


def targets(G, *seeds):
    return to_tensor(np.stack([render_seed(G, s)[0] for s in seeds]))


def test_each_start_is_the_run_from_that_start_and_the_lowest_loss_is_kept(G):
    t = targets(G, 1, 2)
    res = invert(G, t, restarts=3, clean=t, **KW)
    assert res.images.shape == (2, 3, 32, 32) and res.w.shape[0] == 2 and res.history['total'].shape == (8, 2)
    every = res.extra['restarts']['images']
    assert every.shape == (3, 2, 3, 32, 32)
    w0 = torch.from_numpy(w_stats(G)[0]).float()
    starts = _restarts.starts(G, w0, 5, [0, 1], 3)
    for i in range(2):
        info = res.metrics[i]['restarts']
        assert info['chosen'] == int(np.argmin(info['losses'])) and len(info['psnr_vs_clean']) == 3
        assert torch.equal(res.images[i], every[info['chosen'], i])
        assert res.metrics[i]['loss']['total'] == pytest.approx(min(info['losses']))
        for k in range(3):
            # start k of image i is exactly a one-start run from that latent with that start's random numbers
            # (batched and single convolutions round differently: the tolerance of test_batch_equals_one_at_a_time)
            one = invert(G, t[i:i + 1], init={'w': starts[k * 2 + i:k * 2 + i + 1]}, indices=[i + k * 2 ** 32],
                         **KW)
            torch.testing.assert_close(every[k, i], one.images[0], rtol=0, atol=2e-2)
            assert info['losses'][k] == pytest.approx(float(one.history['total'][-1, 0]), rel=1e-3)
    plain = invert(G, t, **KW)   # start 0 is the projector's start: a run without restarts
    torch.testing.assert_close(every[0], plain.images, rtol=0, atol=2e-2)


def test_starts_are_the_mean_then_distinct_reproducible_typical_latents(G):
    w0 = torch.from_numpy(w_stats(G)[0]).float()
    s = _restarts.starts(G, w0, 7, [0, 1], 4)
    assert s.shape == (8, 1, G.w_dim)
    torch.testing.assert_close(s[:2, 0], w0.expand(2, -1))
    assert torch.equal(s, _restarts.starts(G, w0, 7, [0, 1], 4))                 # reproducible
    assert not torch.equal(s, _restarts.starts(G, w0, 8, [0, 1], 4))             # the seed matters
    d = (s[2:, 0] - w0).norm(dim=1)
    assert (d > 0).all() and len(set(np.round(d.numpy(), 5))) == 6                # six distinct starts
    z = np.random.default_rng([7, 1, 2]).standard_normal(G.z_dim)                 # start 2 of image 1
    full = G.mapping(torch.from_numpy(z).float()[None], None)[0, 0]
    torch.testing.assert_close(s[5, 0], w0 + _restarts.PSI * (full - w0))


def test_the_choice_follows_the_final_loss():
    """choose() on a made-up result: image 0's lowest final loss is its start 2, image 1's its start 1."""
    n, k = 2, 3
    final = np.array([[5.0, 3.0], [4.0, 1.0], [2.0, 9.0]])      # [K, N]
    hist = np.zeros((4, k * n))
    hist[-1] = final.reshape(-1)
    ims = torch.arange(k * n, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)
    from ganinv_core.engine import Result
    res = Result(images=ims, degraded=ims, targets=ims, clean=None, w=ims[:, :1, 0], noise={'n': ims[:, :1]},
                 history={'total': hist}, metrics=[{'loss': {'total': float(v)}} for v in final.reshape(-1)],
                 latent_space='w', steps=4, seed=0, precision='fp32', wall_time=1.0, steps_per_second=4.0)
    out = _restarts.choose(res, n, k)
    assert [m['restarts']['chosen'] for m in out.metrics] == [2, 1]
    assert out.images[:, 0, 0, 0].tolist() == [4.0, 3.0]    # rows 2*2+0 and 1*2+1
    assert out.history['total'][-1].tolist() == [2.0, 1.0] and out.targets.shape[0] == 2
    assert [m['loss']['total'] for m in out.metrics] == [2.0, 1.0]


@pytest.mark.parametrize('bad', [0, 65, 1.5, True, '2'])
def test_bad_restarts(G, bad):
    with pytest.raises(InversionError, match=r'^restarts: must be an integer in \[1, 64\]'):
        invert(G, targets(G, 1), restarts=bad, **KW)


def test_restarts_and_init_are_one_or_the_other(G):
    with pytest.raises(InversionError, match='init cannot be given too'):
        invert(G, targets(G, 1), restarts=2, init={'w': np.zeros((1, 1, G.w_dim))}, **KW)
