"""invert(init_search=K): each target starts from the best of K candidate latents under the run's own loss."""
import numpy as np
import pytest
import torch

from ganinv_core.engine import Inversion, InversionError, invert, w_stats
from ganinv_core.engine import _restarts
from ganinv_core.hooks import Loss
from ganinv_core.io.images import render_seed, to_tensor

KW = dict(degradations=['downsample:factor=2'], losses=['mse', 'latent-dist', 'noise-reg'], steps=3, seed=5)


def targets(G, *seeds):
    return torch.nn.functional.avg_pool2d(to_tensor(np.stack([render_seed(G, s)[0] for s in seeds])), 2)


def test_evaluate_is_the_loss_a_step_records_without_latent_noise(G):
    """With zero latent-noise spread, the loss recorded at step 0 is evaluate() at the start."""
    w_avg = w_stats(G)[0]
    inv = Inversion(G, targets(G, 1, 2), w_stats=(w_avg, 0.0), **KW)
    before = inv.evaluate()
    inv.step()
    torch.testing.assert_close(before, inv.hist[0, :, -1], rtol=1e-5, atol=1e-6)
    w = inv.lat.w.detach() + 0.3
    torch.testing.assert_close(inv.evaluate(w[:, :1]), inv.evaluate(w))   # a W latent broadcasts to the rows


def test_the_run_starts_from_the_candidate_with_the_lowest_loss(G):
    t = targets(G, 3, 4)
    seen = []

    class Spy(Loss):   # what the run started from (LossContext.w_init), fixed while w moves
        name = 'spy'

        def forward(self, ctx):
            seen.append(ctx.w_init.clone())
            return ctx.w.new_zeros(ctx.w.shape[0])
    res = invert(G, t, init_search=6, **dict(KW, losses=[*KW['losses'], Spy()]))
    w0 = torch.from_numpy(w_stats(G)[0]).float()
    cand = _restarts.starts(G, w0, 5, [0, 1], 6).reshape(6, 2, 1, -1)
    probe = Inversion(G, t, **KW)
    losses = torch.stack([probe.evaluate(c) for c in cand])             # [6, 2], computed here independently
    for i in range(2):
        info = res.metrics[i]['init_search']
        np.testing.assert_allclose(info['losses'], losses[:, i].numpy(), rtol=1e-5)
        assert info['chosen'] == int(losses[:, i].argmin())
        torch.testing.assert_close(seen[-1][i], cand[info['chosen'], i])
    again = invert(G, t, init_search=6, **KW)                              # reproducible
    assert [m['init_search']['chosen'] for m in again.metrics] == [m['init_search']['chosen'] for m in res.metrics]
    assert 'init_search' not in invert(G, t, **KW).metrics[0]


@pytest.mark.parametrize('kwargs, message', [
    (dict(init_search=0), r'init_search: must be an integer in \[1, 1024\], got 0'),
    (dict(init_search=2.0), r'init_search: must be an integer'),
    (dict(init_search=2, restarts=2), 'init_search: restarts already start from several latents'),
    (dict(init_search=2, init={'w': np.zeros((1, 1, 32))}), 'init_search: searches for the starting latent'),
])
def test_bad_searches_are_refused(G, kwargs, message):
    with pytest.raises(InversionError, match=message):
        invert(G, targets(G, 1), **KW, **kwargs)
