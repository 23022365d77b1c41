"""runners/floor.py, the durable floor of benchmark.py --overhead --floor: what it claims to keep of the
engine's contract (claim committed before the task runs, final state before run() returns) holds, and what
it does not handle (a key twice in flight, a failing task, a caller that gives up) fails without a hang."""
import sqlite3
import threading
import time

import pytest

from runners.floor import DurableFloorAdapter


def _task(i, key=None):
    return {"task_id": f"t{i}", "image_key": key or f"img/{i}.jpg", "size": "200x200"}


def _status(db, key):
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT status FROM tasks WHERE idempotency_key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return row and row[0]


@pytest.mark.timeout(30)
def test_a_claim_is_committed_before_its_task_runs_and_its_final_state_before_run_returns(tmp_path):
    db = str(tmp_path / "floor" / "tasks.db")
    seen = {}

    def work(task):     # in a worker thread: the claim must already be a committed row
        key = f"{task['image_key']}#{task['size']}"
        seen[key] = _status(db, key)

    floor = DurableFloorAdapter(db, workers=3, queue_size=4, fn=work)
    floor.start()
    try:
        results = []
        clients = [threading.Thread(target=lambda i=i: results.append(floor.run(_task(i), 10))) for i in range(12)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(20)
        assert results == [{"status": "success"}] * 12
        for i in range(12):
            key = f"img/{i}.jpg#200x200"
            assert seen[key] == "queued" and _status(db, key) == "success"
    finally:
        floor.stop()


@pytest.mark.timeout(30)
def test_a_key_twice_in_flight_or_a_failing_task_fails_without_a_hang(tmp_path):
    db = str(tmp_path / "tasks.db")
    gate = threading.Event()

    def work(task):
        if task["task_id"] == "boom":
            raise ValueError("no thumbnail")
        gate.wait(10)

    floor = DurableFloorAdapter(db, workers=2, fn=work)
    floor.start()
    try:
        assert floor.run(dict(_task(0), task_id="boom"), 10)["status"] == "failed"
        assert _status(db, "img/0.jpg#200x200") == "queued"     # not recorded as a success
        results = []
        twins = [threading.Thread(target=lambda: results.append(floor.run(_task(1, "img/same.jpg"), 10)))
                 for _ in range(2)]
        for twin in twins:
            twin.start()
        deadline = time.perf_counter() + 10
        while not any(r["status"] == "failed" for r in results) and time.perf_counter() < deadline:
            time.sleep(0.01)
        gate.set()
        for twin in twins:
            twin.join(10)
        assert len(results) == 2 and "failed" in [r["status"] for r in results], results
        assert "distinct keys" in next(r["error"] for r in results if r["status"] == "failed")
    finally:
        gate.set()
        floor.stop()


@pytest.mark.timeout(30)
def test_a_caller_that_gives_up_gets_timeout_and_stop_is_bounded(tmp_path):
    release = threading.Event()
    floor = DurableFloorAdapter(str(tmp_path / "tasks.db"), workers=1, fn=lambda task: release.wait(10))
    floor.start()
    try:
        with pytest.raises(TimeoutError):
            floor.run(_task(0), 0.05)
    finally:
        release.set()
        started = time.perf_counter()
        floor.stop()
        floor.stop()                # a second stop does nothing
        assert time.perf_counter() - started < 10


@pytest.mark.timeout(10)
def test_the_floor_makes_a_new_database_and_refuses_an_existing_one(tmp_path):
    db = tmp_path / "tasks.db"
    db.write_bytes(b"a user's file")
    with pytest.raises(FileExistsError):
        DurableFloorAdapter(str(db)).start()
    assert db.read_bytes() == b"a user's file"


class _PausingLock:
    """A lock for the floor's Condition that holds one chosen thread at its first acquire, before it has the
    lock, until `go` is set: what the scheduler may do to any thread at that point."""

    def __init__(self):
        self._lock = threading.Lock()
        self.paused_thread = None
        self.reached, self.go = threading.Event(), threading.Event()

    def acquire(self, blocking=True, timeout=-1):
        if threading.current_thread() is self.paused_thread and not self.reached.is_set():
            self.reached.set()
            self.go.wait(10)
        return self._lock.acquire(blocking, timeout)

    def release(self):
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()


@pytest.mark.timeout(30)
def test_a_caller_held_up_just_before_the_lock_still_has_its_task_committed(tmp_path):
    """A claim goes into the list that is pending when its caller holds the lock. Before, run() picked the list
    before taking the lock: a caller held up there (1000 clients, once in five runs of 100,000 tasks) appended
    to a list the writer had already committed, and its task was never queued: run() hung."""
    floor = DurableFloorAdapter(str(tmp_path / "tasks.db"), workers=1, queue_size=4)
    lock = _PausingLock()
    floor._cv = threading.Condition(lock)
    floor.start()
    try:
        results = {}
        def run_held():
            try:
                results["held"] = floor.run(_task(1), 5)
            except TimeoutError as exc:
                results["held"] = exc
        held = threading.Thread(target=run_held)
        lock.paused_thread = held
        held.start()
        assert lock.reached.wait(10)            # the held caller is at the lock, its task not yet pending
        results["other"] = floor.run(_task(2), 5)   # meanwhile another task is claimed, run and committed
        lock.go.set()
        held.join(10)
        assert results["other"] == {"status": "success"}
        assert results["held"] == {"status": "success"}
    finally:
        lock.go.set()
        floor.stop()
