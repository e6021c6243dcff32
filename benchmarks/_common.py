"""Shared helpers for the benchmark modules (imported as `_common`; conftest puts this folder on sys.path)."""
import os

import torch

from flops import step_flops

SIZE = os.environ.get('GANINV_BENCH_SIZE', 'cpu')
DEVICE = torch.device('cuda' if torch.cuda.is_available() and os.environ.get('GANINV_BENCH_DEVICE') != 'cpu' else 'cpu')


def sync():
    if DEVICE.type == 'cuda':
        torch.cuda.synchronize()


def measured_bf16_peak():
    """Dense bf16 matmul TFLOP/s on this GPU (the 'card peak' the benchmarks report a fraction of)."""
    if DEVICE.type != 'cuda':
        return None
    n = 8192
    a, b = (torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        a @ b
    end.record()
    sync()
    return 2 * n ** 3 * 20 / (start.elapsed_time(end) / 1e3) / 1e12


def record(benchmark, *, compare, images=1, steps=1, flops=None, baseline=False, peak_mem=None):
    """Attach what the report needs to one benchmark."""
    benchmark.extra_info.update(compare=compare, images=images, steps=steps, flops=flops, baseline=baseline)
    if peak_mem is not None:
        benchmark.extra_info['peak_mem_mb_per_image'] = peak_mem / 2 ** 20 / images


def step_flops_for(res, fused):
    return step_flops(res, fused_modconv=fused, channel_base=32768 if res >= 256 else 2048,
                      channel_max=512 if res >= 256 else 128)
