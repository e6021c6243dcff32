"""Reference ops against direct numpy implementations of their definitions, plus gradients and dispatch."""
import math

import numpy as np
import pytest
import torch

from ganinv_core import ops
from ganinv_core.ops import OpArgumentError, _backend
from ganinv_core.ops.bias_act import _bias_act_ref
from ganinv_core.ops.upfirdn2d import _upfirdn2d_ref


def np_upfirdn2d(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip=False, gain=1.0):
    """Upsample (zero insertion), pad / crop, convolve, decimate: the definition, pixel by pixel."""
    (upx, upy), (dx, dy), (px0, px1, py0, py1) = up, down, pad
    f = np.asarray(f, np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)
    f = f * gain
    if not flip:
        f = f[::-1, ::-1]  # a convolution is a correlation with the flipped taps
    N, C, H, W = x.shape
    u = np.zeros((N, C, H * upy, W * upx))
    u[:, :, ::upy, ::upx] = x
    p = np.zeros((N, C, u.shape[2] + max(py0, 0) + max(py1, 0), u.shape[3] + max(px0, 0) + max(px1, 0)))
    p[:, :, max(py0, 0):max(py0, 0) + u.shape[2], max(px0, 0):max(px0, 0) + u.shape[3]] = u
    p = p[:, :, max(-py0, 0):p.shape[2] - max(-py1, 0), max(-px0, 0):p.shape[3] - max(-px1, 0)]
    fh, fw = f.shape
    out = np.zeros((N, C, p.shape[2] - fh + 1, p.shape[3] - fw + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            out[:, :, i, j] = (p[:, :, i:i + fh, j:j + fw] * f).sum(axis=(2, 3))
    return out[:, :, ::dy, ::dx]


CASES = [  # f, up, down, padding, flip, gain
    ([1, 3, 3, 1], 1, 1, 0, False, 1),
    ([1, 3, 3, 1], 2, 1, [2, 1, 2, 1], False, 4),
    ([[1, 2, 0], [0, 1, 3], [2, 0, 1]], 1, 1, [1, 1, 1, 1], False, 1),
    ([[1, 2, 0], [0, 1, 3], [2, 0, 1]], 1, 1, [1, 1, 1, 1], True, 1),
    ([[1, 2], [3, 4], [5, 6]], 3, 2, [1, -1, 0, 2], False, 0.5),
    ([1, 2, 3, 4, 5, 6, 7, 8], 1, 2, [3, 4, 3, 4], False, 1),
    ([1, 3, 3, 1], (2, 1), (1, 3), [-1, 2, 1, -2], True, 2),
    ([1, 3, 3, 1], 1, 1, [-2, -1, -1, -2], False, 1),
]


@pytest.mark.parametrize('f, up, down, padding, flip, gain', CASES)
def test_upfirdn2d_matches_definition(f, up, down, padding, flip, gain):
    rng = np.random.RandomState(0)
    x = rng.randn(2, 3, 7, 9)
    ft = torch.tensor(f, dtype=torch.float64)
    got = ops.upfirdn2d(torch.from_numpy(x), ft, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    up2 = (up, up) if isinstance(up, int) else up
    down2 = (down, down) if isinstance(down, int) else down
    pad4 = [padding] * 4 if isinstance(padding, int) else padding
    want = np_upfirdn2d(x, f, up2, down2, pad4, flip, gain)  # 1-D taps: separable = their outer product
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


def test_upfirdn2d_separable_equals_outer_product():
    x = torch.randn(1, 2, 10, 10, dtype=torch.float64)
    taps = torch.tensor([1., 4, 6, 4, 1, 2, 3, 1], dtype=torch.float64)
    a = ops.upfirdn2d(x, taps, up=2, padding=[3, 4, 3, 4], gain=4)
    b = ops.upfirdn2d(x, torch.outer(taps, taps), up=2, padding=[3, 4, 3, 4], gain=4)
    torch.testing.assert_close(a, b)


def test_setup_filter():
    f = ops.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert ops.setup_filter([1] * 8).shape == (8,)            # >= 8 taps: separable
    assert ops.setup_filter([1, 2, 1], separable=True).shape == (3,)
    with pytest.raises(OpArgumentError, match='separable=True needs 1-D taps'):
        ops.setup_filter([[1, 2], [3, 4]], separable=True)
    torch.testing.assert_close(ops.setup_filter([1, 2], gain=4, separable=True), torch.tensor([2 / 3, 4 / 3]))
    torch.testing.assert_close(ops.setup_filter([1, 2], flip_filter=True, separable=True), torch.tensor([2., 1]) / 3)


def test_resampling_helpers_match_definition():
    rng = np.random.RandomState(1)
    x = rng.randn(1, 2, 6, 6)
    f = ops.setup_filter([1, 3, 3, 1]).double()
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(ops.upsample2d(xt, f).numpy(),
                               np_upfirdn2d(x, f.numpy(), (2, 2), (1, 1), (2, 1, 2, 1), gain=4), atol=1e-12)
    np.testing.assert_allclose(ops.downsample2d(xt, f).numpy(),
                               np_upfirdn2d(x, f.numpy(), (1, 1), (2, 2), (1, 1, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(ops.filter2d(xt, f).numpy(),
                               np_upfirdn2d(x, f.numpy(), (1, 1), (1, 1), (2, 1, 2, 1)), atol=1e-12)
    assert ops.upsample2d(xt, f).shape[-2:] == (12, 12) and ops.downsample2d(xt, f).shape[-2:] == (3, 3)
    # a constant image stays constant in the interior under the normalised up / down filters
    c = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(ops.upsample2d(c, f)[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12, dtype=torch.float64))


def test_upfirdn2d_first_and_second_derivatives():
    x = torch.randn(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    f = torch.tensor([[1., 2, 1], [0, 1, 3]], dtype=torch.float64)
    fn = lambda x: ops.upfirdn2d(x, f, up=2, down=(1, 2), padding=[1, -1, 2, 0], gain=3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


SQ2 = math.sqrt(2)
FORMULAS = {  # act: (numpy formula of x with alpha, default gain)
    'linear': (lambda x, a: x, 1), 'relu': (lambda x, a: np.maximum(x, 0), SQ2),
    'lrelu': (lambda x, a: np.where(x >= 0, x, a * x), SQ2), 'tanh': (lambda x, a: np.tanh(x), 1),
    'sigmoid': (lambda x, a: 1 / (1 + np.exp(-x)), 1), 'elu': (lambda x, a: np.where(x >= 0, x, np.expm1(x)), 1),
    'selu': (lambda x, a: 1.0507009873554805 * np.where(x >= 0, x, 1.6732632423543772 * np.expm1(x)), 1),
    'softplus': (lambda x, a: np.log1p(np.exp(x)), 1), 'swish': (lambda x, a: x / (1 + np.exp(-x)), SQ2),
}


@pytest.mark.parametrize('act', sorted(FORMULAS))
def test_bias_act_matches_formula(act):
    assert set(FORMULAS) == set(ops.ACTIVATIONS)
    rng = np.random.RandomState(2)
    x, b = rng.randn(2, 3, 4, 5), rng.randn(4)
    func, def_gain = FORMULAS[act]
    y = ops.bias_act(torch.from_numpy(x), torch.from_numpy(b), dim=2, act=act)
    want = func(x + b[None, None, :, None], 0.2) * def_gain
    np.testing.assert_allclose(y.numpy(), want, atol=1e-12)
    y = ops.bias_act(torch.from_numpy(x), None, act=act, alpha=0.1, gain=0.7, clamp=0.3)
    np.testing.assert_allclose(y.numpy(), np.clip(func(x, 0.1) * 0.7, -0.3, 0.3), atol=1e-12)


@pytest.mark.parametrize('act', ['lrelu', 'tanh', 'swish'])
def test_bias_act_first_and_second_derivatives(act):
    x = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: ops.bias_act(x, b, act=act, gain=1.3, clamp=5.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, b), fast_mode=True)


_X = torch.zeros(1, 2, 4, 4)


@pytest.mark.parametrize('call, message', [
    (lambda: ops.bias_act(_X.numpy()), 'bias_act: x must be a tensor, got ndarray'),
    (lambda: ops.bias_act(_X, act='gelu'), "bias_act: act='gelu' is unknown; valid: linear, relu, lrelu"),
    (lambda: ops.bias_act(_X, torch.zeros(3)), 'bias_act: b has 3 elements but x.shape[1] is 2 (x shape (1, 2, 4, 4))'),
    (lambda: ops.bias_act(_X, torch.zeros(1, 2)), 'bias_act: b must be a 1-D tensor or None'),
    (lambda: ops.bias_act(_X, torch.zeros(2), dim=4), 'bias_act: dim=4 is not an axis of x (x shape (1, 2, 4, 4))'),
    (lambda: ops.bias_act(_X, dim=-5), 'bias_act: dim=-5 is not an axis of x'),
    (lambda: ops.bias_act(_X, dim=1.0), 'bias_act: dim=1.0 is not an axis of x'),
    (lambda: ops.upfirdn2d(_X[0], ops.setup_filter([1, 1])),
     'upfirdn2d: x must be a 4-D [N, C, H, W] tensor, got (2, 4, 4)'),
    (lambda: ops.upfirdn2d(_X, None, up=0), 'upfirdn2d: up must be a positive int or a pair of them, got [0, 0]'),
    (lambda: ops.upfirdn2d(_X, None, padding=[1, 2, 3]),
     'upfirdn2d: padding must be an int or 2 or 4 ints, got [1, 2, 3]'),
    (lambda: ops.upfirdn2d(_X, None, padding=1.5), 'upfirdn2d: padding must be an int or 2 or 4 ints, got 1.5'),
    (lambda: ops.upfirdn2d(_X, torch.ones(3, 3), padding=-1),
     'upfirdn2d: the padded input (2x2) is smaller than the filter (3x3)'),
    (lambda: ops.upfirdn2d(_X, torch.ones(0)), 'upfirdn2d: f must be a non-empty 1-D or 2-D tensor or None'),
    (lambda: ops.upfirdn2d(_X, torch.ones(2, 2, 2)), 'upfirdn2d: f must be a non-empty 1-D or 2-D tensor or None'),
    (lambda: ops.setup_filter(torch.ones(2, 2, 2)), 'setup_filter: f must be a non-empty scalar, 1-D or 2-D, got '
                                                    'shape (2, 2, 2)'),
    (lambda: ops.setup_filter([]), 'setup_filter: f must be a non-empty scalar, 1-D or 2-D, got shape (0,)'),
])
def test_bad_arguments_raise_one_line(call, message):
    with pytest.raises(OpArgumentError) as e:
        call()
    assert str(e.value).startswith(message) and '\n' not in str(e.value), str(e.value)
    assert isinstance(e.value, ValueError)


def test_dispatch_to_ext_with_normalised_arguments(monkeypatch):
    from ganinv_core.ops import _ext
    calls = []
    monkeypatch.setattr(_ext, 'bias_act_ext', lambda *a: calls.append(('bias_act', a)) or a[0])
    monkeypatch.setattr(_ext, 'upfirdn2d_ext', lambda *a: calls.append(('upfirdn2d', a)) or a[0])
    monkeypatch.setattr(_backend, 'resolve', lambda op, x, impl=None: 'ext')
    x, b, f = torch.zeros(1, 2, 8, 8), torch.zeros(2), ops.setup_filter([1, 3, 3, 1])
    ops.bias_act(x, b, act='lrelu', clamp=256)
    ops.upsample2d(x, f)
    assert calls[0] == ('bias_act', (x, b, 1, 'lrelu', 0.2, SQ2, 256.0))
    name, a = calls[1]
    assert name == 'upfirdn2d' and a[0] is x and a[1] is f and a[2:] == (2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)


def test_reference_functions_directly():
    x = torch.randn(1, 1, 4, 4)
    torch.testing.assert_close(_upfirdn2d_ref(x, None, 1, 1, 0, False, 1), x)
    torch.testing.assert_close(_bias_act_ref(x, None, 1, 'relu', None, None, None), x.relu() * SQ2)
