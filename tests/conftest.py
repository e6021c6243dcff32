"""Suite-wide fixtures: a private cache folder, one torch thread, and the tiny random generator."""
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


@pytest.fixture(scope='session')
def G():
    """`random-32`: the built-in 32x32 random-weight generator (seconds per inversion on the CPU)."""
    from ganinv_core.weights import load_generator
    return load_generator('random-32')
