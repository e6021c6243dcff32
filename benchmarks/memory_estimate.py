"""Activation memory of one inversion step per image, without a GPU: the generator runs on PyTorch's `meta`
device (shapes and dtypes, no data) and every tensor autograd saves for the backward pass is counted.

    python benchmarks/memory_estimate.py --network random-1024 [--precision bf16] [--modconv nonfused]

The saved activations are what grows with the batch (weights and the optimiser state do not), so this predicts
the per-image slope of the GPU's peak memory. On `meta` the ops take their reference path, whose bias_act keeps
two tensors where the compiled kernel keeps one: read the figure as an upper bound.
"""
import argparse
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ganinv_core.weights import load_generator  # noqa: E402


def saved_bytes(fn):
    """(bytes, count) of the distinct tensors autograd saves while `fn()` runs; the largest groups by shape."""
    seen, groups = {}, {}

    def pack(t):
        seen.setdefault(t._cdata, t)  # keeps each tensor alive, so its key is not reused
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    for t in seen.values():
        k = (tuple(t.shape), str(t.dtype).replace('torch.', ''))
        groups[k] = groups.get(k, 0) + t.numel() * t.element_size()
    return sum(groups.values()), len(seen), sorted(groups.items(), key=lambda kv: -kv[1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--network', default='random-1024')
    ap.add_argument('--precision', choices=('fp32', 'bf16'), default='fp32')
    ap.add_argument('--modconv', choices=('fused', 'nonfused'), default='nonfused')
    ap.add_argument('--top', type=int, default=8)
    a = ap.parse_args(argv)
    warnings.simplefilter('ignore')  # the reference-path notice for the meta device
    G = load_generator(a.network).eval().requires_grad_(False).to('meta')
    ws = torch.zeros(1, G.num_ws, G.w_dim, device='meta', requires_grad=True)
    kw = dict(force_fp32=a.precision == 'fp32', half_dtype=torch.bfloat16, fused_modconv=a.modconv == 'fused')
    total, count, groups = saved_bytes(lambda: G.synthesis(ws, noise_mode='const', **kw))
    print(f'# {a.network} {a.precision} {a.modconv}: synthesis keeps {total / 2 ** 30:.2f} GiB per image for the '
          f'backward pass ({count} tensors)')
    for (shape, dtype), b in groups[:a.top]:
        print(f'{b / 2 ** 20:9.1f} MiB  {dtype:9s} {shape}')


if __name__ == '__main__':
    main()
