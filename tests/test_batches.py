"""_batches: batches handed out in order, put back after running out of memory, and the workers' threads."""
import threading

import pytest

from ganinv_core._batches import Batches, Stopped, run_workers


def test_batches_are_taken_in_order_and_labelled_by_what_is_left():
    b = Batches(list('abcde'))
    assert b.take(2) == (['a', 'b'], 'batch 1/3')
    batch, label = b.take(2)
    assert (batch, label) == (['c', 'd'], 'batch 2/3')
    b.put_back(batch)                 # it did not fit: taken again, in halves
    assert b.take(1) == (['c'], 'batch 2/4') and b.take(1) == (['d'], 'batch 3/4')
    assert b.take(1) == (['e'], 'batch 4/4') and b.take(1) == ([], 'batch 4/4')


def test_one_device_runs_in_the_calling_thread():
    seen = []
    run_workers(Batches([]), ['cpu'], lambda i: seen.append((i, threading.current_thread())))
    assert seen == [(0, threading.current_thread())]


def test_several_devices_each_get_a_thread_and_share_the_jobs():
    b, done = Batches(range(20)), {}
    barrier = threading.Barrier(3, timeout=30)

    def work(i):
        barrier.wait()    # all three run at once
        while (batch := b.take(1)[0]):
            done[batch[0]] = (i, threading.current_thread().name)
    run_workers(b, ['cpu', 'cpu', 'meta'], work)
    assert sorted(done) == list(range(20))
    assert {name for _, name in done.values()} <= {'ganinv-cpu-0', 'ganinv-cpu-1', 'ganinv-meta-2'}


def test_a_crash_stops_the_other_workers_then_is_raised():
    b, stopped = Batches([]), threading.Event()

    def work(i):
        if i == 0:
            raise ValueError('worker 0 broke')
        while True:       # a worker sees the stop at its next progress report
            try:
                b.check()
            except Stopped:
                stopped.set()
                raise
            b.stop.wait(0.01)
    with pytest.raises(ValueError, match='worker 0 broke'):
        run_workers(b, ['cpu', 'cpu'], work)
    assert stopped.is_set() and b.stop.is_set()
