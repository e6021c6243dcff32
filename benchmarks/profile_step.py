"""Profile a few optimisation steps with torch.profiler and print the top kernels and their share of the step.

    python benchmarks/profile_step.py --network random-256 --batch 1 --steps 3 [--precision bf16] [--graph]
                                      [--part vgg]

On CUDA it ranks device kernels by self CUDA time, on the CPU operators by self CPU time.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEVICE, generator, sync, targets  # noqa: E402

from ganinv_core.engine import Inversion  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--network', default='random-256')
    ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--precision', default='auto')
    ap.add_argument('--modconv', default='auto')
    ap.add_argument('--graph', action='store_true', help='CUDA-graph capture of the step')
    ap.add_argument('--top', type=int, default=25)
    ap.add_argument('--part', choices=('step', 'vgg'), default='step',
                    help="'vgg': only the VGG16 loss, forward and backward, on the step's images and precision")
    a = ap.parse_args(argv)
    G = generator(a.network)
    inv = Inversion(G, targets(G, a.batch), losses=['vgg16:weights=random', 'latent-dist', 'noise-reg'],
                    steps=a.steps + 2, precision=a.precision, modconv=a.modconv, cuda_graph=a.graph)
    if a.part == 'vgg':
        from ganinv_core.metrics import to_vgg_input
        vgg, tf = inv.terms[0].vgg, inv.terms[0].target_features
        img = inv.render().requires_grad_(True)

        def work():
            for _ in range(a.steps):
                with inv.prec.mode(), inv.prec.autocast():
                    loss = vgg.distance(to_vgg_input(img), tf).sum()   # as the vgg16 loss computes it
                loss.backward()
    else:
        work = lambda: inv.run(a.steps)  # noqa: E731
    if a.part == 'vgg':
        work()                                   # warm-up
    else:
        inv.run(2)                               # warm-up (and graph capture)
    sync()
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if DEVICE.type == 'cuda' else [])
    with torch.profiler.profile(activities=acts) as prof:
        work()
        sync()
    avgs = prof.key_averages()
    head = (f'# {a.network} batch {a.batch} {inv.prec.name} modconv={"fused" if inv.fused else "nonfused"} '
            f'graph={inv._graph is not None} on {DEVICE}{" (VGG16 loss only)" if a.part == "vgg" else ""}')
    if DEVICE.type != 'cuda':
        _table(head, 'operator', [e for e in avgs if e.self_cpu_time_total > 0], 'self_cpu_time_total', 'CPU', a)
        return
    # torch >= 2.4 names it self_device_time_total; older torch self_cuda_time_total
    key = next((k for k in ('self_device_time_total', 'self_cuda_time_total')
                if any(getattr(e, k, 0) for e in avgs)), 'self_device_time_total')
    timed = [e for e in avgs if getattr(e, key, 0) > 0]
    # Two partitions of the same device time: by kernel (device-side events) and by the operator that launched
    # them (host-side events); listing both in one table would count every kernel twice.
    kernels = [e for e in timed if e.device_type == torch.autograd.DeviceType.CUDA]
    _table(head, 'kernel', kernels, key, 'device', a)
    _table(head, 'operator', [e for e in timed if e.device_type != torch.autograd.DeviceType.CUDA], key, 'device', a)


def _table(head, what, events, key, clock, a):
    total = sum(getattr(e, key) for e in events) or 1
    print(f'{head}: {total / 1e3 / a.steps:.1f} ms/step of {clock} time, by {what}')
    print(f'{what:70s} {"ms/step":>9s} {"share":>7s} {"calls/step":>10s}')
    for e in sorted(events, key=lambda e: -getattr(e, key))[:a.top]:
        t = getattr(e, key)
        print(f'{e.key[:70]:70s} {t / 1e3 / a.steps:9.2f} {100 * t / total:6.1f}% {e.count / a.steps:10.1f}')
    print()


if __name__ == '__main__':
    main()
