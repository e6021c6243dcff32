"""Achieved memory bandwidth of each compiled op at the 1024² config-f shapes: the bytes an op must move at least
(each input read once, each output written once) over its measured time, as a fraction of the card's bandwidth.

    python benchmarks/kernel_probe.py [--dtype bf16] [--batch 8] [--bandwidth 4.8] [--reps 20]

The step's memory-bound kernels should run near the bandwidth; the H200 profile of the ninth session put the
epilogue's backward and upfirdn2d at ~15-20 % of it in bfloat16 (estimated from a profile), and this prints the
figure per op, shape and layout. Times are CUDA-event medians (CPU: wall-clock medians, for a rehearsal).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEVICE, sync  # noqa: E402

from ganinv_core import ops  # noqa: E402
from ganinv_core.ops import _ext  # noqa: E402

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# (channels, resolution) of the 1024² generator's blocks that run in the reduced dtype (its top four)
LAYERS = ((256, 128), (128, 256), (64, 512), (32, 1024))


def cases(n, dtype, cl, layers):
    """(name, fn, bytes) for the first `layers` layers: fn() runs the op once; bytes is what it must read and write
    at least."""
    for c, r in LAYERS[:layers]:
        yield from _layer(n, c, r, dtype, cl)


def _layer(n, c, r, dtype, cl):
    fmt = torch.channels_last if cl else torch.contiguous_format
    s = torch.tensor([], dtype=dtype).element_size()
    f = ops.setup_filter([1, 3, 3, 1], device=DEVICE)
    x = torch.randn(n, c, r, r, device=DEVICE, dtype=dtype).contiguous(memory_format=fmt)
    gy = torch.randn_like(x)
    d = torch.rand(n, c, device=DEVICE, dtype=dtype) + 0.5
    noise = torch.randn(n, 1, r, r, device=DEVICE, dtype=dtype)
    b = torch.randn(c, device=DEVICE, dtype=dtype)
    kw = {'act': 'lrelu', 'gain': 2 ** 0.5, 'clamp': 256, 'impl': 'ext'}
    e, pl = x.numel() * s, n * r * r * s
    tag = f'{c}x{r}²{" cl" if cl else ""}'

    def bwd():   # gy, c and the noise read; gc written; the noise gradient (float32) written
        return ops.modconv_epilogue_vjp(gy, x, d, noise, b, **kw)

    yield f'epilogue fwd {tag}', lambda: ops.modconv_epilogue(x, d, noise, b, **kw), 2 * e + pl
    yield f'epilogue bwd {tag}', bwd, 3 * e + pl + 4 * pl // s
    if not cl:   # the experimental channel-grouped backward (GANINV_EPILOGUE_GROUPED=1), beside the default
        yield f'epilogue bwd grouped {tag}', lambda: _grouped(bwd), 3 * e + pl + 4 * pl // s
    yield f'bias_act fwd {tag}', lambda: ops.bias_act(x, b, act='lrelu', clamp=256, impl='ext'), 2 * e
    # the backward with the bias gradient in the same pass (gy, x read; dx written)
    yield (f'bias_act bwd {tag}', lambda: torch.ops.ganinv.bias_act_backward(
        gy, x, b, 1, _ext.ACT_CODES['lrelu'], 0.2, 2 ** 0.5, 256.0), 3 * e)
    # conv0's FIR: the transposed convolution's (r + 1)² output filtered to r²
    xf = torch.randn(n, c, r + 1, r + 1, device=DEVICE, dtype=dtype).contiguous(memory_format=fmt)
    yield f'upfirdn2d FIR {tag}', lambda: ops.upfirdn2d(xf, f, padding=1, gain=4, impl='ext'), xf.numel() * s + e


def _grouped(fn):
    os.environ['GANINV_EPILOGUE_GROUPED'] = '1'   # read by the extension per call
    try:
        return fn()
    finally:
        os.environ.pop('GANINV_EPILOGUE_GROUPED')


def timed(fn, reps):
    for _ in range(3):
        fn()
    sync()
    if DEVICE.type == 'cuda':
        times = []
        for _ in range(reps):
            a, z = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            z.record()
            z.synchronize()
            times.append(a.elapsed_time(z) / 1e3)
    else:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--dtype', choices=sorted(DTYPES), default='bf16')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--bandwidth', type=float, default=4.8, help='the card\'s DRAM bandwidth in TB/s (H200 4.8)')
    ap.add_argument('--reps', type=int, default=20)
    ap.add_argument('--layers', type=int, default=len(LAYERS), help='the first K of the four layers only (128² first)')
    a = ap.parse_args(argv)
    name = torch.cuda.get_device_name() if DEVICE.type == 'cuda' else 'cpu'
    print(f'# kernel_probe on {name}: {a.dtype}, batch {a.batch}, bandwidth {a.bandwidth} TB/s')
    print(f'{"op, layer":<34} {"ms":>8} {"GB moved":>9} {"GB/s":>7} {"% of bw":>8}')
    with torch.no_grad():
        for cl in (False, True):
            for what, fn, nbytes in cases(a.batch, DTYPES[a.dtype], cl, a.layers):
                t = timed(fn, a.reps)
                gbs = nbytes / t / 1e9
                print(f'{what:<34} {t * 1e3:8.3f} {nbytes / 1e9:9.3f} {gbs:7.0f} {gbs / a.bandwidth / 10:7.1f}%',
                      flush=True)


if __name__ == '__main__':
    main()
