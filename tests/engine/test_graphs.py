"""engine/_graphs.py: one lock per device, memory given back, captures that take turns."""
import gc
import threading
import weakref

import pytest
import torch

from ganinv_core.engine import Inversion, _graphs
from ganinv_core.weights import load_generator

from _devices import DEVICES, gpu_only


def _held_elsewhere(lock) -> bool:
    """Whether another thread holds ``lock`` now (an RLock is re-entrant for its owner: ask from a new thread)."""
    got = []

    def probe():
        got.append(lock.acquire(blocking=False))
        if got[0]:
            lock.release()
    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return not got[0]


def test_one_reentrant_lock_per_device():
    cpu = _graphs.device_lock('cpu')
    assert cpu is _graphs.device_lock(torch.device('cpu'))
    with cpu, cpu:   # re-entrant: capture frees memory under the lock it holds
        assert _held_elsewhere(cpu)
    assert not _held_elsewhere(cpu)


@pytest.mark.parametrize('device', DEVICES)
def test_free_memory_collects_what_only_a_cycle_holds(device):
    class Node:
        pass
    a, b = Node(), Node()
    a.other, b.other = b, a
    a.t = torch.ones(1 << 20, device=device)
    alive = weakref.ref(a.t)
    gc.disable()   # the collector must not get there first
    try:
        del a, b
        assert alive() is not None
        before = torch.cuda.memory_reserved() if device == 'cuda' else 0
        _graphs.free_memory(torch.device(device))
        assert alive() is None
        if device == 'cuda':
            assert torch.cuda.memory_reserved() < before   # and the block went back to the driver
    finally:
        gc.enable()


@gpu_only
def test_a_capture_holds_its_device_lock_throughout():
    """The warm-up and the capture run with the device's lock held, so another thread on the same GPU can neither
    capture nor replay nor empty the cache meanwhile; replays take it too; it is free once the step is done."""
    G = load_generator('random-64', device='cuda')
    inv = Inversion(G, torch.zeros(1, 3, 64, 64, device='cuda'), losses=['mse', 'latent-dist', 'noise-reg'], steps=4,
                    cuda_graph=True, seed=1)
    lock, seen = _graphs.device_lock(inv.device), []
    real = inv._body

    def body(*args, **kwargs):   # runs twice in the warm-up and once while capturing
        seen.append(_held_elsewhere(lock))
        return real(*args, **kwargs)
    inv._body = body
    inv.step()
    assert inv.step_mode() == 'cuda graph' and seen == [True, True, True]
    assert not _held_elsewhere(lock)
