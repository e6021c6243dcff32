"""Tests of the example plugin: the hooks, the degradation's values, the loss's invariants."""
import pytest
import torch

import ganinv_example
from ganinv_core.hooks import LossContext, Registry, SpecError


@pytest.fixture
def registry():
    # register the plugin module directly: no dependence on what else is installed
    return Registry({'example': ganinv_example}, entry_points=False)


def test_hooks_provide_both(registry):
    assert 'colour-response' in registry.degradations
    assert 'colour-stats' in registry.losses


def test_colour_response_values(registry):
    d = registry.build_degradation('colour-response:gamma=2,blue=0.5')
    x = torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1)   # u = 1, 0.5, 0
    u = torch.tensor([1.0, 0.5, 0.0]) * torch.tensor([1.0, 1.0, 0.5])   # gains
    torch.testing.assert_close(d(x).flatten(), (u.clamp(1e-6) ** 2) * 2 - 1)


def test_colour_response_gradient_and_range(registry):
    x = (torch.rand(2, 3, 8, 8) * 2 - 1).requires_grad_()
    y = registry.build_degradation('colour-response')(x)
    y.sum().backward()
    assert y.min() >= -1 and y.max() <= 1 and torch.isfinite(x.grad).all()


def test_colour_response_rejects_bad_gamma(registry):
    with pytest.raises(SpecError, match='gamma'):
        registry.build_degradation('colour-response:gamma=0')


def test_colour_stats_loss(registry):
    loss = registry.build_loss('colour-stats')
    t = torch.rand(3, 3, 8, 8) * 2 - 1
    assert torch.all(loss(LossContext(pred=t, target=t)) == 0)
    p = t.clone()
    p[1] += 0.2
    v = loss(LossContext(pred=p, target=t))
    assert v[1] > 0 and v[0] == 0 and v[2] == 0   # per image


def test_conformance():
    """The checks ganinv runs on every installed plugin, run here too."""
    from ganinv_core.hooks.testing import check_degradation, check_loss
    check_degradation(ganinv_example.ColourResponse)
    check_loss(ganinv_example.ColourStats)
