"""`ganinv_core._errors.exc_line`: an exception quoted in a one-line message."""
import pytest

import torch

from ganinv_core._errors import exc_line


@pytest.mark.parametrize('exc, want', [
    (RuntimeError('CUDA error: out of memory\nCUDA kernel errors might be reported asynchronously'),
     'RuntimeError: CUDA error: out of memory'),
    (ValueError('\n  indented first line\nsecond'), 'ValueError: indented first line'),
    (KeyError(), 'KeyError'),
    (OSError('   '), 'OSError'),
])
def test_exc_line_is_one_line_with_the_type(exc, want):
    assert exc_line(exc) == want



# CUDA's own out-of-memory message, as the H200 gave it (eighteenth session), one line of 605 characters
OOM = ('CUDA out of memory. Tried to allocate 32.00 MiB. GPU 0 has a total capacity of 139.80 GiB of which 137.83 GiB '
       'is free. Including non-PyTorch memory, this process has 1.96 GiB memory in use. 1.15 GiB allowed; Of the '
       'allocated memory 977.41 MiB is allocated by PyTorch, with 1024.00 KiB allocated in private pools (e.g., CUDA '
       'Graphs), and 138.59 MiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large '
       'try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.')


@pytest.mark.parametrize('exc, limit, want', [
    # cut after the last whole sentence that fits (here: what was asked for, what was free, what was in use)
    (torch.OutOfMemoryError(OOM), 200, 'OutOfMemoryError: CUDA out of memory. Tried to allocate 32.00 MiB. GPU 0 '
     'has a total capacity of 139.80 GiB of which 137.83 GiB is free. Including non-PyTorch memory, this process '
     'has 1.96 GiB memory in use.'),
    (torch.OutOfMemoryError(OOM), 60, 'OutOfMemoryError: CUDA out of memory. Tried to allocate 32.00 MiB.'),
    # no sentence end within the limit: cut there, marked
    (RuntimeError('x' * 50), 10, 'RuntimeError: xxxxxxxxxx…'),
    # short enough: as is, and only the first line
    (RuntimeError('short. message\nsecond line'), 200, 'RuntimeError: short. message'),
    (KeyError(), 5, 'KeyError'),
])
def test_exc_line_cut_to_a_limit_at_a_sentence(exc, limit, want):
    assert exc_line(exc, limit) == want
