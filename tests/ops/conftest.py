"""Fixtures of the compiled-op tests: poisoned outputs and fresh random inputs."""
import os
import secrets

import pytest
import torch

from ganinv_core.ops import _ext


@pytest.fixture
def _poison(monkeypatch):
    """Every output the kernels allocate starts as NaN, so an element they forget to write cannot pass (used by
    the kernel-vs-reference modules through `pytestmark`)."""
    monkeypatch.setenv('GANINV_DEBUG_POISON', '1')
    ok, reason = _ext.available('cpu')
    assert ok, reason


@pytest.fixture
def gen():
    """A torch.Generator seeded afresh for each test (inputs are drawn anew on every run); GANINV_TEST_SEED=N
    replays the seed a failure message names."""
    return torch.Generator().manual_seed(int(os.environ.get('GANINV_TEST_SEED') or secrets.randbits(31)))


def _clear_of_kinks(x, pre, act, alpha, gain, clamp, margin=1e-3):
    """x with every element whose pre-activation s = pre(x) (float64; `pre` may be a tuple of such maps) lies within
    `margin` of a kink (s = 0, or |gain act(s)| = clamp) moved off it, in place (x keeps its layout). A kernel that
    computes s in float32 and the float64 reference may put such an element on different sides, and its gradient
    then differs by a whole slope (or is 0 on one side only): a coin flip of the random inputs, not a kernel bug."""
    from ganinv_core.ops.bias_act import _bias_act_ref
    for _ in range(16):
        near = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
        for s in (p(x) for p in (pre if isinstance(pre, tuple) else (pre,))):
            near |= s.abs() < margin
            if clamp is not None:
                near |= (_bias_act_ref(s, None, 1, act, alpha, gain, None).abs() - clamp).abs() < margin
        if not near.any():
            return x
        x.copy_(torch.where(near, x.double() + 0.05, x.double()))   # >= one ulp of a 16-bit |x| < 8
    raise AssertionError('inputs could not be moved off the kinks')


@pytest.fixture
def clear_of_kinks():
    """`_clear_of_kinks(x, pre, act, alpha, gain, clamp)`: draws moved off the activation's kinks (see there)."""
    return _clear_of_kinks
