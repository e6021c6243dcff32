"""The CUDA device as the tests name it, in one place. Marked `gpu`, which is how the GPU machine's script selects
its tests (`pytest -m gpu`), and skipped cleanly where torch sees no CUDA device.

    from _devices import CUDA, DEVICES, gpu_only

    @pytest.mark.parametrize('device', DEVICES)        # 'cpu' and CUDA
    @pytest.mark.parametrize('device', [CUDA])         # CUDA alone
    pytest.param('cuda', torch.float16, marks=CUDA.marks)
    @gpu_only                                          # a test that takes no device parameter
"""
import pytest
import torch

CUDA = pytest.param('cuda', marks=[pytest.mark.gpu,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')])
DEVICES = ['cpu', CUDA]


def gpu_only(test):
    """`test` marked like CUDA: selected by `-m gpu`, skipped without a CUDA device."""
    for mark in reversed(CUDA.marks):
        test = mark(test)
    return test
