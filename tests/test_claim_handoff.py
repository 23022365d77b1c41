"""The claim's commit callback (StateStore.claim(claims, committed)): the writer thread queues a submission's new
flights right after their claims commit, before the submitter wakes (admission.py). It must run exactly once,
before claim() returns, with the commit's error if there was one; never for a submitter that gave up waiting
(it has answered its tasks already); and the queue must keep submission order when it fills up."""
import sqlite3
import threading
import time

import pytest
from test_db_faults import _lock, _released_at

import tqengine.state.store as store_module
from tests.engine_helpers import engine_config, workload
from tqengine import TaskQueue, WorkerPool
from tqengine.records import Outcome
from tqengine.state.store import Claim, StateStore, StoreError


@pytest.mark.timeout(30)
def test_the_commit_callback_runs_once_before_claim_returns_and_sees_the_outcomes(tmp_path):
    store = StateStore(str(tmp_path / "tasks.db"))
    store.start()
    try:
        claims = [Claim("a#1x1", "pa", "ta"), Claim("b#1x1", "pb", "tb")]
        seen = []

        def committed(err):
            seen.append((err, [c.outcome for c in claims], threading.current_thread().name))
        store.claim(claims, committed)
        assert seen == [(None, ["new", "new"], "tq-state-writer")]
    finally:
        store.close()


@pytest.mark.timeout(30)
def test_a_failed_claim_commit_hands_its_error_to_the_callback(tmp_path):
    db = tmp_path / "tasks.db"
    store = StateStore(str(db), lock_wait_s=0.3)
    store.start()
    try:
        seen = []
        locker, _ = _lock(db, hold=5.0)
        try:
            with pytest.raises(StoreError, match="locked"):
                store.claim([Claim("a#1x1", "{}", "t1")], seen.append)
        finally:
            locker.kill()
            locker.communicate(timeout=10)
        assert len(seen) == 1 and seen[0] is not None and "locked" in str(seen[0])
    finally:
        store.close()


@pytest.mark.timeout(30)
def test_a_claimer_that_gave_up_waiting_never_has_its_callback_run(tmp_path):
    """The writer is stalled (another process holds the database) longer than the claimer waits: the claimer
    gives up (its submission is answered store_failed). When the writer's commit goes through later, the
    callback must not run: it would queue a task that was already answered."""
    db = tmp_path / "tasks.db"
    store = StateStore(str(db), lock_wait_s=20.0)
    store.claim_wait_s = 0.3
    store.start()
    calls = []
    try:
        locker, _ = _lock(db, hold=1.5)
        with pytest.raises(StoreError, match="did not commit"):
            store.claim([Claim("late#1x1", "{}", "t1")], lambda err: calls.append(("late", err)))
        _released_at(locker)
        store.claim_wait_s = 20.0
        store.claim([Claim("next#1x1", "{}", "t2")], lambda err: calls.append(("next", err)))
        assert calls == [("next", None)]
    finally:
        store.close()
    with sqlite3.connect(db) as conn:          # the late claim itself did commit: it resumes at the next start
        keys = {key for (key,) in conn.execute("SELECT idempotency_key FROM tasks")}
    assert keys == {"late#1x1", "next#1x1"}


class _Recording:
    """A processor that takes a little time and records the order in which tasks start."""

    def __init__(self):
        self.started = []

    def process(self, image_key, variant, key, attempt):
        self.started.append(key)
        time.sleep(0.01)
        return f"variants/{image_key}@{variant}", "", 0

    def completed_output(self, image_key, variant):
        return None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("queue_size, refuse_call", [(3, None), (64, None), (64, 2)])
def test_one_worker_runs_a_submission_in_order_when_the_queue_fills_up(tmp_path, monkeypatch, queue_size,
                                                                         refuse_call):
    """One submit_many of 12 tasks: the writer queues what fits, the submitter waits (block) for room for the
    rest; one worker must start them in submission order either way. `refuse_call`: the writer's offer finds
    the queue full at that call only (room came back at once): what follows must still queue behind it."""
    tasks = workload(tmp_path, 12, object_bytes=0)
    recording = _Recording()
    if refuse_call is not None:
        calls = []
        real = TaskQueue.offer_nowait

        def offer_nowait(self, item):
            calls.append(item)
            return False if len(calls) == refuse_call else real(self, item)
        monkeypatch.setattr(TaskQueue, "offer_nowait", offer_nowait)
    cfg = engine_config(tmp_path, max_workers=1, queue_size=queue_size, mode="block", enqueue_timeout_s=20.0)
    with WorkerPool(cfg, processor=recording) as pool:
        handles = pool.submit_many(tasks)
        assert [h.result(20).status for h in handles] == ["success"] * 12
        snap = pool.metrics_snapshot()
    assert recording.started == [f"{t['image_key']}#{t['size']}" for t in tasks]
    assert snap["counters"]["enqueued"] == 12 and snap["queue_depth"]["max"] <= queue_size


@pytest.mark.timeout(30)
def test_a_burst_of_writes_is_committed_in_batches_of_at_most_max_batch_writes(tmp_path, monkeypatch):
    """Writes queued faster than the writer commits go in batches of MAX_BATCH_WRITES rows, in their order:
    one unbounded batch made the writer's answer to it outlast the interpreter's switch interval (1000
    clients: batches of ~1000 writes answered in 5-140 ms)."""
    cap = store_module.MAX_BATCH_WRITES
    store = StateStore(str(tmp_path / "tasks.db"))
    committed = []
    real_commit = StateStore._commit

    def recording_commit(self, ops):
        committed.append([op.row_id for op in ops])
        return real_commit(self, ops)
    monkeypatch.setattr(StateStore, "_commit", recording_commit)
    n = 2 * cap + 5
    answered = threading.Event()
    seen = []

    def callback(err):
        seen.append(err)
        if len(seen) == n:
            answered.set()
    try:
        for row_id in range(1, n + 1):             # queued before the writer starts
            store.finish(row_id, Outcome.rejected(0, "Test", "a burst"), callback)
        store.start()
        assert answered.wait(20)
    finally:
        store.close()
    assert seen == [None] * n
    assert [len(rows) for rows in committed] == [cap, cap, 5]
    assert [row for rows in committed for row in rows] == list(range(1, n + 1))


@pytest.mark.timeout(30)
def test_an_attempt_still_running_is_written_running_though_the_writer_was_idle(tmp_path):
    """mark_running takes no lock and wakes no one: the writer, asleep once the claim is answered with nothing
    left to commit, must still look again within RUNNING_AFTER_S and write the `running` row of an attempt that
    has run that long (a writer that slept until the next write left it `queued` until the attempt ended)."""
    db = tmp_path / "tasks.db"
    store = StateStore(str(db))
    store.start()
    try:
        (claim,) = store.claim([Claim("a#1x1", "pa", "ta")])
        row_id = claim.row["id"]
        started = time.perf_counter()
        store.mark_running(row_id, 1)
        conn = sqlite3.connect(str(db), timeout=5.0)
        try:
            status = None
            while status != "running" and time.perf_counter() - started < 5.0:
                status = conn.execute("SELECT status FROM tasks WHERE id = ?", (row_id,)).fetchone()[0]
            waited = time.perf_counter() - started
        finally:
            conn.close()
        assert status == "running"
        assert store_module.RUNNING_AFTER_S <= waited < 1.0, waited
    finally:
        store.close()
