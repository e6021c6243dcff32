"""A component that raises while it runs is named in one line: kind, name, plugin, and what was running."""
import json
import types

import numpy as np
import pytest
import torch

from ganinv_core import cli, hooks
from ganinv_core.engine import InversionError, invert
from ganinv_core.io.images import render_seed, to_tensor


class Flaky(hooks.Degradation):
    """Identity until step ``at`` (counting forward calls), then a bug."""
    name = 'flaky'
    help = 'test degradation that fails at a chosen call'
    params = (hooks.Param('at', int, 3, 'forward call that raises'),)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            return self._helper(x)
        return x

    def _helper(self, x):   # raised one frame deeper, and inside torch: the culprit is still this component
        return x @ torch.zeros(3, 3, 5)


class BadPrepare(hooks.Loss):
    name = 'bad-prepare'
    help = 'test loss whose prepare fails'

    def prepare(self, target, mask):
        raise KeyError('lost its table')

    def forward(self, ctx):
        return ctx.pred.new_zeros(ctx.pred.shape[0])


@pytest.fixture
def reg(monkeypatch):
    plugin = types.ModuleType('third_party')
    plugin.ganinv_degradations = hooks.hookimpl(lambda: [Flaky])
    plugin.ganinv_losses = hooks.hookimpl(lambda: [BadPrepare])
    r = hooks.Registry(plugins={'third-party': plugin})   # the installed plugins too: the CLI needs mse
    monkeypatch.setattr(hooks, 'get_registry', lambda: r)
    return r


def target(G):
    return to_tensor(render_seed(G, 1)[0][None])


def test_culprit_is_the_component_the_engine_called():
    d = Flaky(at=1)
    with pytest.raises(RuntimeError) as e:
        d(torch.zeros(1, 3, 4, 4))
    assert hooks.culprit(e.value) is d
    try:
        raise ValueError('no component here')
    except ValueError as plain:
        assert hooks.culprit(plain) is None


def test_a_degradation_failing_mid_run_is_one_line_naming_it(G, reg):
    with pytest.raises(InversionError) as e:
        invert(G, target(G), degradations=['flaky:at=3'], losses=['mse'], steps=5)
    msg = str(e.value)
    # call 1 is the mask probe before the first step, then one call per step: the third call is step 2
    assert msg.startswith("degradation 'flaky' (plugin 'third-party') failed at step 2: RuntimeError: ")
    assert '\n' not in msg and isinstance(e.value.__cause__, RuntimeError)


def test_a_loss_failing_in_prepare_is_named(G, reg):
    with pytest.raises(InversionError, match=r"^loss 'bad-prepare' \(plugin 'third-party'\) failed before the "
                                             r"first step: KeyError: 'lost its table'$"):
        invert(G, target(G), losses=['bad-prepare'], steps=2)


def test_a_component_built_in_user_code_is_named_too(G, reg):
    with pytest.raises(InversionError, match=r"^degradation 'flaky' \(not a registered plugin\) failed before"):
        invert(G, target(G), degradations=[type('Mine', (Flaky,), {})(at=1)], losses=['mse'], steps=2)


def test_degrading_the_result_is_covered(G, reg):
    steps = 2   # calls: mask probe, step 1, step 2, then the result's degraded image
    with pytest.raises(InversionError, match=r"'flaky' .* failed degrading the restoration: RuntimeError"):
        invert(G, target(G), degradations=[f'flaky:at={steps + 2}'], losses=['mse'], steps=steps)


def test_engine_errors_and_out_of_memory_pass_through_unchanged():
    def raiser(exc):
        def helper(x):
            raise exc
        return helper

    for exc in (torch.OutOfMemoryError('CUDA out of memory'), InversionError('already named')):
        d = Flaky(at=1)
        d._helper = raiser(exc)
        with pytest.raises(type(exc)) as e:
            with hooks.blame('at step 1', InversionError):
                d(torch.zeros(1))
        assert e.value is exc
    d = Flaky(at=1)
    d._helper = raiser(KeyError('x'))
    with pytest.raises(InversionError, match="^degradation 'flaky' .* failed at step 1: KeyError: 'x'$"):
        with hooks.blame('at step 1', InversionError):
            d(torch.zeros(1))


def test_cli_records_the_failure_and_carries_on(tmp_path, capsys, reg):
    code = cli.main(['--network', 'random-32', '--steps', '3', '--quiet', '--target', 'seed:1', 'seed:2',
                     '--batch-size', '1', '--degradation', 'flaky:at=2', '--outdir', str(tmp_path)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith('error:')]
    # the component is built once per run, so only the first batch reaches its failing call
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("error: seed1: degradation 'flaky' (plugin 'third-party') failed at step 1:")
    record = json.loads((tmp_path / 'run.json').read_text())
    assert record['status'] == 'done with errors'
    assert record['targets']['seed1']['status'] == 'failed' and record['targets']['seed2']['status'] == 'ok'
    assert not (tmp_path / 'seed1').exists() and (tmp_path / 'seed2' / 'restored.png').is_file()


def test_cli_simulation_failure_names_the_plugin(tmp_path, capsys, reg):
    code = cli.main(['--network', 'random-32', '--steps', '3', '--quiet', '--target', 'seed:1', '--simulate',
                     '--degradation', 'flaky:at=1', '--outdir', str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert ("error: degradation 'flaky' (plugin 'third-party') failed degrading the clean photo (--simulate): "
            "RuntimeError") in err


def test_a_detector_failing_is_named(reg):
    from ganinv_core.io.align import AlignError, align_faces

    class Broken(hooks.LandmarkDetector):
        name = 'broken-faces'
        help = 'test detector'

        def detect(self, image):
            return [[0, 0]][1]   # IndexError

    with pytest.raises(AlignError, match=r"^detector 'broken-faces' \(not a registered plugin\) failed detecting "
                                         r"faces: IndexError"):
        align_faces(np.zeros((64, 64, 3), np.uint8), 32, Broken())
