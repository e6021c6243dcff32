"""Backend dispatch rules, GANINV_OPS, what the compiled path leaves to the reference, the build lock's stale-lock
recovery, remembered build failures (with a fake build function: nothing is compiled here), and the doctor
report."""
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from ganinv_core import ops
from ganinv_core.ops import _backend, _ext, _jit

from _devices import DEVICES


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(_backend, '_warned', set())


def test_auto_uses_the_compiled_kernel_on_cpu(monkeypatch):
    monkeypatch.delenv('GANINV_OPS', raising=False)
    x = torch.zeros(2, 3)
    assert _ext.available('cpu') == (True, '')
    assert _backend.resolve('bias_act', x) == 'ext'
    assert _backend.resolve('bias_act', x, 'ref') == 'ref'
    monkeypatch.setenv('GANINV_OPS', 'ref')
    assert _backend.resolve('bias_act', x) == 'ref'
    assert _backend.resolve('bias_act', x, 'ext') == 'ext'  # an explicit impl wins over the env var


def test_public_ops_call_the_chosen_backend(monkeypatch):
    calls = []
    monkeypatch.setattr(_ext, 'bias_act_ext', lambda *a: calls.append('ext') or a[0])
    x = torch.randn(2, 3, 4, 4)
    monkeypatch.setenv('GANINV_OPS', 'ext')
    ops.bias_act(x, act='lrelu')
    monkeypatch.setenv('GANINV_OPS', 'ref')
    ops.bias_act(x, act='lrelu')
    assert calls == ['ext']


def test_autograd_runs_in_cpp_without_a_python_wrapper():
    """The ops' backward nodes are the C++ ones from csrc/autograd.cpp (no Python autograd.Function per call)."""
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    f = torch.ones(4)
    y = torch.ops.ganinv.bias_act(x, b, 1, _ext.ACT_CODES['swish'], 0.0, 1.0, -1.0)
    assert 'BiasActFn' in y.grad_fn.name()
    gx, = torch.autograd.grad(y.sum(), x, create_graph=True)
    assert 'BiasActGradFn' in gx.grad_fn.name()
    u = torch.ops.ganinv.upfirdn2d(x, f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)
    assert 'UpfirdnFn' in u.grad_fn.name()
    # d/dx of a second derivative would need a third-order kernel: one clear error, not a wrong number
    g2, = torch.autograd.grad(gx.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='third-order gradients are not supported'):
        torch.autograd.grad(g2.sum(), x)


def test_autograd_kernels_are_required(monkeypatch):
    """A `_C` built from sources older than csrc/autograd.cpp is reported unusable, not silently non-differentiable."""
    real = _ext._has_kernels
    monkeypatch.setattr(_ext, '_has_kernels', lambda key, ops=_ext.OPS: key != 'Autograd' and real(key, ops))
    ok, reason = _ext._load('cpu')
    assert not ok and 'no autograd kernels' in reason and 'pip install' in reason


def test_a_c_lacking_newer_ops_is_reported(monkeypatch):
    """A `_C` built before modconv_epilogue existed: one clear 'reinstall' reason, not a duplicate-library build."""
    real = _ext._has_kernels
    monkeypatch.setattr(_ext, '_has_kernels',
                        lambda key, ops=_ext.OPS: real(key, ops) and not any('epilogue' in o for o in ops))
    monkeypatch.setattr(_ext, '_jit_build', lambda *a: pytest.fail('no just-in-time build over a loaded _C'))
    ok, reason = _ext._load('cpu')
    assert not ok and 'lacks some ops' in reason and 'pip install' in reason


def test_bad_choice_is_a_value_error(monkeypatch):
    monkeypatch.setenv('GANINV_OPS', 'fast')
    with pytest.raises(ValueError, match='GANINV_OPS must be auto, ref or ext'):
        _backend.resolve('upfirdn2d', torch.zeros(1))
    with pytest.raises(ValueError, match="impl must be"):
        _backend.resolve('upfirdn2d', torch.zeros(1), impl='cuda')


def test_auto_falls_back_with_one_warning_naming_the_reason(monkeypatch, fresh_warnings):
    monkeypatch.delenv('GANINV_OPS', raising=False)
    x = torch.zeros(2, 3, dtype=torch.complex64)  # no complex kernels anywhere
    with pytest.warns(RuntimeWarning, match='reference path on cpu: the cpu kernels take float32, float64, '
                                            'float16, bfloat16, not complex64'):
        assert _backend.resolve('bias_act', x) == 'ref'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert _backend.resolve('upfirdn2d', x) == 'ref'  # same reason: no second warning


def test_unavailable_device_auto_vs_ext(monkeypatch, fresh_warnings):
    monkeypatch.setitem(_ext._status, 'cpu', (False, 'simulated build failure'))
    x = torch.zeros(3)
    monkeypatch.setenv('GANINV_OPS', 'auto')
    with pytest.warns(RuntimeWarning, match='simulated build failure'):
        assert _backend.resolve('bias_act', x) == 'ref'
    monkeypatch.setenv('GANINV_OPS', 'ext')
    with pytest.raises(_ext.ExtUnavailableError, match='requested .* cannot run on cpu: simulated build failure'):
        _backend.resolve('bias_act', x)


def test_the_remembered_choice_follows_every_input_of_the_choice(monkeypatch, fresh_warnings):
    """`resolve` remembers an 'ext' answer (the full choice costs as much as a small launch), but a change of
    GANINV_OPS, of the availability, of GANINV_SELFTEST or of the self-test's outcome is seen on the next call."""
    from ganinv_core.ops import _selftest
    monkeypatch.delenv('GANINV_OPS', raising=False)
    monkeypatch.delenv('GANINV_SELFTEST', raising=False)
    monkeypatch.setattr(_backend, '_memo', {})
    runs = []
    real_run = _selftest._run
    monkeypatch.setattr(_selftest, '_run', lambda dev: runs.append(dev) or real_run(dev))
    monkeypatch.setattr(_selftest, '_results', {})
    x = torch.zeros(2, 3)
    assert [_backend.resolve('bias_act', x) for _ in range(3)] == ['ext'] * 3
    assert runs == ['cpu'] and len(_backend._memo) == 1          # checked once, then remembered
    monkeypatch.setenv('GANINV_OPS', 'ref')
    assert _backend.resolve('bias_act', x) == 'ref'
    monkeypatch.setenv('GANINV_OPS', 'auto')
    assert _backend.resolve('bias_act', x) == 'ext'
    # a failed self-test outcome for the device (a new outcome object): the reference, with its warning
    monkeypatch.setitem(_selftest._results, 'cpu', {'bias_act': (False, 'simulated mismatch')})
    with pytest.warns(RuntimeWarning, match='simulated mismatch'):
        assert _backend.resolve('bias_act', x) == 'ref'
    assert _backend.resolve('upfirdn2d', x) == 'ext'             # the other ops keep their kernels
    monkeypatch.setenv('GANINV_SELFTEST', '0')                    # the check switched off: kernels again
    assert _backend.resolve('bias_act', x) == 'ext'
    monkeypatch.delenv('GANINV_SELFTEST')
    monkeypatch.setattr(_selftest, '_results', {})               # a reset outcome: the check runs again
    assert _backend.resolve('bias_act', x) == 'ext' and runs == ['cpu', 'cpu']
    monkeypatch.setitem(_ext._status, 'cpu', (False, 'simulated build failure'))
    with pytest.warns(RuntimeWarning, match='simulated build failure'):
        assert _backend.resolve('bias_act', x) == 'ref'
    monkeypatch.setenv('GANINV_OPS', 'ext')
    with pytest.raises(_ext.ExtUnavailableError, match='simulated build failure'):
        _backend.resolve('bias_act', x)
    with pytest.raises(_backend.BackendChoiceError, match='impl must be'):
        _backend.resolve('bias_act', x, impl=['ext'])              # validated before any lookup (unhashable)


def test_a_self_test_finished_during_the_choice_is_not_remembered_as_passed(monkeypatch, fresh_warnings):
    """Another thread finishes the self-test (the op fails it) while this call's check is deferred: this call may
    answer 'ext', but the next call must see the failure (the memo keeps only answers drawn from unchanged state)."""
    from ganinv_core.ops import _selftest
    monkeypatch.delenv('GANINV_OPS', raising=False)
    monkeypatch.delenv('GANINV_SELFTEST', raising=False)
    monkeypatch.setattr(_backend, '_memo', {})
    monkeypatch.setattr(_selftest, '_results', {})
    monkeypatch.setattr(_selftest, '_deferred', lambda: True)
    real = _backend._choose

    def choose_while_another_thread_finishes(*args):
        answer = real(*args)
        _selftest._results['cpu'] = {'bias_act': (False, 'simulated mismatch')}
        return answer

    monkeypatch.setattr(_backend, '_choose', choose_while_another_thread_finishes)
    x = torch.zeros(2, 3)
    assert _backend.resolve('bias_act', x) == 'ext'   # deferred: the kernels, unchecked yet
    monkeypatch.setattr(_backend, '_choose', real)
    with pytest.warns(RuntimeWarning, match='simulated mismatch'):
        assert _backend.resolve('bias_act', x) == 'ref'


# --- what the compiled path cannot do takes the reference, with the same results ------------------------------

@pytest.mark.parametrize('impl', [None, 'ext'])
def test_epilogue_takes_the_reference_where_an_input_needs_a_gradient(impl):
    """The kernel has no autograd of its own: with an input that needs a gradient the public op runs the reference,
    whose gradients are right (they used to be silently missing)."""
    c, d = torch.randn(2, 3, 4, 4, requires_grad=True), torch.rand(2, 3) + 0.5
    b, noise = torch.randn(3, requires_grad=True), torch.randn(2, 1, 4, 4)
    gy = torch.randn(2, 3, 4, 4)
    got = torch.autograd.grad(ops.modconv_epilogue(c, d, noise, b, act='lrelu', impl=impl), (c, b), gy)
    want = torch.autograd.grad(ops.modconv_epilogue(c, d, noise, b, act='lrelu', impl='ref'), (c, b), gy)
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r)
    with torch.no_grad():   # without gradients, the kernel (same values)
        torch.testing.assert_close(ops.modconv_epilogue(c, d, noise, b, act='lrelu', impl=impl),
                                   ops.modconv_epilogue(c, d, noise, b, act='lrelu', impl='ref'))


def test_upfirdn2d_with_a_trainable_filter_gets_its_gradient():
    x, f = torch.randn(1, 2, 6, 6), ops.setup_filter([1, 3, 3, 1]).requires_grad_()
    gy = torch.randn(1, 2, 6, 6)
    (gf,) = torch.autograd.grad(ops.upfirdn2d(x, f, padding=[2, 1, 2, 1]), f, gy)   # 'auto': used to raise
    (rf,) = torch.autograd.grad(ops.upfirdn2d(x, f, padding=[2, 1, 2, 1], impl='ref'), f, gy)
    torch.testing.assert_close(gf, rf)


@pytest.mark.parametrize('impl', ['ext', 'ref'])
def test_a_negative_gain_with_a_separable_filter(impl):
    """sqrt(gain) per axis is not real: the ext path returned NaN, the reference raised on a complex filter."""
    x, f = torch.randn(1, 2, 7, 7), ops.setup_filter([1, 3, 3, 1], separable=True)
    pos = ops.upfirdn2d(x, f, padding=1, gain=3.0, impl=impl)
    torch.testing.assert_close(ops.upfirdn2d(x, f, padding=1, gain=-3.0, impl=impl), -pos)
    with pytest.raises(ops.OpArgumentError, match=r'setup_filter: .*gain=-2 < 0 needs the 2-D form'):
        ops.setup_filter([1, 3, 3, 1], separable=True, gain=-2)


@pytest.mark.parametrize('impl', ['ext', 'ref'])
def test_bias_act_returns_x_dtype_whatever_the_bias_dtype(impl):
    x, b = torch.randn(2, 3, 4, 4), torch.randn(3, dtype=torch.float64)
    y = ops.bias_act(x, b, act='lrelu', impl=impl)
    assert y.dtype == torch.float32   # the reference used to promote to float64
    torch.testing.assert_close(y, ops.bias_act(x, b.float(), act='lrelu', impl='ref'))




@pytest.mark.parametrize('dev', DEVICES)
def test_the_absent_operand_is_made_once_and_autograd_may_save_it(dev, monkeypatch):
    """The stand-in for an absent bias / noise / e is one 0-element tensor per device and dtype. First made inside
    inference mode it is still an ordinary tensor: a later differentiable call saves it for the backward, which an
    inference tensor would refuse. A fake tensor (torch.compile's tracing) gets one of its own kind."""
    monkeypatch.setattr(_ext, '_ABSENT', {})
    x = torch.randn(2, 3, 4, 4, device=dev)
    with torch.inference_mode():
        ops.bias_act(x, None, act='lrelu', impl='ext')
        first = _ext._absent(x)
    assert first is _ext._absent(x) and first.numel() == 0 and (first.device, first.dtype) == (x.device, x.dtype)
    assert not first.is_inference()
    assert _ext._absent(x.double()).dtype == torch.float64 and len(_ext._ABSENT) == 2
    xg = x.clone().requires_grad_(True)
    gy = torch.randn_like(x)
    got, = torch.autograd.grad(ops.bias_act(xg, None, act='lrelu', clamp=1.0, impl='ext'), xg, gy)
    want, = torch.autograd.grad(ops.bias_act(xg, None, act='lrelu', clamp=1.0, impl='ref'), xg, gy)
    torch.testing.assert_close(got, want)
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(x)
        assert isinstance(_ext._absent(fake), FakeTensor) and len(_ext._ABSENT) == 2


@pytest.mark.skipif(torch.version.cuda is not None, reason='checks the CPU-only torch message')
def test_cuda_unavailable_reason_on_cpu_only_torch():
    assert _ext.available('cuda') == (False, 'this torch build has no CUDA support')


def _doctor_rows(report: str) -> list[list[str]]:
    """The report's table: [device, op, backend, reason] per row."""
    return [ln.split(None, 3) for ln in report.splitlines() if ln.split()[:1] in (['cpu'], ['cuda'])]


def test_doctor_report_lists_every_op_and_device(monkeypatch):
    monkeypatch.delenv('GANINV_OPS', raising=False)
    report = ops.doctor_report()
    assert f'torch {torch.__version__}' in report
    rows = _doctor_rows(report)
    assert {(r[0], r[1]) for r in rows} == {(d, o) for d in ('cpu', 'cuda')
                                           for o in ('bias_act', 'upfirdn2d', 'modconv_epilogue', 'lpips_distance',
                                                     'noise_autocorr')}
    assert all(r[2] == 'ext' for r in rows if r[0] == 'cpu')
    if not torch.cuda.is_available():
        assert all(r[2] == 'ref' and len(r) > 3 for r in rows if r[0] == 'cuda')  # with the reason


def test_doctor_reports_what_is_wrong_instead_of_failing(monkeypatch):
    """A bad GANINV_OPS, a missing tool and a remembered build failure are lines of the report, not exceptions;
    GANINV_OPS=ref puts every row on the reference path and says why."""
    from ganinv_core.ops import _jit, doctor
    monkeypatch.setenv('GANINV_OPS', 'fast')
    real_which = doctor.shutil.which
    monkeypatch.setattr(doctor.shutil, 'which', lambda cmd: None if cmd == 'nvcc' else real_which(cmd))
    monkeypatch.setattr(_jit, '_FAILED', {'/cache/abc': 'nvcc exited with 1 (log: /cache/abc/build.log)'})
    report = ops.doctor_report()
    assert "  ! doctor: GANINV_OPS must be auto, ref or ext, got 'fast'" in report.splitlines()
    assert '  nvcc: not found' in report.splitlines()
    assert report.splitlines()[-2:] == ['  remembered build failures (delete the FAILED file or set GANINV_REBUILD=1 '
                                        'to retry):', '    nvcc exited with 1 (log: /cache/abc/build.log)']
    cpu = [r for r in _doctor_rows(report) if r[0] == 'cpu']
    assert len(cpu) == 5 and all(r[2] == 'ext' for r in cpu)   # a bad value reads as auto here
    monkeypatch.setenv('GANINV_OPS', 'ref')
    assert [r[2:] for r in _doctor_rows(ops.doctor_report())] == [['ref', 'GANINV_OPS=ref']] * 10


# --- the just-in-time build machinery, with fake builders -------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('GANINV_CACHE_DIR', str(tmp_path))
    monkeypatch.delenv('GANINV_REBUILD', raising=False)
    monkeypatch.setattr(_jit, '_FAILED', {})
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'k.cpp').write_text('// kernel v1\n')
    (src / 'k.h').write_text('// header\n')
    return src


def test_build_once_then_cached_key(cache):
    built = []
    folder = _jit.build_and_load('k', [cache / 'k.cpp'], build_fn=lambda *a: built.append(a[2]))
    assert built == [folder / 'build'] and folder.parent == _jit.cache_root()
    (cache / 'k.h').write_text('// header v2\n')  # a header change gives a new key
    assert _jit.build_and_load('k', [cache / 'k.cpp'], build_fn=lambda *a: None) != folder


def test_failure_is_remembered_in_process_and_on_disk(cache, monkeypatch):
    calls = []

    def failing(*a):
        calls.append(1)
        raise OSError('Ninja is required to load C++ extensions')

    with pytest.raises(_jit.BuildError, match='Ninja is required'):
        _jit.build_and_load('k', [cache / 'k.cpp'], build_fn=failing)
    with pytest.raises(_jit.BuildError, match='not retried'):
        _jit.build_and_load('k', [cache / 'k.cpp'], build_fn=failing)
    monkeypatch.setattr(_jit, '_FAILED', {})  # a new process: the FAILED file still stops it
    with pytest.raises(_jit.BuildError, match='Ninja is required'):
        _jit.build_and_load('k', [cache / 'k.cpp'], build_fn=failing)
    assert calls == [1]
    monkeypatch.setenv('GANINV_REBUILD', '1')  # explicit retry
    _jit.build_and_load('k', [cache / 'k.cpp'], build_fn=lambda *a: calls.append(2))
    assert calls == [1, 2]
    (cache / 'k.cpp').write_text('// kernel v2\n')  # changed sources are a new key: built again
    monkeypatch.delenv('GANINV_REBUILD')
    _jit.build_and_load('k', [cache / 'k.cpp'], build_fn=lambda *a: calls.append(3))
    assert calls == [1, 2, 3]


_FAILS_WHILE_HOLDING = '''
import pathlib, sys, time
from ganinv_core.ops._jit import BuildLock
folder = pathlib.Path(sys.argv[1])
with BuildLock(folder / "lock"):
    print("locked", flush=True)
    time.sleep(1.0)
    (folder / "FAILED").write_text("ganinv: building the k kernels failed (in the other process)\\n\\nits log\\n")
'''


def test_a_build_that_failed_in_another_process_while_waiting_is_not_retried(cache):
    """Process A holds the lock and fails; process B, waiting for the lock, reads A's failure instead of building."""
    folder = _jit.cache_root() / f'k-{_jit.build_key([cache / "k.cpp", cache / "k.h"])}'
    folder.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, '-c', _FAILS_WHILE_HOLDING, str(folder)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout.readline().strip() == 'locked'
        built = []
        with pytest.raises(_jit.BuildError, match=r'^ganinv: building the k kernels failed \(in the other process\)$'):
            _jit.build_and_load('k', [cache / 'k.cpp'], build_fn=lambda *a: built.append(1), timeout=30)
        assert built == [] and str(folder) in _jit._FAILED
    finally:
        other.kill()
        other.wait()


_HOLDER = '''
import sys, time
from ganinv_core.ops._jit import BuildLock
with BuildLock(sys.argv[1], use_flock=sys.argv[2] == "1"):
    print("locked", flush=True)
    time.sleep(60)
'''


@pytest.mark.parametrize('use_flock', [True, False])
def test_lock_recovers_from_a_killed_holder(tmp_path, use_flock):
    path = tmp_path / 'lock'
    proc = subprocess.Popen([sys.executable, '-c', _HOLDER, str(path), '1' if use_flock else '0'],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'locked'
        with pytest.raises(_jit.BuildError, match=f'held by pid/host {proc.pid}'):  # a live holder blocks
            with _jit.BuildLock(path, timeout=0.3, poll=0.05, use_flock=use_flock):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # killed mid-build: its lock file stays behind
        proc.wait()
    assert path.exists()
    t0 = time.monotonic()
    with _jit.BuildLock(path, timeout=5, poll=0.05, use_flock=use_flock) as lock:
        assert lock.recovered_stale
        assert path.read_text().split()[0] == str(os.getpid())
    assert time.monotonic() - t0 < 5


def test_lock_excludes_within_threads_of_processes(tmp_path):
    # Two sequential holders: the second gets the lock after the first releases it cleanly.
    path = tmp_path / 'lock'
    with _jit.BuildLock(path):
        pass
    with _jit.BuildLock(path, timeout=1) as lock:
        assert not lock.recovered_stale


def test_a_process_first_op_call_may_be_inside_torch_compile():
    """Cold state (no kernels loaded, no choice remembered, no self-test run): the dispatch code traces whole under
    fullgraph=True, and the compiled result equals the eager one."""
    code = ('import torch\n'
            'from ganinv_core import ops\n'
            'x, b = torch.randn(2, 3, 4, 4), torch.randn(3)\n'
            'f = torch.compile(lambda x, b: ops.bias_act(x, b, act="lrelu", clamp=1.0), fullgraph=True,\n'
            '                  backend="aot_eager")\n'
            'y = f(x, b)\n'
            'assert torch.equal(y, ops.bias_act(x, b, act="lrelu", clamp=1.0))\n'
            'print("traced")\n')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'GANINV_OPS': 'auto'})
    assert r.returncode == 0 and 'traced' in r.stdout, r.stderr[-2000:]


_WITHOUT_C = '''
import importlib.abc, sys, warnings
class Hide(importlib.abc.MetaPathFinder):  # an install whose extension did not build
    def find_spec(self, name, path, target=None):
        if name == 'ganinv_core._C':
            raise ImportError('simulated: no _C here')
sys.meta_path.insert(0, Hide())
import torch
from ganinv_core import ops
x, b = torch.randn(2, 3, 4, 4), torch.randn(3)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter('always')
    y = ops.bias_act(x, b, act='lrelu')
    ops.upfirdn2d(x, ops.setup_filter([1, 3, 3, 1]), up=2)
print('WARNINGS', len(w), w[0].message)
print('SAME AS REF', torch.equal(y, ops.bias_act(x, b, act='lrelu', impl='ref')))
try:
    ops.bias_act(x, b, impl='ext')
except ops.ExtUnavailableError as e:
    print('EXT', e)
print(ops.doctor_report())
'''


def test_without_the_extension_every_op_takes_the_reference_and_says_why():
    """A real process whose `ganinv_core._C` does not import, with the just-in-time build off: the ops run on the
    reference path after one warning naming the import error; impl='ext' fails with that reason; the doctor's
    rows say it for every op."""
    r = subprocess.run([sys.executable, '-c', _WITHOUT_C], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'GANINV_JIT': '0', 'GANINV_OPS': 'auto'})
    assert r.returncode == 0, r.stderr[-2000:]
    why = 'ganinv_core._C is not importable (simulated: no _C here); just-in-time build disabled (GANINV_JIT=0)'
    out = r.stdout.splitlines()
    assert out[0] == f'WARNINGS 1 ganinv.ops: using the slower reference path on cpu: {why} (see `ganinv-run ' \
                     '--doctor`; GANINV_OPS=ref silences this)'
    assert out[1] == 'SAME AS REF True'
    assert out[2] == f'EXT bias_act: the compiled kernels were requested (GANINV_OPS=ext / impl=ext) but cannot run ' \
                     f'on cpu: {why}'
    cpu = [r for r in _doctor_rows(r.stdout) if r[0] == 'cpu']
    assert len(cpu) == 5 and all(r[2:] == ['ref', why] for r in cpu), cpu
    assert '  extension: ganinv_core._C not importable (simulated: no _C here)' in out
