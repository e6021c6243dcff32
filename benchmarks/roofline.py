"""Roofline bound of one inversion step on a GPU, computed without one.

    python benchmarks/roofline.py --network random-1024 --batch 8 --precision bf16 [--card h200] [--top 12]
    python benchmarks/roofline.py --nvidia     (the NVIDIA-equivalent step the benchmarks compare against)

The step (``Inversion.step``: synthesis forward and backward, degradations, losses, Adam, noise renormalisation)
runs once under ``FakeTensorMode`` (shapes, dtypes and strides, no data), and every operator it dispatches is
recorded with the FLOPs of its convolutions and matmuls (``torch.utils.flop_counter``'s formulas) and the bytes
it must move: each tensor argument read once, each result written once, broadcast (stride-0) dimensions counted
once, views free. On a card with peak ``P`` (FLOP/s for the op's dtype) and memory bandwidth ``B`` an operator
cannot take less than ``max(flops / P, bytes / B)`` -- the roofline -- so the sum over the step's operators is a
lower bound on the step's time *as this code computes it* (one kernel per operator, no cache reuse between
them), and ``flops / bound`` the highest TFLOP/s it can reach. The second bound keeps only the convolutions and
matmuls, as if every elementwise op, filter and reduction were fused into them: a limit for any implementation
of the same maths.

The CPU kernels stand in for the CUDA ones (same operators, same tensors); cuDNN's layout conversions and
kernels that one operator splits into are not seen, and launch cost is left out, so measured times sit above
the bound. Peaks: the H200's bf16 figure was measured (benchmarks/RESULTS.md); the rest are NVIDIA's dense
specifications, and bandwidth is the specification (a bound: ~90 % is reached in practice).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from ganinv_core.engine._precision import Precision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Card:
    name: str
    bf16: float   # dense FLOP/s for bf16/fp16 tensor-core work
    tf32: float   # dense FLOP/s for float32 convs/matmuls with TF32 on
    fp32: float   # FLOP/s without tensor cores
    bw: float     # memory bandwidth, byte/s


CARDS = {
    'h200': Card('NVIDIA H200 (bf16 peak measured 786 TFLOP/s; 4.8 TB/s)', 786e12, 494.5e12, 67e12, 4.8e12),
    'h100': Card('NVIDIA H100 SXM (spec: 989 bf16 TFLOP/s; 3.35 TB/s)', 989e12, 494.5e12, 67e12, 3.35e12),
}

_FREE = {'prim.device', 'aten.detach', 'aten.alias', 'aten.lift_fresh', 'aten.empty', 'aten.empty_like',
         'aten.empty_strided', 'aten.new_empty', 'aten.new_empty_strided', 'aten._local_scalar_dense',
         'aten.set_', 'aten.is_same_size', 'aten.resize_'}


def category(name: str) -> str:
    """The kind of work an operator does, for the breakdown: its packet name (``aten.mul``) -> a label."""
    if name.startswith('ganinv.bias_act'):
        return 'bias_act'
    if name.startswith('ganinv.upfirdn2d'):
        return 'upfirdn2d'
    if name.startswith('ganinv.modconv_epilogue'):
        return 'modconv_epilogue'
    op = name.split('.', 1)[-1]
    if op.startswith(('convolution', 'mm', 'addmm', 'bmm', 'baddbmm', '_convolution')):
        return 'conv/matmul'
    if op.startswith(('sum', 'mean', 'norm', 'linalg_vector_norm', 'amax', 'amin', 'var', 'std', 'all', 'any')):
        return 'reduction'
    if op.startswith(('_to_copy', 'copy_', 'clone', 'cat', 'stack', 'contiguous', 'slice_backward',
                      'select_backward', 'index', 'roll', 'constant_pad_nd', 'fill', 'zero', 'zeros', 'ones',
                      'full', 'new_zeros', 'scalar_tensor')):
        return 'copy/cast/fill'
    if op.startswith(('avg_pool', 'max_pool', 'upsample', '_upsample', 'adaptive')):
        return 'pool/resize'
    return 'elementwise'


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel touches reading or writing ``t``: broadcast (stride-0) dimensions count once."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


@dataclass
class Op:
    name: str          # operator packet, e.g. 'aten.convolution'
    phase: str         # 'forward', 'backward' (inside autograd's engine) or 'update'
    flops: int
    bytes: int
    dtype: torch.dtype  # of the first floating-point tensor argument


class OpRecorder(TorchDispatchMode):
    """Records one ``Op`` per dispatched operator that launches work (views and metadata queries are free)."""

    def __init__(self):
        super().__init__()
        self.ops: list[Op] = []
        self.phase = 'forward'

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:  # a host read (float(loss), Adam's step count):
            return 1.0                                           # fake tensors have no data; 1 keeps divisions finite
        out = func(*args, **kwargs)
        name = str(func.overloadpacket)
        if getattr(func, 'is_view', False) or name in _FREE:
            return out
        ins = {id(t): t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        outs = {id(t): t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)}
        floats = [t.dtype for t in ins.values() if t.is_floating_point()]
        if not outs:  # an in-place op that returns nothing (torch._fused_adam_): its mutated arguments are written
            for arg, a in zip(func._schema.arguments, args):
                if arg.alias_info is not None and arg.alias_info.is_write:
                    outs.update({id(t): t for t in tree_flatten(a)[0] if isinstance(t, torch.Tensor)})
        fn = flop_registry.get(func.overloadpacket)
        flops = int(fn(*args, **kwargs, out_val=out)) if fn is not None else 0
        phase = 'backward' if torch._C._current_graph_task_id() != -1 else self.phase
        self.ops.append(Op(name, phase, flops, sum(map(tensor_bytes, ins.values())) +
                           sum(map(tensor_bytes, outs.values())), floats[0] if floats else torch.float32))
        return out


def trace_step(network='random-1024', batch=8, precision='bf16', modconv='auto', channels_last=False,
               losses=('vgg16:weights=random', 'latent-dist', 'noise-reg')) -> list[Op]:
    """The operators of one ``Inversion.step`` on ``batch`` images (the first step: w-noise and all terms live).

    The generator and VGG16 are built for real (random weights, CPU), then the step runs on fake tensors.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ganinv_core.engine import Inversion
    from ganinv_core.weights import load_generator
    G = load_generator(network).eval().requires_grad_(False)
    for spec in losses:  # build shared networks outside the fake mode (their weights are real tensors)
        if spec.startswith('vgg16'):
            from ganinv_losses.vgg16 import _net
            _net('random', torch.device('cpu'))
    rec = OpRecorder()
    with warnings.catch_warnings(), FakeTensorMode(allow_non_fake_inputs=True):
        warnings.simplefilter('ignore')  # fake-tensor and reference-path notices
        target = torch.zeros(batch, G.img_channels, G.img_resolution, G.img_resolution)
        inv = Inversion(G, target, losses=list(losses), steps=2, precision=precision, modconv=modconv,
                        channels_last=channels_last, w_stats=(np.zeros(G.w_dim, np.float32), 1.0))
        with rec:
            _phased_step(inv, rec)
    return rec.ops


def trace_nvidia_step(network='random-1024') -> list[Op]:
    """The operators of one step of the NVIDIA-equivalent configuration (benchmarks/_nvidia_equiv.py: batch 1,
    fp32, fused modconv, reference ops, VGG16 with weight gradients, the projector's noise-regulariser loop)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from _nvidia_equiv import NvidiaProjectorStep
    from ganinv_core.weights import load_generator
    G = load_generator(network).eval().requires_grad_(False)
    r = G.img_resolution
    nv = NvidiaProjectorStep(G, torch.zeros(1, G.img_channels, r, r), torch.device('cpu'))  # real set-up
    rec = OpRecorder()
    with warnings.catch_warnings(), FakeTensorMode(allow_non_fake_inputs=True):
        warnings.simplefilter('ignore')
        with rec:
            nv.step()
    return rec.ops


def _phased_step(inv, rec: OpRecorder) -> None:
    """``inv.step()``, with Adam and the renormalisation recorded as the 'update' phase."""
    opt_step, renorm = inv.opt.step, inv.lat.renormalise

    def tagged(fn):
        def call(*a, **k):
            rec.phase = 'update'
            try:
                return fn(*a, **k)
            finally:
                rec.phase = 'forward'
        return call
    inv.opt.step, inv.lat.renormalise = tagged(opt_step), tagged(renorm)
    try:
        inv.step()
    finally:
        inv.opt.step, inv.lat.renormalise = opt_step, renorm


def op_time(op: Op, card: Card, tf32: bool) -> float:
    """Roofline time of one operator (seconds)."""
    if op.flops:
        peak = card.bf16 if op.dtype in (torch.bfloat16, torch.float16) else (card.tf32 if tf32 else card.fp32)
        return max(op.flops / peak, op.bytes / card.bw)
    return op.bytes / card.bw


def bounds(ops: list[Op], card: Card, tf32: bool) -> dict:
    """Totals and the two lower bounds (seconds) of a traced step; see the module docstring."""
    t = [op_time(o, card, tf32) for o in ops]
    flops = sum(o.flops for o in ops)
    fused = sum(ti for ti, o in zip(t, ops) if o.flops)
    return dict(flops=flops, bytes=sum(o.bytes for o in ops), kernels=len(ops), bound=sum(t), fused_bound=fused,
                times=t)


def breakdown(ops: list[Op], times: list[float], key) -> list[tuple[str, int, float, float]]:
    """[(label, operators, bytes, seconds)] grouped by ``key(op)``, largest time first."""
    g = defaultdict(lambda: [0, 0, 0.0])
    for o, ti in zip(ops, times):
        row = g[key(o)]
        row[0] += 1
        row[1] += o.bytes
        row[2] += ti
    return sorted(((k, *v) for k, v in g.items()), key=lambda r: -r[3])


def report(ops: list[Op], card: Card, *, batch: int, tf32: bool, top: int = 12, title: str = '') -> str:
    """A markdown report of one traced step on ``card``."""
    b = bounds(ops, card, tf32)
    lines = [f'### {title}', '', f'Card: {card.name}.', '',
             f'Per step, {batch} image(s): {b["flops"] / 1e12:.3f} TFLOP (convolutions and matmuls), '
             f'{b["bytes"] / 1e9:.2f} GB moved by {b["kernels"]} operators '
             f'({b["flops"] / b["bytes"]:.0f} FLOP/byte).', '',
             '| bound | ms/step | img·steps/s | TFLOP/s | of bf16 peak |', '|---|---|---|---|---|']
    for label, s in (('this code (one kernel per operator)', b['bound']),
                     ('everything but convs/matmuls fused away', b['fused_bound'])):
        lines.append(f'| {label} | {s * 1e3:.2f} | {batch / s:.0f} | {b["flops"] / s / 1e12:.0f} | '
                     f'{b["flops"] / s / card.bf16:.0%} |')
    for title_, key in (('kind of work', lambda o: category(o.name)), ('phase', lambda o: o.phase)):
        lines += ['', f'| {title_} | operators | GB | share of the bound |', '|---|---|---|---|']
        lines += [f'| {k} | {n} | {by / 1e9:.2f} | {s / b["bound"]:.1%} |'
                  for k, n, by, s in breakdown(ops, b['times'], key)]
    lines += ['', f'Top {top} operators by bound time (summed over calls):', '',
              '| operator | calls | GB | share |', '|---|---|---|---|']
    lines += [f'| {k} | {n} | {by / 1e9:.2f} | {s / b["bound"]:.1%} |'
              for k, n, by, s in breakdown(ops, b['times'], lambda o: o.name)[:top]]
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--network', default='random-1024')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--precision', choices=('fp32', 'tf32', 'bf16'), default='bf16')
    ap.add_argument('--modconv', choices=('auto', 'fused', 'nonfused'), default='auto')
    ap.add_argument('--channels-last', action='store_true')
    ap.add_argument('--card', choices=sorted(CARDS), default='h200')
    ap.add_argument('--top', type=int, default=12)
    ap.add_argument('--nvidia', action='store_true', help='the NVIDIA-equivalent step instead (batch 1, fp32)')
    a = ap.parse_args(argv)
    if a.nvidia:
        a.batch, a.precision = 1, 'fp32'
        ops, title = trace_nvidia_step(a.network), f'{a.network}, NVIDIA-equivalent step (batch 1, fp32)'
    else:
        ops = trace_step(a.network, a.batch, a.precision, a.modconv, a.channels_last)
        title = (f'{a.network}, batch {a.batch}, {a.precision}, modconv={a.modconv}'
                 f'{", channels_last" if a.channels_last else ""}')
    tf32 = Precision(a.precision, torch.device('cpu')).tf32  # as the run sets it
    print(report(ops, CARDS[a.card], batch=a.batch, tf32=tf32, top=a.top, title=title))


if __name__ == '__main__':
    main()
