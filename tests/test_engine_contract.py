"""The engine's promises asserted directly through the public API (WorkerPool, TaskResult, the SQLite
schema), so they hold across a rewrite of the pool, the processor or the state store.

- attempts: with a seed where some tasks use up their attempts, every task's outcome and attempt count
  is exactly what the seeded fault model (docs/CONTRACTS.md) says; none exceeds max_attempts;
- a handle's result is final in the database when result() returns (read through a second connection);
- idempotency, duplicates, dead letters, graceful shutdown with retries pending, and the counters.
"""
import dataclasses
import json
import sqlite3
import threading

import pytest

from tests.engine_helpers import engine_config, output_path, workload
from tqengine import WorkerPool, faults
from tqengine.transform import verify_output

SEED, TRANSIENT, PERMANENT, MAX_ATTEMPTS = 2, 0.5, 0.1, 3
OBJECT_BYTES = 300


def _key(task):
    return f"{task['image_key']}#{task['size']}"


def expected_outcome(task, seed=SEED, transient=TRANSIENT, permanent=PERMANENT, max_attempts=MAX_ATTEMPTS):
    """(status, attempts, error_class) the fault model dictates for one task."""
    for attempt in range(1, max_attempts + 1):
        _lat, fault = faults.plan(seed, _key(task), attempt, 1.0, 0.0, transient, permanent)
        if fault == faults.PERMANENT:
            return "dead", attempt, "InjectedPermanent"
        if fault is None:
            return "success", attempt, None
    return "dead", max_attempts, "InjectedTransient"


def _connect(tmp_path):
    return sqlite3.connect(str(tmp_path / "tasks.db"), timeout=5.0)


def _row(conn, key):
    return conn.execute("SELECT status, attempts, output_key, output_digest, error_class FROM tasks"
                        " WHERE idempotency_key = ?", (key,)).fetchone()


@pytest.mark.timeout(30)
def test_every_outcome_and_attempt_count_is_what_the_fault_model_dictates(tmp_path):
    tasks = workload(tmp_path, 40, seed=81, object_bytes=OBJECT_BYTES)
    expected = [expected_outcome(t) for t in tasks]
    # the seed is chosen so every path is taken: used up attempts, succeeded after a retry, etc.
    assert sum(1 for e in expected if e == ("dead", MAX_ATTEMPTS, "InjectedTransient")) >= 3
    assert sum(1 for e in expected if e[0] == "success" and 1 < e[1] < MAX_ATTEMPTS) >= 3
    assert sum(1 for e in expected if e[0] == "success" and e[1] == MAX_ATTEMPTS) >= 3
    assert sum(1 for e in expected if e[2] == "InjectedPermanent") >= 1
    cfg = engine_config(tmp_path, max_workers=4, latency_ms=1.0, transient_rate=TRANSIENT,
                        permanent_rate=PERMANENT, seed=SEED, max_attempts=MAX_ATTEMPTS)
    with WorkerPool(cfg) as pool:
        results = [h.result(20) for h in pool.submit_many(tasks)]
        snap = pool.metrics_snapshot()
    got = [(r.status, r.attempts, r.error_class) for r in results]
    assert got == expected
    assert max(r.attempts for r in results) == MAX_ATTEMPTS
    for task, r in zip(tasks, results, strict=True):
        assert r.idempotency_key == _key(task) and r.task_id == task["task_id"] and not r.duplicate
        if r.status == "success":
            assert r.output_key == f"variants/{task['image_key']}@{task['size']}" and r.error is None
            with open(output_path(tmp_path, r.output_key), "rb") as f, \
                    open(output_path(tmp_path, task["image_key"]), "rb") as src:
                assert verify_output(iter(lambda: f.read(4096), b""), task["size"],
                                     iter(lambda: src.read(4096), b"")) is None
        else:
            assert r.error and r.output_key is None
    # the database says the same, and every dead task has exactly one dead letter with its attempts
    conn = _connect(tmp_path)
    for task, (status, attempts, error_class) in zip(tasks, expected, strict=True):
        row = _row(conn, _key(task))
        assert (row[0], row[1]) == (status, attempts) and (error_class is None or row[4] == error_class)
    letters = conn.execute("SELECT d.idempotency_key, d.attempts, d.error_class, t.payload FROM dead_letters d"
                           " JOIN tasks t ON t.id = d.task_row").fetchall()   # the payload lives once, in tasks
    conn.close()
    dead = {_key(t): e for t, e in zip(tasks, expected, strict=True) if e[0] == "dead"}
    assert sorted(k for k, *_ in letters) == sorted(dead)
    for key, attempts, error_class, payload in letters:
        assert (attempts, error_class) == dead[key][1:]
        assert json.loads(payload)["image_key"] == key.split("#")[0]
    # the counters, from the same oracle
    c = snap["counters"]
    failed_attempts = sum(a - (s == "success") for s, a, _ in expected)
    n_dead = len(dead)
    assert c["succeeded"] == 40 - n_dead and c["dead_lettered"] == n_dead
    assert c["failed"] == failed_attempts and c["retried"] == failed_attempts - n_dead
    assert c["enqueued"] == 40 and c["dequeued"] == 40 + c["retried"]
    assert c["rejected"] == 0 and c["duplicates"] == 0
    assert snap["tasks_submitted"] == 40 and snap["error_rate"] == pytest.approx(n_dead / 40)


@pytest.mark.timeout(30)
def test_max_attempts_one_means_no_retry(tmp_path):
    tasks = workload(tmp_path, 30, seed=82, object_bytes=OBJECT_BYTES)
    expected = [expected_outcome(t, transient=0.5, permanent=0.0, max_attempts=1) for t in tasks]
    assert {e[0] for e in expected} == {"success", "dead"}
    cfg = engine_config(tmp_path, transient_rate=0.5, seed=SEED, max_attempts=1)
    with WorkerPool(cfg) as pool:
        results = [h.result(20) for h in pool.submit_many(tasks)]
        snap = pool.metrics_snapshot()
    assert [(r.status, r.attempts, r.error_class) for r in results] == expected
    assert snap["counters"]["retried"] == 0


@pytest.mark.timeout(30)
def test_a_result_is_final_in_the_database_when_result_returns(tmp_path):
    """Each client reads the row through its own connection right after result(): already final, with the
    same attempts and digest, and a dead one already has its dead letter."""
    tasks = workload(tmp_path, 80, seed=83, object_bytes=OBJECT_BYTES)
    cfg = engine_config(tmp_path, max_workers=4, transient_rate=0.3, permanent_rate=0.15, seed=SEED,
                        max_attempts=2)
    problems, seen = [], []

    def client(mine):
        conn = _connect(tmp_path)
        try:
            for task in mine:
                r = pool.submit(task).result(20)
                row = _row(conn, _key(task))
                seen.append(r.status)
                if row is None or (row[0], row[1], row[3]) != (r.status, r.attempts, r.output_digest):
                    problems.append((r.status, r.attempts, row))
                if r.status == "dead":
                    n = conn.execute("SELECT count(*) FROM dead_letters d JOIN tasks t ON d.task_row = t.id"
                                     " WHERE t.idempotency_key = ?", (_key(task),)).fetchone()[0]
                    if n != 1:
                        problems.append(("dead letter", n, _key(task)))
        finally:
            conn.close()

    with WorkerPool(cfg) as pool:
        threads = [threading.Thread(target=client, args=(tasks[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(25)
    assert not problems, problems[:5]
    assert len(seen) == 80 and {"success", "dead"} <= set(seen)


@pytest.mark.timeout(30)
def test_graceful_shutdown_finishes_tasks_waiting_in_backoff(tmp_path):
    tasks = workload(tmp_path, 30, seed=84, object_bytes=OBJECT_BYTES)
    expected = [expected_outcome(t, transient=0.6, permanent=0.0, max_attempts=4) for t in tasks]
    assert any(e[1] > 1 for e in expected)
    cfg = engine_config(tmp_path, max_workers=2, latency_ms=1.0, transient_rate=0.6, seed=SEED, max_attempts=4,
                        backoff_base_s=0.02, backoff_cap_s=0.05)
    pool = WorkerPool(cfg).start()
    handles = pool.submit_many(tasks)
    assert pool.shutdown(graceful=True, timeout=20) is True
    assert [(h.result(0).status, h.result(0).attempts) for h in handles] == [e[:2] for e in expected]
    conn = _connect(tmp_path)
    statuses = [r[0] for r in conn.execute("SELECT status FROM tasks")]
    conn.close()
    assert sorted(statuses) == sorted(e[0] for e in expected)


@pytest.mark.timeout(30)
def test_duplicates_in_one_batch_run_once_and_share_the_result(tmp_path):
    task = workload(tmp_path, 1, seed=85, object_bytes=OBJECT_BYTES)[0]
    copies = [dict(task, task_id=f"copy{i}") for i in range(5)]
    with WorkerPool(engine_config(tmp_path, latency_ms=20.0)) as pool:
        results = [h.result(10) for h in pool.submit_many(copies)]
        snap = pool.metrics_snapshot()
    assert [r.duplicate for r in results] == [False, True, True, True, True]
    assert [r.task_id for r in results] == [f"copy{i}" for i in range(5)]
    assert {(r.status, r.attempts, r.output_digest, r.row_id) for r in results} == \
        {("success", 1, results[0].output_digest, results[0].row_id)}
    c = snap["counters"]
    assert (c["succeeded"], c["duplicates"], c["enqueued"], c["dequeued"]) == (1, 4, 1, 1)
    assert snap["tasks_submitted"] == 5 and snap["error_rate"] == 0
    conn = _connect(tmp_path)
    assert conn.execute("SELECT count(*), max(attempts) FROM tasks").fetchone() == (1, 1)
    conn.close()


@pytest.mark.timeout(30)
def test_a_dead_task_submitted_again_returns_its_dead_letter_without_running(tmp_path):
    tasks = workload(tmp_path, 40, seed=86, object_bytes=OBJECT_BYTES)
    doomed = next(t for t in tasks if expected_outcome(t, permanent=0.3)[2] == "InjectedPermanent")
    cfg = engine_config(tmp_path, permanent_rate=0.3, seed=SEED)
    with WorkerPool(cfg) as pool:
        first = pool.submit(doomed).result(10)
    with WorkerPool(cfg) as pool:
        again = pool.submit(dict(doomed, task_id="again")).result(10)
        snap = pool.metrics_snapshot()
    assert first.status == "dead" and first.attempts == 1 and first.error_class == "InjectedPermanent"
    assert again.duplicate and (again.status, again.attempts, again.error_class) == ("dead", 1, "InjectedPermanent")
    assert snap["counters"]["dequeued"] == 0 and snap["counters"]["dead_lettered"] == 0
    assert snap["counters"]["duplicates"] == 1
    conn = _connect(tmp_path)
    assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 1
    conn.close()


@pytest.mark.timeout(30)
def test_invalid_tasks_are_dead_letters_at_once_and_counted(tmp_path):
    good = workload(tmp_path, 2, seed=87, object_bytes=OBJECT_BYTES)
    bad = [{"task_id": "b1", "image_key": "../etc/passwd", "size": "10x10"},
           {"task_id": "b2", "image_key": "ok.raw", "size": "0x10"},
           {"task_id": "b3", "image_key": "ok.raw"},
           "not a task"]
    with WorkerPool(engine_config(tmp_path)) as pool:
        results = [h.result(10) for h in pool.submit_many(good + bad)]
        snap = pool.metrics_snapshot()
    assert [r.status for r in results] == ["success", "success", "dead", "dead", "dead", "dead"]
    assert all(r.error_class == "ValidationError" and r.attempts == 0 for r in results[2:])
    c = snap["counters"]
    assert (c["succeeded"], c["dead_lettered"], c["enqueued"]) == (2, 4, 2)
    assert snap["error_rate"] == pytest.approx(4 / 6)
    conn = _connect(tmp_path)
    assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 4
    conn.close()


@pytest.mark.timeout(30)
def test_result_record_fields(tmp_path):
    task = workload(tmp_path, 1, seed=88, object_bytes=OBJECT_BYTES)[0]
    with WorkerPool(engine_config(tmp_path, latency_ms=10.0)) as pool:
        handle = pool.submit(task)
        r = handle.result(10)
        assert handle.done()
    d = r.as_dict()
    assert list(d) == ["task_id", "idempotency_key", "status", "attempts", "output_key", "output_digest",
                       "latency_ms", "error", "error_class", "duplicate", "row_id"]
    assert d == dataclasses.asdict(r)
    assert d["status"] == "success" and d["attempts"] == 1 and d["error"] is None and d["error_class"] is None
    assert 10.0 <= d["latency_ms"] < 5000
    assert len(d["output_digest"]) == 64
    d["status"] = "changed"                 # a copy: the record itself does not change
    assert r.status == "success" and r.as_dict()["status"] == "success"
    import hashlib
    with open(output_path(tmp_path, r.output_key), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == r.output_digest


@pytest.mark.timeout(30)
def test_a_built_result_is_the_dataclasss_own():
    """TaskResult.build (the handle's fast way) makes exactly what TaskResult(...) makes: the same fields in
    the same order, equal, the same hash and repr, and just as frozen; a field added to the dataclass
    and not to build() fails here."""
    import inspect

    from tqengine.records import TaskResult
    names = [f.name for f in dataclasses.fields(TaskResult)]
    assert list(inspect.signature(TaskResult.build).parameters) == names
    values = ("t1", "img/a.jpg#8x8", "success", 2, "variants/img/a.jpg@8x8.jpg", "ab" * 32, 12.5, None, None,
              True, 7)
    built, made = TaskResult.build(*values), TaskResult(*values)
    assert type(built) is TaskResult
    assert list(built.__dict__) == names == list(made.__dict__)
    assert built == made and hash(built) == hash(made) and repr(built) == repr(made)
    assert built.as_dict() == dataclasses.asdict(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.status = "dead"       # type: ignore[misc]


@pytest.mark.timeout(30)
def test_a_retry_waits_its_attempts_backoff_not_the_cap(tmp_path):
    """Full jitter after attempt 1 is U(0, base): with base 10 ms and cap 5 s, tasks that fail once and then
    succeed finish in well under a second."""
    tasks = workload(tmp_path, 30, seed=89, object_bytes=OBJECT_BYTES)
    expected = [expected_outcome(t, transient=0.5, permanent=0.0, max_attempts=2) for t in tasks]
    retried = [i for i, e in enumerate(expected) if e == ("success", 2, None)]
    assert len(retried) >= 3
    cfg = engine_config(tmp_path, transient_rate=0.5, seed=SEED, max_attempts=2, backoff_base_s=0.01,
                        backoff_cap_s=5.0)
    with WorkerPool(cfg) as pool:
        results = [h.result(20) for h in pool.submit_many(tasks)]
    assert [(r.status, r.attempts) for r in results] == [e[:2] for e in expected]
    slowest = max(results[i].latency_ms for i in retried)
    assert slowest < 1000, f"a retry after attempt 1 waited {slowest:.0f} ms (base 10 ms, cap 5 s)"


@pytest.mark.timeout(30)
def test_dead_tasks_count_in_the_engines_latency(tmp_path):
    """Latency is submit to final result for every processed task, dead ones included."""
    tasks = workload(tmp_path, 10, seed=90, object_bytes=OBJECT_BYTES)
    cfg = engine_config(tmp_path, permanent_rate=1.0, latency_ms=30.0, max_workers=10)
    with WorkerPool(cfg) as pool:
        results = [h.result(20) for h in pool.submit_many(tasks)]
        snap = pool.metrics_snapshot()
    assert {r.status for r in results} == {"dead"}
    lat = snap["latency_ms"]
    assert lat["max"] is not None and lat["p50"] >= 29.0, lat
    assert lat["max"] == pytest.approx(max(r.latency_ms for r in results), rel=0.2, abs=5.0)


@pytest.mark.timeout(60)
def test_an_infinite_timeout_waits_and_a_nan_one_is_refused(tmp_path):
    """result(float('inf')), run(task, 1e10) and drain(float('inf')) raised OverflowError (a lock's wait
    cannot be that long): they now wait as long as a lock can. NaN gave an immediate TimeoutError saying
    'within nan s' (drain: True or False by chance): it is a ValueError now, before anything is submitted."""
    tasks = workload(tmp_path, 3)
    with WorkerPool(engine_config(tmp_path)) as pool:
        assert pool.submit(tasks[0]).result(timeout=float("inf")).status == "success"
        assert pool.run(tasks[1], timeout=1e10).status == "success"
        assert pool.drain(timeout=float("inf"))
        for call in (lambda: pool.submit(tasks[2]).result(timeout=float("nan")),
                     lambda: pool.run(tasks[2], timeout=float("nan")), lambda: pool.drain(timeout=float("nan"))):
            with pytest.raises(ValueError, match="timeout must be a number"):
                call()
        assert pool.shutdown(timeout=float("inf"))
