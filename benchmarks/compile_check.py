"""Side-by-side step times of the speed options that are too slow to warm up for the pytest suite:
torch.compile of the synthesis (with and without the CUDA graph) against the same step without it.

    python benchmarks/compile_check.py --network random-1024 --batch 8 --precision bf16 [--steps 10]

Prints, per configuration: the first step (compilation / capture included), the mean of the next steps,
the ratio to the first configuration, and peak memory per image (CUDA). Each configuration runs in this
process with the same targets, so the ratios are comparable; a configuration that fails prints its error.
"""
import argparse
import gc
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEVICE, generator, sync, targets  # noqa: E402

from ganinv_core.engine import Inversion  # noqa: E402

CONFIGS = {  # name -> Inversion options (added to the precision / channels_last given on the command line)
    'eager': {},
    'graph': dict(cuda_graph=True),
    'compile': dict(compile=True),
    'compile+graph': dict(compile=True, cuda_graph=True),
}


def _time(G, t, steps, opts):
    inv = Inversion(G, t, losses=['vgg16:weights=random', 'latent-dist', 'noise-reg'], steps=steps + 1, **opts)
    if DEVICE.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    inv.step()                       # compile / capture happen here
    sync()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    inv.run(steps)
    sync()
    mean = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 / len(t) if DEVICE.type == 'cuda' else float('nan')
    graphed = inv._graph is not None
    del inv
    gc.collect()
    if DEVICE.type == 'cuda':
        torch.cuda.empty_cache()
    return first, mean, peak, graphed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--network', default='random-256')
    ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--precision', default='bf16')
    ap.add_argument('--channels-last', action='store_true')
    ap.add_argument('--configs', default=','.join(CONFIGS), help=f'comma-separated subset of {", ".join(CONFIGS)}')
    a = ap.parse_args(argv)
    G = generator(a.network)
    t = targets(G, a.batch)
    print(f'# {a.network} batch {a.batch} {a.precision} channels_last={a.channels_last} on {DEVICE}'
          + (f' ({torch.cuda.get_device_name()})' if DEVICE.type == 'cuda' else ''), flush=True)
    base = None
    for name in a.configs.split(','):
        opts = dict(CONFIGS[name], precision=a.precision, channels_last=a.channels_last)
        try:
            first, mean, peak, graphed = _time(G, t, a.steps, opts)
        except Exception as e:  # noqa: BLE001 - report and go on to the next configuration
            print(f'{name:15s} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}', flush=True)
            continue
        base = base or mean
        print(f'{name:15s} first step {first:7.2f} s   {mean * 1e3:8.2f} ms/step   {base / mean:5.2f}x   '
              f'{peak:.2f} GB/img   graph={graphed}', flush=True)


if __name__ == '__main__':
    main()
