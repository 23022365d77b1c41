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
