"""WorkerPool.run(task, timeout): submit and wait in one call. It must answer exactly what
submit(task).result(timeout) answers, in every case (success, a stored result, an invalid task, a full queue
in both modes, a timeout, an engine that stops), and its caller must sleep through the claim's commit when
the writer queues the task (one wake-up, at the outcome), yet wake at the commit when it has to act itself."""
import errno
import random
import threading
import time

import pytest

import tqengine.state.store as store_module
from runners.load import run_closed
from tests.engine_helpers import engine_config, wait_until, workload
from tqengine import TaskQueue, WorkerPool
from tqengine.errors import TransientError
from tqengine.retry import backoff_delay
from tqengine.sync import Signal


class _Gate:
    """A processor whose tasks wait until `release` is set (at most 30 s), counting the ones that started."""

    def __init__(self):
        self.release = threading.Event()
        self.started = 0
        self.lock = threading.Lock()

    def process(self, image_key, variant, key, attempt):
        with self.lock:
            self.started += 1
        self.release.wait(30)
        return f"variants/{image_key}@{variant}", "", 0

    def completed_output(self, image_key, variant):
        return None


def _record_batch_waits(monkeypatch):
    """The names of the threads that wait on a commit batch's `done` signal, in order."""
    waits = []

    class Recording(Signal):
        __slots__ = ()

        def wait(self, timeout=None):
            waits.append(threading.current_thread().name)
            return super().wait(timeout)
    monkeypatch.setattr(store_module, "Signal", Recording)
    return waits


def _same(result, other):
    fields = ("task_id", "idempotency_key", "status", "attempts", "output_key", "output_digest", "error_class",
              "duplicate")
    return {f: getattr(result, f) for f in fields} == {f: getattr(other, f) for f in fields}


@pytest.mark.timeout(60)
def test_run_answers_what_submit_then_result_answers(tmp_path):
    tasks = workload(tmp_path, 3, object_bytes=0)
    bad = {"task_id": "bad", "image_key": "../escape.jpg", "size": "10x10"}
    cfg = engine_config(tmp_path)
    with WorkerPool(cfg) as pool:
        first = pool.run(tasks[0], timeout=30)
        assert first.status == "success" and not first.duplicate and first.output_key
        again = pool.run(tasks[0], timeout=30)              # the key ended: its stored result, nothing runs
        assert again.status == "success" and again.duplicate and again.output_key == first.output_key
        invalid = pool.run(bad, timeout=30)
        assert invalid.status == "dead" and invalid.error_class == "ValidationError"
    answers = {}
    for way in ("submit", "run"):        # each on a database of its own: the same tasks, twice each
        workload(tmp_path / way, 3, object_bytes=0)
        with WorkerPool(engine_config(tmp_path / way)) as pool:
            call = (lambda t: pool.submit(t).result(30)) if way == "submit" else (lambda t: pool.run(t, 30))
            answers[way] = [call(t) for t in (tasks[1], bad, tasks[1], bad)]
    by_submit, by_run = answers["submit"], answers["run"]
    assert [r.duplicate for r in by_run] == [False, False, True, True]
    assert all(_same(a, b) for a, b in zip(by_run, by_submit, strict=True)), (by_run, by_submit)


@pytest.mark.timeout(60)
def test_run_sleeps_through_the_claim_commit_when_the_writer_queues_the_task(tmp_path, monkeypatch):
    """The batch's commit signal (what submit() waits on) must not be waited on by a run() caller whose task
    the writer queued: it wakes once, at the outcome. submit() still waits on it (the check can fail)."""
    waits = _record_batch_waits(monkeypatch)
    tasks = workload(tmp_path, 4, object_bytes=0)
    with WorkerPool(engine_config(tmp_path)) as pool:
        results = []
        runner = threading.Thread(target=lambda: results.extend(pool.run(t, timeout=30) for t in tasks[:2]),
                                  name="runner")
        runner.start()
        runner.join(30)
        submitter = threading.Thread(target=lambda: results.extend(pool.submit(t).result(30) for t in tasks[2:]),
                                     name="submitter")
        submitter.start()
        submitter.join(30)
    assert [r.status for r in results] == ["success"] * 4
    assert "runner" not in waits
    assert waits.count("submitter") == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["block", "fail_fast"])
@pytest.mark.parametrize("room_hint", ["real", "wrong"])
def test_run_on_a_full_queue_blocks_or_is_rejected_like_submit(tmp_path, monkeypatch, mode, room_hint):
    """One worker held busy and a queue of one: the run() caller blocks for room (block) or is rejected at
    once (fail_fast). `real`: it sees the queue full and waits for the commit as submit() does; `wrong`: it
    believes there is room and sleeps, so the writer, finding the queue full, must wake it at the commit."""
    if room_hint == "wrong":
        monkeypatch.setattr(TaskQueue, "has_room", lambda self, n=1: True)
    gate = _Gate()
    tasks = workload(tmp_path, 3, object_bytes=0)
    cfg = engine_config(tmp_path, max_workers=1, queue_size=1, mode=mode, enqueue_timeout_s=20.0)
    with WorkerPool(cfg, processor=gate) as pool:
        held = pool.submit(tasks[0])
        wait_until(lambda: gate.started == 1)
        queued = pool.submit(tasks[1])                      # fills the queue
        wait_until(lambda: pool.queue._q.qsize() == 1)
        out = []
        runner = threading.Thread(target=lambda: out.append(pool.run(tasks[2], timeout=30)))
        runner.start()
        if mode == "fail_fast":
            runner.join(20)
            assert out and out[0].status == "rejected" and out[0].error_class == "QueueFull"
            gate.release.set()
        else:
            wait_until(lambda: pool.metrics_snapshot()["counters"].get("enqueued", 0) == 2)
            assert runner.is_alive() and not out              # blocked for room: the queue is still full
            gate.release.set()
            runner.join(20)
            assert out and out[0].status == "success"
        assert held.result(20).status == queued.result(20).status == "success"


def _full_queue(pool, gate, tasks):
    """One worker held busy by tasks[0], tasks[1] in the queue of one: the queue is full."""
    held = pool.submit(tasks[0])
    wait_until(lambda: gate.started == 1)
    queued = pool.submit(tasks[1])
    wait_until(lambda: pool.queue._q.qsize() == 1)
    return held, queued


@pytest.mark.timeout(60)
def test_a_run_caller_waiting_for_room_sleeps_until_its_outcome(tmp_path, monkeypatch):
    """At a full queue (block mode) the writer parks the run() caller's task in the queue's line and a worker
    moves it in: the caller does not wake at the commit to wait for room itself (before: it waited on the
    batch's commit signal, then on the queue), it wakes at the outcome."""
    waits = _record_batch_waits(monkeypatch)
    gate = _Gate()
    tasks = workload(tmp_path, 3, object_bytes=0)
    cfg = engine_config(tmp_path, max_workers=1, queue_size=1, mode="block", enqueue_timeout_s=20.0)
    with WorkerPool(cfg, processor=gate) as pool:
        held, queued = _full_queue(pool, gate, tasks)
        out = []
        runner = threading.Thread(target=lambda: out.append(pool.run(tasks[2], timeout=30)), name="runner")
        runner.start()
        try:
            wait_until(lambda: len(pool.queue._line) == 1)     # parked: the queue holds one, its bound
            assert runner.is_alive() and pool.queue._q.qsize() == 1
        finally:
            gate.release.set()
        runner.join(20)
        assert out and out[0].status == "success"
        assert held.result(20).status == queued.result(20).status == "success"
        assert pool.metrics_snapshot()["queue_depth"]["max"] == 1
    assert "runner" not in waits


@pytest.mark.timeout(60)
def test_a_run_caller_that_gets_no_room_is_rejected_after_the_enqueue_timeout(tmp_path):
    gate = _Gate()
    tasks = workload(tmp_path, 3, object_bytes=0)
    cfg = engine_config(tmp_path, max_workers=1, queue_size=1, mode="block", enqueue_timeout_s=0.5)
    with WorkerPool(cfg, processor=gate) as pool:
        try:
            _full_queue(pool, gate, tasks)
            started = time.perf_counter()
            refused = pool.run(tasks[2], timeout=30)
            waited = time.perf_counter() - started
            assert refused.status == "rejected" and refused.error_class == "QueueFull", refused
            assert 0.45 <= waited < 10, waited
            assert len(pool.queue._line) == 0                   # taken back out of the line: it never runs
        finally:
            gate.release.set()
        assert pool.drain(20) and gate.started == 2
        assert pool.run(tasks[2], timeout=20).status == "success"      # a rejected key can be submitted again


@pytest.mark.timeout(60)
def test_a_task_parked_for_room_when_the_engine_stops_is_left_queued_and_runs_at_the_next_start(tmp_path):
    gate = _Gate()
    tasks = workload(tmp_path, 3, object_bytes=0)
    cfg = engine_config(tmp_path, max_workers=1, queue_size=1, mode="block", enqueue_timeout_s=20.0)
    pool = WorkerPool(cfg, processor=gate).start()
    try:
        _full_queue(pool, gate, tasks)
        out = []
        runner = threading.Thread(target=lambda: out.append(pool.run(tasks[2])))
        runner.start()
        wait_until(lambda: len(pool.queue._line) == 1)
        began = time.perf_counter()
        stopper = threading.Thread(target=lambda: pool.shutdown(graceful=False))
        stopper.start()
        gate.release.set()
        stopper.join(30)
        runner.join(30)
        assert not runner.is_alive() and out and out[0].status == "queued", out
        assert time.perf_counter() - began < 10             # not held until the enqueue timeout (20 s)
    finally:
        gate.release.set()
        if pool._started:
            pool.shutdown(graceful=False)
    with WorkerPool(cfg, processor=_Gate()) as again:       # the parked task was claimed: it resumes
        again.processor.release.set()
        assert again.recovered >= 1 and again.drain(20)
        assert again.run(tasks[2], timeout=20).duplicate     # finished by the recovery: its stored result


@pytest.mark.timeout(60)
def test_run_times_out_like_result_and_the_task_goes_on(tmp_path):
    gate = _Gate()
    tasks = workload(tmp_path, 1, object_bytes=0)
    with WorkerPool(engine_config(tmp_path), processor=gate) as pool:
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            pool.run(tasks[0], timeout=0.3)
        assert time.perf_counter() - started < 10
        gate.release.set()
        assert pool.drain(20)
        assert pool.run(tasks[0], timeout=20).status == "success"      # finished after all: its stored result


@pytest.mark.timeout(60)
def test_run_returns_when_the_engine_stops_without_finishing(tmp_path):
    """A task left queued by a stop: run() answers `queued` (it resumes at the next start), promptly."""
    gate = _Gate()
    tasks = workload(tmp_path, 2, object_bytes=0)
    cfg = engine_config(tmp_path, max_workers=1, queue_size=4)
    pool = WorkerPool(cfg, processor=gate).start()
    try:
        pool.submit(tasks[0])
        wait_until(lambda: gate.started == 1)
        out = []
        runner = threading.Thread(target=lambda: out.append(pool.run(tasks[1])))
        runner.start()
        wait_until(lambda: pool.queue._q.qsize() == 1)
        stopper = threading.Thread(target=lambda: pool.shutdown(graceful=False))
        began = time.perf_counter()
        stopper.start()
        gate.release.set()
        stopper.join(30)
        runner.join(30)
        assert not runner.is_alive() and out and out[0].status == "queued"    # left for the next start
        # the caller asleep in its submission is woken by the stop: it does not hold shutdown up (30 s before)
        assert time.perf_counter() - began < 10
    finally:
        gate.release.set()
        if pool._started:
            pool.shutdown(graceful=False)


class _RunOnly:
    """An adapter whose submit() must not be used: the closed loop has to take `run`."""

    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()

    def submit(self, task):
        raise AssertionError("the closed loop used submit() although the adapter has run()")

    def run(self, task, timeout=None):
        with self.lock:
            self.calls += 1
        return {"status": "success"}


@pytest.mark.timeout(30)
def test_the_closed_loop_submits_and_waits_through_run_where_an_adapter_has_it():
    adapter = _RunOnly()
    records, _t0, _info = run_closed(adapter, [{"i": i} for i in range(50)], clients=5)
    assert adapter.calls == 50 and all(r.status == "success" and r.end is not None for r in records)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["block", "fail_fast"])
def test_a_claim_that_fails_to_commit_answers_run_as_it_answers_submit(tmp_path, monkeypatch, mode):
    """The state store raising out of the claim: run() answers `failed` with the store's error, as submit()'s
    handle does, the task is counted off (drain() returns) and the engine takes the next task."""
    tasks = workload(tmp_path, 3, object_bytes=0)
    real_claim = store_module.StateStore.claim
    failing = [True]

    def claim(self, claims, *args, **kwargs):
        if failing[0]:
            raise store_module.StoreError("injected: the claim's commit failed", "state store stalled")
        return real_claim(self, claims, *args, **kwargs)
    monkeypatch.setattr(store_module.StateStore, "claim", claim)
    with WorkerPool(engine_config(tmp_path, mode=mode)) as pool:
        by_run = pool.run(tasks[0], timeout=30)
        by_submit = pool.submit(tasks[1]).result(30)
        assert pool.drain(10)
        failing[0] = False
        after = pool.run(tasks[2], timeout=30)
    for result in (by_run, by_submit):
        assert (result.status, result.error_class) == ("failed", "StoreError"), result
        assert "injected" in result.error
    assert after.status == "success"


class _StopsTheMachine(_Gate):
    """Fault injection: the first task waits for `release`, then finds the disk full (a resource error, which
    stops the engine); a task whose image key starts with `flaky` fails transiently, the rest succeed."""

    def process(self, image_key, variant, key, attempt):
        if image_key.startswith("flaky"):
            raise TransientError("a transient failure")
        with self.lock:
            self.started += 1
            first = self.started == 1
        if first:
            self.release.wait(30)
            raise OSError(errno.ENOSPC, "No space left on device")
        return f"variants/{image_key}@{variant}", "", 0


def _run_in_thread(pool, task):
    out = []
    runner = threading.Thread(target=lambda: out.append(pool.run(task, timeout=40)))
    runner.start()
    return runner, out


@pytest.mark.timeout(60)
def test_a_fatal_stop_answers_a_queued_run_caller_at_once_not_at_shutdown(tmp_path):
    """Before, a task queued when a resource error stopped the engine stayed unanswered until shutdown(): a
    run() caller inside the `with` block waited for its own timeout (here 40 s), or for ever without one."""
    processor = _StopsTheMachine()
    tasks = workload(tmp_path, 2, object_bytes=0)
    cfg = engine_config(tmp_path, max_workers=1, queue_size=4)
    with WorkerPool(cfg, processor=processor) as pool:
        pool.submit(tasks[0])
        wait_until(lambda: processor.started == 1)
        runner, out = _run_in_thread(pool, tasks[1])
        wait_until(lambda: pool.queue._q.qsize() == 1)
        processor.release.set()
        runner.join(15)
        assert not runner.is_alive(), "run() was not answered after the engine stopped itself"
        assert pool.fatal_error is not None and out[0].status == "queued"
    with WorkerPool(cfg, processor=_Gate()) as again:       # left in the database: both finish at the next start
        again.processor.release.set()
        assert again.recovered == 2 and again.drain(20)
        assert [again.run(t, timeout=20).status for t in tasks] == ["success", "success"]


@pytest.mark.timeout(60)
def test_a_fatal_stop_answers_a_run_caller_whose_task_waits_out_a_backoff(tmp_path):
    """Before, a task waiting out its backoff when the engine stopped itself was answered only once that backoff
    ended (here up to an hour) and then only at shutdown()."""
    processor = _StopsTheMachine()
    tasks = workload(tmp_path, 1, object_bytes=0)
    flaky = {"image_key": "flaky.jpg", "size": "10x10"}
    cfg = engine_config(tmp_path, max_workers=2, backoff_base_s=3600.0, backoff_cap_s=3600.0)
    assert backoff_delay(1, 3600.0, 3600.0, random.Random(f"backoff|{cfg.seed}")) > 60    # the seed's first draw
    with WorkerPool(cfg, processor=processor) as pool:
        pool.submit(tasks[0])
        wait_until(lambda: processor.started == 1)
        runner, out = _run_in_thread(pool, flaky)
        wait_until(lambda: pool.scheduler.pending() == 1)
        processor.release.set()
        runner.join(15)
        assert not runner.is_alive(), "run() was not answered after the engine stopped itself"
        assert pool.fatal_error is not None and out[0].status == "queued" and out[0].attempts == 1


@pytest.mark.timeout(60)
def test_run_callers_that_gave_up_do_not_hold_up_the_callers_woken_in_turn_with_them(tmp_path):
    """The writer wakes the run() callers of a commit in turn, each woken one waking the next (sync.wake_in_turn).
    A caller that gave up waiting (its timeout) is not there to wake the next: the turn must go on past it, or
    the callers behind it wait out their own timeouts."""
    gate = _Gate()
    tasks = workload(tmp_path, 10, object_bytes=0)
    cfg = engine_config(tmp_path, max_workers=10, queue_size=16)
    with WorkerPool(cfg, processor=gate) as pool:
        results = {}

        def run(i, timeout):
            try:
                results[i] = pool.run(tasks[i], timeout=timeout).status
            except TimeoutError:
                results[i] = "timeout"
        quitters = [threading.Thread(target=run, args=(i, 0.3)) for i in range(8)]
        patient = [threading.Thread(target=run, args=(i, 30.0)) for i in range(8, 10)]
        for thread in quitters + patient:
            thread.start()
        wait_until(lambda: gate.started == 10)
        for thread in quitters:
            thread.join(10)
        assert [results.get(i) for i in range(8)] == ["timeout"] * 8
        gate.release.set()                      # all ten finish at once: their finals share commits
        started = time.perf_counter()
        for thread in patient:
            thread.join(20)
        assert [results.get(i) for i in (8, 9)] == ["success"] * 2
        assert time.perf_counter() - started < 5     # not at enqueue_timeout_s (10 s), which ends a stalled wait


class _Busy:
    """A processor whose task keeps its thread on the CPU (thread CPU time) for `cpu_s`, or sleeps that long."""

    def __init__(self, seconds, spin):
        self.seconds, self.spin = seconds, spin

    def process(self, image_key, variant, key, attempt):
        if self.spin:
            end = time.thread_time() + self.seconds
            while time.thread_time() < end:
                pass
        else:
            time.sleep(self.seconds)
        return f"variants/{image_key}@{variant}", "", 0

    def completed_output(self, image_key, variant):
        return None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("spin", [True, False], ids=["workers-on-the-cpu", "workers-waiting"])
def test_run_callers_are_woken_at_once_while_the_workers_keep_a_cpu_busy_else_in_turn(tmp_path, monkeypatch, spin):
    """WorkerPool._callers_in_turn, asked by the writer at each commit that wakes run() callers: in turn while the
    workers mostly wait (they come back to the GIL behind no herd), at once while their attempts keep half a
    CPU or more busy (thumbnails of tiny sources: in turn cost ~9% there)."""
    decisions = []
    decide = WorkerPool._callers_in_turn

    def recorded(self):
        decisions.append(decide(self))
        return decisions[-1]
    monkeypatch.setattr(WorkerPool, "_callers_in_turn", recorded)
    tasks = workload(tmp_path, 120, object_bytes=0)
    statuses = []
    with WorkerPool(engine_config(tmp_path, max_workers=4), processor=_Busy(0.004, spin)) as pool:
        def client(mine):
            for task in mine:
                statuses.append(pool.run(task, timeout=30).status)
        clients = [threading.Thread(target=client, args=(tasks[i::8],)) for i in range(8)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(30)
    assert statuses == ["success"] * len(tasks)
    want = not spin         # most commits (the first TURN_POLICY_S have no figures yet: in turn)
    assert decisions and decisions.count(want) > len(decisions) / 2, decisions
