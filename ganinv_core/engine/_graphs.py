"""CUDA graphs of the step: capture, replay, release, and one lock per GPU that keeps captures apart.

Several threads may drive one GPU (``ganinv-run --device cuda,cuda``). PyTorch allows one capture per device at a
time: a capture registers the device's random generator (a second capture fails with "Cannot register the state
during capturing stage"), and ``torch.cuda.graph`` synchronises the whole device on entry, which breaks a capture
under way in another thread (H200, eighteenth session). So a capture, and anything else that synchronises or
frees device memory (``free_memory``), holds its device's lock; replays take it too, briefly, so none starts while
another thread captures. A capture's eager warm-up runs under the lock as well: it is where cuDNN picks its
algorithms, which may synchronise.
"""
from __future__ import annotations

import gc
import threading

import torch

from .._errors import exc_line, out_of_memory

_LOCKS: dict = {}
_LOCKS_GUARD = threading.Lock()
_UNFREEABLE: list = []   # graphs whose reset failed: their destructor would abort the process (see release)


def device_lock(device) -> threading.RLock:
    """The lock of ``device`` (one per GPU index; CPU devices share one, which nothing contends)."""
    device = torch.device(device)
    key = (device.type, device.index if device.index is not None else
           (torch.cuda.current_device() if device.type == 'cuda' else 0))
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


def free_memory(device) -> None:
    """Return unreferenced memory: collect garbage tensors, then release the allocator's cached blocks (CUDA)."""
    gc.collect()
    if torch.device(device).type == 'cuda':
        with device_lock(device):
            torch.cuda.empty_cache()


def release(graph) -> None:
    """Free a CUDA graph and its memory pool now (deterministically, on this thread), not at garbage collection.

    A graph whose capture broke off before it began registers nothing, and its reset raises; PyTorch's destructor
    then raises again, inside C++, and the process aborts ("The graph should be registered to the state", seen on
    the H200). Such a graph is kept referenced for the life of the process instead: a few bytes, never a crash.
    """
    if graph is not None:
        try:
            graph.reset()
        except RuntimeError:
            _UNFREEABLE.append(graph)


def replay(graph, device, lock: threading.RLock | None = None) -> None:
    """Launch ``graph`` on ``device`` (asynchronous; no host sync), holding ``lock`` (default: ``device_lock``;
    a caller replaying every step passes the one it looked up once)."""
    with lock or device_lock(device), torch.cuda.device(device):
        graph.replay()


def capture(inv) -> tuple[torch.cuda.CUDAGraph | None, str | None]:
    """Capture ``inv``'s static step as a CUDA graph: ``(graph, None)``, or ``(None, why)`` when that fails.

    Two warm-up steps run on a side stream (cuBLAS/cuDNN/autograd set-up), then every tensor they changed is
    restored, so the captured run starts exactly where the eager one would. A capture that runs out of memory is
    tried once more after freeing the cache: during a capture the allocator cannot release cached blocks, so
    memory the warm-up left cached would otherwise count twice.
    """
    device = inv.device
    saved = [t.detach().clone() for t in inv.state()]

    def restore():
        with torch.no_grad():
            for t, s in zip(inv.state(), saved):
                t.copy_(s)
        inv.opt.zero_grad()

    with device_lock(device), torch.cuda.device(device):
        why = None
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    inv._body(inv._step_t, cache=False)
                    inv.opt.zero_grad()
                    inv._step_t.add_(1)
            torch.cuda.current_stream(device).wait_stream(side)
        except Exception as e:  # noqa: BLE001 - the caller falls back to eager steps
            why = exc_line(e)
        for attempt in range(2 if why is None else 0):
            restore()
            graph, oom = torch.cuda.CUDAGraph(), False
            try:
                # thread_local: threads driving other GPUs keep allocating and launching while this one captures
                with torch.cuda.graph(graph, capture_error_mode='thread_local'):
                    inv._body(inv._step_t, cache=False)
                    inv._step_t.add_(1)
                restore()  # capture runs no kernels, but keep the start state exact
                return graph, None
            except Exception as e:  # noqa: BLE001
                why, oom = exc_line(e), out_of_memory(e)
            torch.cuda.synchronize(device)
            release(graph)   # a capture that failed partway: its pool freed now, not whenever the collector gets to it
            if not oom:
                break
            free_memory(device)   # the failed capture's tensors died with its exception
        torch.cuda.synchronize(device)
        restore()
        return None, why
