"""benchmarks/roofline.py: its byte and FLOP accounting, checked against hand counts and the architecture."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import roofline as R  # noqa: E402
from _common import step_flops_for  # noqa: E402


def _record(fn, *args):
    rec = R.OpRecorder()
    with rec:
        fn(*args)
    return rec.ops


def test_tensor_bytes_counts_broadcast_dimensions_once():
    x = torch.zeros(2, 3, 4, 5)
    assert R.tensor_bytes(x) == 2 * 3 * 4 * 5 * 4
    assert R.tensor_bytes(torch.zeros(2, 3, 1, 1, dtype=torch.bfloat16).expand(2, 3, 4, 5)) == 2 * 3 * 2
    assert R.tensor_bytes(x.to(memory_format=torch.channels_last)) == R.tensor_bytes(x)


def test_recorder_counts_a_convolution_and_skips_views():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    ops = _record(lambda: torch.nn.functional.conv2d(x.view(2, 3, 64).view(2, 3, 8, 8), w, padding=1))
    assert [o.name for o in ops] == ['aten.convolution']
    assert ops[0].flops == 2 * 2 * 4 * 3 * 9 * 64
    assert ops[0].bytes == 4 * (x.numel() + w.numel() + 2 * 4 * 64)
    assert ops[0].phase == 'forward' and ops[0].dtype == torch.float32


def test_recorder_tells_backward_from_forward():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    s = torch.randn(2, 3, 1, 1)

    def fwd_bwd():
        (x * s).sum().backward()
    ops = _record(fwd_bwd)
    fwd = [o for o in ops if o.phase == 'forward']
    assert [o.name for o in fwd] == ['aten.mul', 'aten.sum', 'aten.ones_like']  # the last: backward's seed
    assert fwd[0].bytes == 4 * (2 * 96 + 6)       # read x and s, write x * s
    assert any(o.phase == 'backward' and o.name == 'aten.mul' for o in ops)


@pytest.mark.parametrize('network', ['random-64', 'random-256'])
def test_traced_step_flops_match_the_architecture_count(network):
    """The counter's FLOPs of one whole step equal benchmarks/flops.py's count from the layer table."""
    from ganinv_core.weights import load_generator
    ops = R.trace_step(network, batch=2, precision='fp32')
    G = load_generator(network)
    want = 2 * step_flops_for(G, fused=False)
    assert sum(o.flops for o in ops) == pytest.approx(want, rel=2e-3)
    assert {o.phase for o in ops} == {'forward', 'backward', 'update'}


def test_bounds_are_rooflines():
    card = R.CARDS['h200']
    ops = [R.Op('aten.convolution', 'forward', 10 ** 12, 10 ** 6, torch.bfloat16),    # compute-bound
           R.Op('aten.convolution', 'forward', 10 ** 9, 10 ** 10, torch.float32),     # memory-bound
           R.Op('aten.mul', 'backward', 0, 4 * 10 ** 9, torch.float32)]
    b = R.bounds(ops, card, tf32=True)
    assert b['times'][0] == pytest.approx(10 ** 12 / card.bf16)
    assert b['times'][1] == pytest.approx(10 ** 10 / card.bw)
    assert b['times'][2] == pytest.approx(4 * 10 ** 9 / card.bw)
    assert b['fused_bound'] == pytest.approx(sum(b['times'][:2]))
    fp32_conv = R.Op('aten.convolution', 'forward', 10 ** 12, 10 ** 6, torch.float32)
    assert R.op_time(fp32_conv, card, tf32=False) == pytest.approx(10 ** 12 / card.fp32)
    assert R.op_time(fp32_conv, card, tf32=True) == pytest.approx(10 ** 12 / card.tf32)
    text = R.report(ops, card, batch=1, tf32=True, title='t')
    assert '| this code (one kernel per operator) |' in text and 'aten.mul' in text


def test_nvidia_equivalent_step_flops_match_the_architecture_count():
    """The projector's step (fused modconv: per-sample weight gradients; VGG16 weight gradients) traced, against
    benchmarks/flops.py's count for that configuration."""
    from ganinv_core.weights import load_generator
    ops = R.trace_nvidia_step('random-64')
    G = load_generator('random-64')
    assert sum(o.flops for o in ops) == pytest.approx(step_flops_for(G, fused=True, vgg_weight_grads=True), rel=2e-3)
