import pytest
import torch


@pytest.fixture(autouse=True, scope='session')
def _engine_env(tmp_path_factory):
    """A private w-statistics cache, and one thread (the CI box has 2 shared cores)."""
    mp = pytest.MonkeyPatch()
    mp.setenv('GANINV_CACHE', str(tmp_path_factory.mktemp('cache')))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(scope='session')
def G():
    from ganinv_core.weights import load_generator
    return load_generator('random-32')
