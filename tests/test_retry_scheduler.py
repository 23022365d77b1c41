"""The backoff scheduler's timing and its stop, and that stopping an engine is bounded by its work, not
by a thread's join timeout (mutations in retry.py that only cost time survived every other test)."""
import threading
import time

import pytest

from tests.engine_helpers import engine_config, workload
from tqengine import WorkerPool
from tqengine.retry import BackoffScheduler


def _alive(name):
    return any(t.name == name and t.is_alive() for t in threading.enumerate())


def test_a_due_item_is_released_on_time_not_early_and_not_late():
    released = []
    done = threading.Event()

    def release(item):
        released.append((item, time.perf_counter()))
        done.set()

    scheduler = BackoffScheduler(release, name="tq-backoff-test-due")
    try:
        t0 = time.perf_counter()
        scheduler.schedule(0.1, "x")
        assert done.wait(5)
        late = released[0][1] - t0
        assert 0.095 <= late < 0.5, f"released after {late:.3f} s for a 0.1 s delay"
        assert scheduler.pending() == 0
    finally:
        scheduler.stop()


def test_a_new_earlier_item_is_not_held_behind_a_later_one():
    released = []
    done = threading.Event()

    def release(item):
        released.append((item, time.perf_counter()))
        if item == "soon":
            done.set()

    scheduler = BackoffScheduler(release, name="tq-backoff-test-order")
    try:
        scheduler.schedule(30.0, "later")
        t0 = time.perf_counter()
        scheduler.schedule(0.02, "soon")         # must wake the scheduler sleeping towards 30 s
        assert done.wait(5), "an earlier item waited behind a later one"
        assert released[0][1] - t0 < 0.5
        assert [item for item, _ in released] == ["soon"] and scheduler.pending() == 1
    finally:
        scheduler.stop()


def test_negative_delays_are_due_at_once_in_schedule_order():
    released = []
    done = threading.Event()

    def release(item):
        released.append(item)
        if len(released) == 3:
            done.set()

    scheduler = BackoffScheduler(release, name="tq-backoff-test-neg")
    try:
        for item in ("a", "b", "c"):
            scheduler.schedule(-1.0, item)
        assert done.wait(2)
        assert released == ["a", "b", "c"]
    finally:
        scheduler.stop()


@pytest.mark.parametrize("with_pending", [False, True])
def test_stop_returns_at_once_and_releases_nothing_after_it(with_pending):
    released = []
    name = f"tq-backoff-test-stop-{with_pending}"
    scheduler = BackoffScheduler(released.append, name=name)
    if with_pending:
        scheduler.schedule(0.15, "left for the durable store")
        scheduler.schedule(60.0, "far away")
    assert _alive(name)
    t0 = time.perf_counter()
    scheduler.stop(timeout=5.0)
    assert time.perf_counter() - t0 < 1.0, "stop waited for its join timeout: the thread was not woken"
    assert not _alive(name)
    threading.Event().wait(0.25)             # past the first item's due time: nothing may be released
    assert released == []


@pytest.mark.timeout(30)
def test_stopping_an_engine_takes_its_work_not_its_timeouts(tmp_path):
    tasks = workload(tmp_path, 10, object_bytes=200)
    cfg = engine_config(tmp_path, max_workers=2, transient_rate=0.3, seed=4, max_attempts=3)
    pool = WorkerPool(cfg).start()
    for handle in pool.submit_many(tasks):
        handle.result(10)
    t0 = time.perf_counter()
    assert pool.shutdown(graceful=True, timeout=30) is True
    took = time.perf_counter() - t0
    assert took < 2.0, f"shutdown of an idle engine took {took:.2f} s"
    # and a non-graceful stop with retries waiting in a long backoff is bounded as well
    cfg = engine_config(tmp_path / "b", max_workers=2, transient_rate=1.0, max_attempts=5, backoff_base_s=30.0,
                        backoff_cap_s=30.0)
    pool = WorkerPool(cfg).start()
    handles = pool.submit_many(workload(tmp_path / "b", 4, object_bytes=200))
    deadline = time.perf_counter() + 10
    while pool.metrics_snapshot()["counters"]["retried"] < 4:
        assert time.perf_counter() < deadline
        pool.drain(0.01)
    t0 = time.perf_counter()
    assert pool.shutdown(graceful=False) is False
    took = time.perf_counter() - t0
    assert took < 2.0, f"non-graceful shutdown took {took:.2f} s"
    assert {h.result(0).status for h in handles} == {"queued"}


def test_backoff_delays_come_from_the_given_generator():
    """The engine seeds its generator (backoff|seed), so a run's delays are reproducible."""
    import random

    from tqengine.retry import backoff_delay
    first = [backoff_delay(n, 0.05, 2.0, random.Random(7)) for n in range(1, 8)]
    again = [backoff_delay(n, 0.05, 2.0, random.Random(7)) for n in range(1, 8)]
    assert first == again
    assert first == [random.Random(7).uniform(0.0, min(2.0, 0.05 * 2 ** (n - 1))) for n in range(1, 8)]
