"""The bounded queue and its backpressure policy, asserted directly (issue 15: fail_fast blocking and an
unbounded queue were caught only as a pytest-timeout hang, never by an assertion).

Timing bounds are wide (a loaded 2-core machine) but far from the wrong behaviour: `fail_fast` must answer
in well under 50 ms where blocking would take enqueue_timeout_s = 5 s.
"""
import threading
import time

import pytest

from tests.engine_helpers import engine_config, wait_until, workload
from tqengine import TaskQueue, WorkerPool
from tqengine.metrics import Metrics
from tqengine.queue import STOP


def _queue(maxsize=3, mode="fail_fast", timeout=5.0):
    metrics = Metrics(workers=1)
    return TaskQueue(maxsize, mode, timeout, metrics), metrics


@pytest.mark.parametrize("args, named", [
    ((0, "block", 5.0), "queue_size"),          # queue.Queue(0) is unbounded: no backpressure at all
    ((-1, "block", 5.0), "queue_size"),
    ((2.5, "block", 5.0), "queue_size"),
    ((True, "block", 5.0), "queue_size"),
    ((3, "failfast", 5.0), "mode"),             # a misspelt mode would have blocked
    ((3, "block", -1.0), "enqueue_timeout_s"),
    ((3, "block", float("nan")), "enqueue_timeout_s"),
])
def test_the_constructor_refuses_what_the_config_refuses(args, named):
    from tqengine.errors import ConfigError
    with pytest.raises(ConfigError, match=f"invalid {named}"):
        TaskQueue(*args, Metrics(workers=1))


def _fill(q, n):
    assert all(q.offer(f"item{i}") for i in range(n))


def _call_within(seconds, fn, *args):
    """fn(*args) in a daemon thread; (True, value, elapsed s) if it returned within `seconds`, else
    (False, None, seconds): a call that blocks fails an assertion instead of hanging the test."""
    box = []
    done = threading.Event()

    def call():
        t0 = time.perf_counter()
        value = fn(*args)
        box.append((value, time.perf_counter() - t0))
        done.set()

    threading.Thread(target=call, daemon=True).start()
    if not done.wait(seconds):
        return False, None, seconds
    return True, box[0][0], box[0][1]


def _drain(q):
    items = []
    while True:
        item = q.get(0.01)
        if item is None:
            return items
        items.append(item)


def test_fail_fast_offer_on_a_full_queue_refuses_at_once():
    q, metrics = _queue(maxsize=3, mode="fail_fast", timeout=5.0)
    _fill(q, 3)
    times = []
    for _ in range(5):
        returned, accepted, took = _call_within(1.0, q.offer, "extra")
        assert returned, "fail_fast offer blocked on a full queue"
        assert accepted is False
        times.append(took)
    assert max(times) < 0.5, f"fail_fast waited {max(times):.3f} s for room"    # the block timeout is 5 s
    assert metrics.counters()["enqueued"] == 3              # refusals are not counted as enqueued
    assert _drain(q) == ["item0", "item1", "item2"]          # nothing refused got in, FIFO order


def test_block_offer_waits_about_the_enqueue_timeout_then_refuses():
    q, metrics = _queue(maxsize=2, mode="block", timeout=0.3)
    _fill(q, 2)
    t0 = time.perf_counter()
    assert q.offer("extra") is False
    waited = time.perf_counter() - t0
    assert 0.28 <= waited < 1.0, waited
    assert metrics.counters()["enqueued"] == 2 and _drain(q) == ["item0", "item1"]


def test_block_offer_takes_room_as_soon_as_it_appears():
    q, _metrics = _queue(maxsize=1, mode="block", timeout=5.0)
    _fill(q, 1)
    done = threading.Event()
    outcome = []
    t = threading.Thread(target=lambda: (outcome.append(q.offer("late")), done.set()))
    t.start()
    assert not done.wait(0.1), "block mode did not wait for room"
    t0 = time.perf_counter()
    assert q.get(1.0) == "item0"
    assert done.wait(2.0) and outcome == [True]
    assert time.perf_counter() - t0 < 1.0                   # woken by the room, not by the 5 s timeout
    t.join(5)
    assert q.get(1.0) == "late"


@pytest.mark.parametrize("mode", ["block", "fail_fast"])
def test_the_queue_never_holds_more_than_maxsize(mode):
    q, metrics = _queue(maxsize=4, mode=mode, timeout=0.05)
    accepted = []
    lock = threading.Lock()

    def producer(n):
        for i in range(20):
            if q.offer((n, i)):
                with lock:
                    accepted.append((n, i))

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    got = []
    deadline = time.perf_counter() + 10
    while any(t.is_alive() for t in threads) and time.perf_counter() < deadline:
        item = q.get(0.01)                  # a slow consumer: the producers keep it full
        if item is not None:
            got.append(item)
            threading.Event().wait(0.002)
    for t in threads:
        t.join(5)
    got.extend(_drain(q))
    snap = metrics.snapshot()
    assert snap["queue_depth"]["max"] == 4, snap["queue_depth"]
    assert sorted(got) == sorted(accepted)
    if mode == "fail_fast":
        assert len(accepted) < 120                          # a full queue refused some at once
    assert metrics.counters()["enqueued"] == len(accepted) and metrics.counters()["dequeued"] == len(got)


def test_requeue_waits_for_room_and_gives_up_only_when_stopping():
    q, metrics = _queue(maxsize=1, mode="fail_fast")
    _fill(q, 1)
    stopping = threading.Event()
    stopping.set()
    returned, requeued, took = _call_within(2.0, q.requeue, "retry", stopping.is_set, 0.02)
    assert returned and requeued is False, "requeue on a full queue did not notice the stop"
    assert took < 0.5, took
    stopping.clear()
    result = []
    t = threading.Thread(target=lambda: result.append(q.requeue("retry", stopping.is_set, poll_s=0.02)))
    t.start()
    t.join(0.15)
    assert t.is_alive() and not result, "requeue refused an accepted task while the engine runs"
    assert q.get(1.0) == "item0"
    t.join(5)
    assert result == [True] and q.get(1.0) == "retry"
    # a requeued task was counted when it was first accepted, not again
    assert metrics.counters()["enqueued"] == 1 and metrics.counters()["dequeued"] == 2


def test_get_returns_none_after_its_timeout_and_items_in_order():
    q, _metrics = _queue(maxsize=5)
    t0 = time.perf_counter()
    assert q.get(0.1) is None
    assert 0.09 <= time.perf_counter() - t0 < 1.0
    _fill(q, 3)
    assert [q.get(1), q.get(1), q.get(1)] == ["item0", "item1", "item2"]


def test_wake_never_blocks_and_stop_markers_are_not_queue_depth():
    q, metrics = _queue(maxsize=2)
    returned, _value, _took = _call_within(1.0, q.wake, 3)   # room for 2: the third is dropped, not waited for
    assert returned, "wake blocked on a full queue"
    assert [q.get(0.1), q.get(0.1), q.get(0.1)] == [STOP, STOP, None]
    _fill(q, 2)
    returned, _value, took = _call_within(1.0, q.wake, 5)
    assert returned and took < 0.5, "wake blocked on a full queue"     # an offer would wait 5 s
    snap = metrics.snapshot()
    assert snap["queue_depth"]["max"] == 2 and metrics.counters()["dequeued"] == 0


def test_wake_hands_out_exactly_n_markers_when_there_is_room():
    q, _metrics = _queue(maxsize=10)
    q.wake(4)                               # one per idle worker: none may be left waiting a poll
    assert [q.get(0.05) for _ in range(5)] == [STOP] * 4 + [None]


@pytest.mark.timeout(30)
def test_engine_fail_fast_refuses_a_full_queue_at_once(tmp_path):
    """Through the engine: one task running, the queue full; the next submissions are refused in well under
    the 5 s enqueue timeout, each as a QueueFull rejection committed to the database."""
    tasks = workload(tmp_path, 8, object_bytes=200)
    cfg = engine_config(tmp_path, max_workers=1, queue_size=2, mode="fail_fast", enqueue_timeout_s=5.0,
                        latency_ms=250.0)
    with WorkerPool(cfg) as pool:
        first = pool.submit(tasks[0])
        deadline = time.perf_counter() + 5
        while pool.metrics_snapshot()["counters"]["dequeued"] < 1:          # the worker has it
            assert time.perf_counter() < deadline, "the first task was never taken by the worker"
            pool.drain(0.005)
        queued = pool.submit_many(tasks[1:3])                               # fills the queue of 2
        t0 = time.perf_counter()
        refused = pool.submit_many(tasks[3:])
        results = [h.result(1.0) for h in refused]
        took = time.perf_counter() - t0
        assert [r.status for r in results] == ["rejected"] * 5, results
        assert all(r.error_class == "QueueFull" for r in results)
        assert took < 1.0, f"fail_fast refusals took {took:.2f} s"
        assert [h.result(10).status for h in [first] + queued] == ["success"] * 3
        snap = pool.metrics_snapshot()
    assert snap["counters"]["rejected"] == 5 and snap["counters"]["enqueued"] == 3
    assert snap["queue_depth"]["max"] == 2


@pytest.mark.timeout(30)
def test_engine_queue_depth_never_exceeds_queue_size_under_many_submitters(tmp_path):
    tasks = workload(tmp_path, 60, object_bytes=200)
    cfg = engine_config(tmp_path, max_workers=1, queue_size=4, mode="block", enqueue_timeout_s=20.0,
                        latency_ms=2.0)
    with WorkerPool(cfg) as pool:
        results = [None] * len(tasks)

        def client(n):
            for i in range(n, len(tasks), 6):
                results[i] = pool.submit(tasks[i]).result(20)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(25)
        snap = pool.metrics_snapshot()
    assert [r.status for r in results] == ["success"] * 60
    assert snap["queue_depth"]["max"] <= 4, snap["queue_depth"]
    assert snap["queue_depth"]["max"] >= 3                  # the clients really kept it (nearly) full


def test_producers_waiting_for_room_get_it_first_come_first_served():
    """Parked tasks (run() callers) and blocked offers wait in one line: each get moves the head in, so the
    queue stays at its bound and room goes in arrival order, whichever way a producer waits."""
    q, metrics = _queue(maxsize=2, mode="block", timeout=10.0)
    _fill(q, 2)
    assert q.park("p1") is False                        # full: parked, not in the queue
    offered = []
    blocked = threading.Thread(target=lambda: offered.append(q.offer("o2")))
    blocked.start()
    wait_until(lambda: len(q._line) == 2)
    assert q.park("p3") is False
    assert q.offer_nowait("late") is False              # the line is ahead of it
    got = [q.get(1.0)]
    assert q._q.qsize() == 2 and not offered            # p1 took the room, not the blocked offer
    got.append(q.get(1.0))
    blocked.join(5)
    assert offered == [True]                            # its turn came: it went in, its producer woke
    got.extend(_drain(q))
    assert got == ["item0", "item1", "p1", "o2", "p3"]
    assert metrics.snapshot()["queue_depth"]["max"] == 2
    assert metrics.counters()["enqueued"] == 5


def test_a_parked_task_is_taken_back_only_while_it_waits_in_line():
    q, _metrics = _queue(maxsize=1, mode="block", timeout=10.0)
    assert q.park("first") is True                      # room and nobody waiting: straight in
    assert q.park("a") is False and q.park("b") is False
    assert q.withdraw("a") is True and q.withdraw("a") is False
    assert q.get(1.0) == "first"                        # b moves in
    assert q.withdraw("b") is False                     # a worker will take it: too late to take back
    assert _drain(q) == ["b"]
