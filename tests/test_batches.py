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


def test_a_job_waits_for_the_one_it_follows_and_batches_hold_one_kind():
    """Frames of two videos (a0 a1 a2, b0 b1) and a photo p: a frame goes only once the previous one is done, and
    frames that start from their predecessor never share a batch with ones that do not."""
    jobs = ['a0', 'a1', 'a2', 'b0', 'b1', 'p']
    after = {'a1': 'a0', 'a2': 'a1', 'b1': 'b0'}
    b = Batches(jobs, after=after.get, kind=lambda j: j in after)
    first, _ = b.take(4)
    assert first == ['a0', 'b0', 'p']          # a1, b1 wait; the photo joins the first frames
    got = []
    t = threading.Thread(target=lambda: got.append(b.take(4)[0]))
    t.start()
    t.join(0.3)
    assert t.is_alive() and not got            # everything left waits for a running job
    b.done(first)
    t.join(5)
    assert got == [['a1', 'b1']]
    b.done(got[0])
    assert b.take(4)[0] == ['a2'] and b.take(4)[0] == []


def test_a_job_whose_predecessor_is_not_in_the_run_goes_at_once():
    """Resuming: frame 3's predecessor was restored by an earlier run (not pending, not running)."""
    b = Batches(['a3', 'a4'], after={'a3': 'a2', 'a4': 'a3'}.get)
    assert b.take(2)[0] == ['a3']


def test_stopping_releases_a_worker_waiting_for_a_job():
    b = Batches(['a0', 'a1'], after={'a1': 'a0'}.get)
    assert b.take(1)[0] == ['a0']
    got = []
    t = threading.Thread(target=lambda: got.append(b.take(1)[0]))
    t.start()
    b.stop.set()
    t.join(5)
    assert got == [[]] and not t.is_alive()
