"""The batches of a ``ganinv-run`` job, shared by one worker per device (``--device cuda:0,cuda:1``).

A worker takes the next batch when it is free, so a faster device takes more of them; images never interact, and
every image's seeds follow its position among the targets, so which device restores it changes nothing. A job may
wait for another (a video frame for the previous one, whose latent it starts from): it is handed out only once that
one is done, and a batch holds jobs of one kind (frames that start from their predecessor, or targets that do not).
With one device the worker runs in the calling thread (Ctrl-C lands in it as ever); with several, each runs in its
own thread with its device current, the caller waits, and Ctrl-C or a worker's crash sets ``stop``, which the others
see at their next progress report (``Stopped``).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Sequence


class Stopped(Exception):
    """Raised in a worker's progress callback once the run is stopping (Ctrl-C, or another worker crashed)."""


class Batches:
    """The jobs still to do, handed out in order, and the lock under which workers report what they did.

    Args:
        jobs: in order.
        name: a job's name (default: its ``name`` attribute, or the job itself).
        after: the name of the job a job waits for, or None.
        kind: called under the lock when a job is ready; a batch holds jobs of one kind.
    """

    def __init__(self, jobs: Sequence, name: Callable | None = None, after: Callable | None = None,
                 kind: Callable | None = None):
        self.pending = list(jobs)
        self.name = name or (lambda j: getattr(j, 'name', j))
        self.after = after or (lambda j: None)
        self.kind = kind or (lambda j: None)
        self.running: set = set()
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.taken = 0

    def take(self, size: int) -> tuple[list, str]:
        """Up to ``size`` next jobs that wait for nothing unfinished, all of the first one's kind, and the batch's
        label ``'batch k/K'`` (K counting the rest at ``size``). Waits while every pending job waits for a running
        one; empty when nothing is left (or the run is stopping)."""
        with self.ready:
            while True:
                unfinished = {self.name(j) for j in self.pending} | self.running
                free = [j for j in self.pending if self.after(j) is None or self.after(j) not in unfinished]
                if free or not self.pending or self.stop.is_set():
                    break
                self.ready.wait(0.1)
            batch: list = []
            if free and not self.stop.is_set():
                first = self.kind(free[0])
                batch = [j for j in free if self.kind(j) == first][:size]
            chosen = {id(j) for j in batch}
            self.pending = [j for j in self.pending if id(j) not in chosen]
            self.running |= {self.name(j) for j in batch}
            self.taken += bool(batch)
            return batch, f'batch {self.taken}/{self.taken + -(-len(self.pending) // size)}'

    def done(self, batch: list) -> None:
        """The batch is finished (restored or failed): the jobs waiting for its jobs may go."""
        with self.ready:
            self.running -= {self.name(j) for j in batch}
            self.ready.notify_all()

    def put_back(self, batch: list) -> None:
        """A batch that did not fit: first in line again, to be taken in smaller pieces."""
        with self.ready:
            self.pending[:0] = batch
            self.running -= {self.name(j) for j in batch}
            self.taken -= 1
            self.ready.notify_all()

    def check(self) -> None:
        """Raise ``Stopped`` once the run is stopping (called from progress callbacks)."""
        if self.stop.is_set():
            raise Stopped


def _current(device):
    """``device`` made the thread's current CUDA device (a thread starts on cuda:0), or nothing to do."""
    if getattr(device, 'type', None) == 'cuda':
        import torch
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def run_workers(batches: Batches, devices: Sequence, work: Callable[[int], None]) -> None:
    """``work(i)`` for the i-th device: in this thread for one device, else one thread each, until all return.

    Raises:
        KeyboardInterrupt: Ctrl-C while waiting; the workers were stopped and have returned.
        Exception: the first exception a worker raised (after stopping and waiting for the others).
    """
    if len(devices) == 1:
        with _current(devices[0]):
            work(0)
        return
    errors: list[BaseException] = []
    finished = [threading.Event() for _ in devices]

    def body(i):
        try:
            with _current(devices[i]):
                work(i)
        except Stopped:
            pass
        except BaseException as e:   # noqa: BLE001 - handed to the caller's thread
            errors.append(e)
            batches.stop.set()
        finally:
            finished[i].set()

    def wait_all():   # on events, not Thread.join: Ctrl-C inside join() can leave a live thread marked stopped
        for e in finished:
            while not e.wait(0.1):
                pass
        for t in threads:
            t.join()

    threads = [threading.Thread(target=body, args=(i,), name=f'ganinv-{d}-{i}', daemon=True)
               for i, d in enumerate(devices)]
    for t in threads:
        t.start()
    try:
        wait_all()
    except KeyboardInterrupt:
        batches.stop.set()
        with batches.ready:
            batches.ready.notify_all()
        wait_all()
        raise
    if errors:
        raise errors[0]
