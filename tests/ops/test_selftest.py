"""The kernels' one-time self-test against the reference (`ops._selftest`): every op passes on each device; a wrong
or raising kernel is caught, named, and routed to the reference path while the other ops keep their kernels;
GANINV_SELFTEST=0 and tracing / capture leave it unrun."""
import pytest
import torch

from ganinv_core import ops
from ganinv_core.ops import _backend, _ext, _selftest

from _devices import DEVICES



@pytest.fixture
def fresh(monkeypatch):
    """No remembered outcome or warning: the check runs anew in the test (and the suite's outcome comes back)."""
    monkeypatch.setattr(_selftest, '_results', {})
    monkeypatch.setattr(_backend, '_warned', set())
    monkeypatch.delenv('GANINV_OPS', raising=False)
    monkeypatch.delenv('GANINV_SELFTEST', raising=False)


@pytest.mark.parametrize('device', DEVICES)
def test_every_op_passes_within_its_tolerance(device, fresh):
    assert _ext.available(device)[0]
    got = _selftest.results(device)
    assert set(got) == set(_selftest.CASES) == {'bias_act', 'upfirdn2d', 'modconv_epilogue', 'lpips_distance',
                                                 'noise_autocorr'}
    dtypes = ['float32', 'bfloat16'] + ['float16'] * (device == 'cuda')
    for op, (ok, detail) in got.items():
        assert ok, f'{op} on {device}: {detail}'
        assert detail.startswith('max error ') and all(f'({d})' in detail for d in dtypes), detail
    assert _selftest.results(device) is got   # once per process


def _one_percent_off(real):
    def wrong(*args, **kw):
        gc, *rest = real(*args, **kw)
        return (gc * 1.01, *rest)
    return wrong


def _epilogue_args():
    g = torch.Generator().manual_seed(0)
    c, gy = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    return gy, c, torch.rand(2, 4, generator=g) + 0.5, torch.randn(2, 1, 8, 8, generator=g), torch.randn(4, generator=g)


def test_a_wrong_kernel_is_caught_and_routed_to_the_reference(fresh, monkeypatch):
    """dc of the epilogue backward 1 % off: the epilogue fails its check (naming the case), takes the reference in
    'auto' with one warning, and raises when the kernels are demanded; bias_act keeps its kernel."""
    monkeypatch.setattr(_ext, 'modconv_epilogue_backward_ext', _one_percent_off(_ext.modconv_epilogue_backward_ext))
    ok, detail = _selftest.results('cpu')['modconv_epilogue']
    assert not ok and detail.startswith('(2, 16, 8, 8) projection float32: error ') and '> 0.0001' in detail, detail
    assert all(_selftest.results('cpu')[op][0] for op in _selftest.CASES if op != 'modconv_epilogue')

    gy, c, d, noise, b = _epilogue_args()
    kw = dict(act='lrelu', gain=2 ** 0.5)
    with pytest.warns(RuntimeWarning, match=r'reference path on cpu: the modconv_epilogue kernels failed their '
                                            r'self-test against the reference \(\(2, 16, 8, 8\) projection'):
        got = ops.modconv_epilogue_vjp(gy, c, d, noise, b, **kw)
    for a, r in zip(got, ops.modconv_epilogue_vjp(gy, c, d, noise, b, impl='ref', **kw)):   # not 1 % off
        assert (a is None and r is None) or torch.allclose(a, r, rtol=1e-5, atol=1e-6)
    with pytest.raises(_ext.ExtUnavailableError, match='cannot run on cpu: the modconv_epilogue kernels failed'):
        ops.modconv_epilogue(c, d, noise, b, impl='ext', **kw)

    calls = []
    monkeypatch.setattr(_ext, 'bias_act_ext', lambda *a, _r=_ext.bias_act_ext: calls.append(1) or _r(*a))
    ops.bias_act(c, b, act='lrelu')
    assert calls == [1]


def test_a_kernel_that_raises_fails_its_check(fresh, monkeypatch):
    def broken(x):
        raise RuntimeError('CUDA error: an illegal memory access was encountered\nmore lines')
    monkeypatch.setattr(_ext, 'noise_autocorr_ext', broken)
    assert _selftest.failure('cpu', 'noise_autocorr') == ('float32: RuntimeError: CUDA error: an illegal memory '
                                                          'access was encountered')
    assert _selftest.failure('cpu', 'bias_act') == ''
    report = ops.doctor_report()
    assert 'noise_autocorr    ref      self-test FAILED: float32: RuntimeError: CUDA error' in report
    assert 'bias_act          ext      self-test passed: max error ' in report


def test_switched_off_or_deferred_it_does_not_run(fresh, monkeypatch):
    monkeypatch.setattr(_selftest, '_run', lambda dev: pytest.fail('the self-test ran'))
    monkeypatch.setenv('GANINV_SELFTEST', '0')
    assert _selftest.failure('cpu', 'bias_act') == '' and _selftest._results == {}
    assert _backend.resolve('bias_act', torch.zeros(3)) == 'ext'
    assert 'self-test off (GANINV_SELFTEST=0)' in ops.doctor_report()
    monkeypatch.delenv('GANINV_SELFTEST')
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)   # torch.compile tracing: deferred, not cached
    assert _selftest.results('cpu') == {} and _selftest._results == {}
    monkeypatch.undo()
    monkeypatch.setattr(_selftest, '_results', {})
    assert all(ok for ok, _ in _selftest.results('cpu').values())       # eager again: it runs
