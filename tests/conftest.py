"""Suite-wide fixtures: a private cache folder, one torch thread, a seeded global generator per test, the kernels'
self-test run up front, the tiny random generator, and the tiny generator NVIDIA's own code computed
(tests/fixtures/nvidia-tiny)."""
import gc
import json
import os

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope='session')
def _isolated_env(tmp_path_factory):
    """A private cache (w statistics, downloads) instead of ~/.cache/ganinv, and one thread: the CI box has
    2 shared cores, and small CPU workloads run faster without OpenMP contention."""
    mp = pytest.MonkeyPatch()
    mp.setenv('GANINV_CACHE', str(tmp_path_factory.mktemp('cache')))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(autouse=True)
def _seeded():
    """torch's global generator seeded before every test: a test's unseeded draws (noise maps, images) are the same
    whichever tests ran before it, so a comparison through an activation's kink cannot pass or fail by the order of
    the tests. (The kernel tests draw fresh inputs on purpose, from their own generator: `tests/ops/conftest.py`.)"""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _gpu_teardown(request):
    """After a test marked gpu: the garbage it left (CUDA graphs, their memory pools) collected and the device
    drained, so that a fault in either shows up in that test and not in whichever later test the collector interrupts."""
    yield
    if request.node.get_closest_marker('gpu') is not None and torch.cuda.is_available():
        gc.collect()
        torch.cuda.synchronize()


@pytest.fixture(autouse=True, scope='session')
def _kernels_self_tested(_isolated_env):
    """The compiled kernels' one-time self-test (`ops._selftest`), run before any test: tests that replace an
    entry point of `ops._ext` with a spy or a stub must not have the check run through (and judge) their stand-in."""
    from ganinv_core.ops import _ext, _selftest
    for dev in ('cpu', 'cuda') if torch.cuda.is_available() else ('cpu',):
        if _ext.available(dev)[0]:
            _selftest.results(dev)


@pytest.fixture(scope='session')
def G():
    """`random-32`: the built-in 32x32 random-weight generator (seconds per inversion on the CPU)."""
    from ganinv_core.weights import load_generator
    return load_generator('random-32')


@pytest.fixture(scope='module')
def nvidia():
    """(G, ref, names): the ADA tiny generator with NVIDIA's weights, the arrays NVIDIA's code computed from it
    (`ada32_reference.npz`), and NVIDIA's state-dict names in order (parameters, then buffers)."""
    from ganinv_core.nets import Generator
    fix = os.path.join(os.path.dirname(__file__), 'fixtures', 'nvidia-tiny')
    cfg = json.load(open(os.path.join(fix, 'ada32_config.json')))['init_kwargs']
    state = np.load(os.path.join(fix, 'ada32_state.npz'))
    ref = {k: torch.from_numpy(v) for k, v in np.load(os.path.join(fix, 'ada32_reference.npz')).items()}
    G = Generator(**cfg).eval().requires_grad_(False)
    G.load_state_dict({k: torch.from_numpy(state[k]) for k in state.files}, strict=True)
    return G, ref, list(state.files)
