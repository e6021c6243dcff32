"""Benchmark fixtures, machine info and the ratio report (pytest-benchmark).

Sizes: `GANINV_BENCH_SIZE=cpu` (default; 64-256 px, batch 1-4, what a 2-core CPU can time) or `full`
(256 and 1024 px with config-f channel counts, batch 1-16: the GPU machine). Every timed function
synchronises the device before it returns, so wall time covers the work queued on the GPU.
"""
import os
import platform
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import DEVICE, SIZE, measured_bf16_peak  # noqa: E402

@pytest.fixture
def device():
    return DEVICE


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info['torch'] = torch.__version__
    machine_info['cuda'] = torch.version.cuda
    machine_info['device'] = torch.cuda.get_device_name() if DEVICE.type == 'cuda' else platform.processor() or 'cpu'
    machine_info['bench_size'] = SIZE
    machine_info['threads'] = torch.get_num_threads()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Add ratios to each group's baseline and write a markdown table beside the JSON."""
    rows = output_json['benchmarks']
    peak = measured_bf16_peak()
    output_json['machine_info']['bf16_peak_tflops'] = peak
    base = {}
    for r in rows:
        info = r['extra_info']
        if info.get('baseline'):
            base[info['compare']] = r
    lines = [f"Machine: {output_json['machine_info'].get('device')}, torch {torch.__version__}, "
             f"CUDA {torch.version.cuda}, size `{SIZE}`"
             + (f", measured bf16 peak {peak:.0f} TFLOP/s" if peak else ''), '',
             '| case | mean ms/call | vs baseline | steps/s | img·steps/s | peak MB/img | TFLOP/s | % bf16 peak |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        info, mean = r['extra_info'], r['stats']['mean']
        imgs, steps = info.get('images', 1), info.get('steps', 1)
        thr = imgs * steps / mean
        b = base.get(info.get('compare'))
        ratio = thr / (b['extra_info'].get('images', 1) * b['extra_info'].get('steps', 1) / b['stats']['mean']) if b else None
        info['ratio_to_baseline'] = ratio
        tflops = info['flops'] * steps / mean / 1e12 if info.get('flops') else None
        mem = info.get('peak_mem_mb_per_image')
        lines.append(f"| {r['name']} | {mean * 1e3:.2f} | {f'{ratio:.2f}x' if ratio else '-'} | {steps / mean:.1f} | "
                     f"{thr:.1f} | {f'{mem:.0f}' if mem else '-'} | {f'{tflops:.1f}' if tflops else '-'} | "
                     f"{f'{100 * tflops / peak:.1f}' if tflops and peak else '-'} |")
    out = config.getoption('benchmark_json')
    if out is not None:
        path = os.fspath(out) if isinstance(out, (str, os.PathLike)) else out.name   # Path, or an open file (older)
        md = os.path.splitext(path)[0] + '.md'
        os.makedirs(os.path.dirname(os.path.abspath(md)), exist_ok=True)
        with open(md, 'w') as f:
            f.write('\n'.join(lines) + '\n')
    print('\n' + '\n'.join(lines))


