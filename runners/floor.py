"""The durable floor: the least a durable queue does per task, as a reference for the engine's overhead.

    adapter = DurableFloorAdapter(db_path, workers=8, queue_size=200, fn=work)
    adapter.start(); adapter.run(task, timeout); adapter.stop()

What it keeps of the engine's contract: each task's claim is a row committed in SQLite (the engine's own
schema, INSERT and UPDATE statements and pragmas, tqengine.state.schema) before the task reaches the
bounded queue.Queue(queue_size) its `workers` threads take from, and the task's final state is committed
before run() returns. One writer thread commits whatever is pending, claims and finals together, and wakes
the callers of the finals. Nothing else: no validation, idempotency map, retries, metrics, logs or result
records, and it assumes the keys (image_key#size) of the tasks in flight are distinct (the benchmark's task
sets are); a batch that breaks that fails its tasks rather than mix up their rows.

`benchmark.py --overhead --floor` runs it beside the engine and the bare pool (lab/overhead.py): the
engine's distance from this floor is what its features cost per task, its distance from the bare pool
what durability costs at least, in this interpreter on this machine.
"""
import _thread
import os
import queue as queue_module
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

from runners.adapters import Adapter, noop
from tqengine.state import schema
from tqengine.tasks import fingerprint

STOP_WAIT_S = 10.0          # how long stop() waits for each thread
_SUCCESS = {"status": "success"}


class _Item:
    """One task in the floor: its claim's fields, its row once committed, and what its caller waits on."""
    __slots__ = ("task", "key", "payload", "row", "done", "outcome")

    def __init__(self, task):
        self.task = task
        self.key = f"{task['image_key']}#{task['size']}"
        self.payload = fingerprint(task)
        self.row = None
        self.done = _thread.allocate_lock()     # held until the final state is committed
        self.done.acquire()
        self.outcome = _SUCCESS


class DurableFloorAdapter(Adapter):
    """Claims and finals committed by one writer thread, a bounded queue.Queue, `workers` worker loops."""
    impl = "floor"

    def __init__(self, db_path, workers=8, queue_size=200, fn=noop):
        self.db_path, self.workers, self.queue_size, self.fn = db_path, workers, queue_size, fn
        self._conn = None
        self._cv = threading.Condition(threading.Lock())
        self._claims, self._finals = [], []
        self._stopping = False
        self._writer_thread = None
        self._executor = None
        self._loops = []
        self._queue = None

    def start(self):
        if os.path.exists(self.db_path):
            raise FileExistsError(f"the floor makes a new database, and {self.db_path} exists")
        os.makedirs(os.path.dirname(os.path.abspath(self.db_path)), exist_ok=True)
        conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        conn.executescript(schema.SCHEMA)
        schema.enable_wal(conn)
        conn.execute("PRAGMA wal_autocheckpoint=1000")   # no checkpointer thread here: SQLite's own bound
        self._conn = conn
        self._queue = queue_module.Queue(self.queue_size)
        self._writer_thread = threading.Thread(target=self._writer, name="floor-writer", daemon=True)
        self._writer_thread.start()
        # the workers as in the bare pool (runners.adapters.BareQueueAdapter): loops in a ThreadPoolExecutor
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="floor-worker")
        self._loops = [self._executor.submit(self._worker) for _ in range(self.workers)]

    def run(self, task, timeout=None):
        """Claim, run and finish `task`; the outcome dict once its final state is committed."""
        item = _Item(task)
        self._pending(item, final=False)
        if not item.done.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            raise TimeoutError(f"the floor did not finish the task within {timeout} s")
        return item.outcome

    def _pending(self, item, final):
        # the list is picked with the lock held: one picked before could be one the writer has already taken
        # and committed, and an item appended to it was never queued (or never finished): its caller hung
        with self._cv:
            (self._finals if final else self._claims).append(item)
            if len(self._claims) + len(self._finals) == 1:      # the writer waits only when both are empty
                self._cv.notify()

    def _writer(self):
        while True:
            with self._cv:
                while not self._claims and not self._finals and not self._stopping:
                    self._cv.wait(1.0)      # notified by _pending and stop(); the deadline only bounds the wait
                claims, finals = self._claims, self._finals
                self._claims, self._finals = [], []
            if not claims and not finals:
                return                                          # stopping, nothing left
            try:
                self._commit(claims, finals)
            except Exception as exc:    # answer everyone in the batch: no caller waits for a lost commit
                try:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass                    # the next BEGIN IMMEDIATE fails the next batch alike, answered too
                failed = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]}
                for item in claims + finals:
                    item.outcome = failed
                    item.done.release()
                continue
            put = self._queue.put
            for item in claims:
                put(item)
            for item in finals:
                item.done.release()

    def _commit(self, claims, finals):
        execute = self._conn.execute
        now = time.time()
        execute("BEGIN IMMEDIATE")
        for first in range(0, len(claims), schema.GROUP_ROWS):
            group = claims[first:first + schema.GROUP_ROWS]
            cursor = execute(schema.insert_rows(len(group)),
                             [value for item in group for value in
                              (item.task.get("task_id"), item.key, item.payload, "queued", now, now, None, None)])
            if cursor.rowcount != len(group):
                raise RuntimeError("a key already in the table (the floor needs distinct keys)")
            for offset, item in enumerate(group):      # one INSERT's rows take consecutive ids (schema.py)
                item.row = cursor.lastrowid - len(group) + 1 + offset
        done = [item for item in finals if item.outcome is _SUCCESS]   # a failed task's row stays queued
        for first in range(0, len(done), schema.GROUP_ROWS):
            group = done[first:first + schema.GROUP_ROWS]
            execute(schema.success_rows(len(group)),
                    [value for item in group for value in (item.row, 1, f"variants/{item.key}", "", 0, now)])
        execute("COMMIT")

    def _worker(self):
        get, fn = self._queue.get, self.fn
        while True:
            item = get()
            if item is None:
                return
            try:
                fn(item.task)
            except Exception as exc:
                item.outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]}
            self._pending(item, final=True)

    def stop(self):
        """Stop the workers, then the writer (after it commits what is pending), each within STOP_WAIT_S."""
        if self._conn is None:
            return
        for _ in range(self.workers):
            try:
                self._queue.put(None, timeout=STOP_WAIT_S)
            except queue_module.Full:   # tasks still queued (their callers gave up): the workers are daemons
                break
        wait_futures(self._loops, timeout=STOP_WAIT_S)
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._writer_thread.join(STOP_WAIT_S)
        if not self._writer_thread.is_alive():
            self._conn.close()
        self._conn = None
