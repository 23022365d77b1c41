"""Admission: what happens to a submission before a worker sees it.

validate -> idempotency key and payload fingerprint -> join the key's flight (a duplicate in flight) or
claim the key in SQLite (committed before submit returns) -> the stored result of a key that ended earlier,
or TaskQueue.offer (block with deadline | fail_fast), a refusal recorded as `rejected`.
The writer thread itself offers the new flights of a commit while the queue has room (`committed`, run after
the commit and before the submitter wakes): a worker can then start at once instead of after the submitter
has woken up and taken the GIL, which cost a wake-up per task (measured: 7.1 -> 5.5 voluntary context
switches per task, +15% tasks/s on the durable path). What does not fit, the submitter offers as before,
except a run() caller's task in block mode: the writer parks it in the queue's line (queue.py), a worker
moves it in as room comes, and the caller wakes at the outcome (or takes it back at enqueue_timeout_s).
Every submission resolves to exactly one final record: success, dead, rejected, or a duplicate of one.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .errors import ValidationError
from .flight import Flight, FlightTable, TaskHandle
from .metrics import Metrics
from .queue import TaskQueue
from .records import Outcome
from .state.store import Claim, StateStore
from .sync import Signal
from .tasks import (
    MAX_KEY_LEN,
    MAX_TASK_ID,
    MIN_TASK_ID,
    exact,
    fingerprint,
    flat_fingerprint,
    parse_variant,
    plain,
    shown,
    type_name,
    validate,
    validate_plain,
)

MAX_INVALID_PAYLOAD = 64 * 1024    # bytes of a bad task's JSON kept in its row


class Identity(NamedTuple):
    """Who a submission is: its idempotency key (an invalid task's is `/invalid/...`), payload fingerprint,
    task_id, image key and variant (None when invalid) and the validation error, if any."""
    key: str
    payload: str
    task_id: str | None
    image_key: str | None
    variant: str | None
    error: ValidationError | None


def identify(task: Any) -> Identity:
    """The Identity of a submission; never raises, whatever `task` is: a value whose own methods raise as it is
    read (a dict or str subclass, a key's __eq__, a value's __repr__) is a task that is not plain JSON data.
    Before, such a task raised out of submit_many() and left the tasks before it in the call claimed by no
    one: drain() never returned, and a resubmission of their keys waited forever."""
    try:
        ident = _identify_plain(task)
    except Exception:       # a key's own __eq__: the general path reads the task without calling it
        ident = None
    try:
        return ident or _identify(task)
    except Exception as exc:
        return _unreadable(task, exc)


# The usual task, {"image_key": <plain key>, "size": "WxH"}, perhaps with a task_id and fields of its own, is
# identified by a short path that gives exactly what the general one does (tests/test_task_validation.py
# compares the two): a plain key has components of letters, digits, `_`, `-` and `.` that do not start with a
# dot, so it has no `.`/`..`/empty component, no `.tq-tmp`, no `@WxH` folder and nothing JSON must escape; it
# is not under variants/. Fields of the task's own (the lab's `source_size` and `object_bytes`) are taken
# when their names are str and their values exact scalars; the payload is then the general path's own
# encoding of the same dict.
_PLAIN_KEY = re.compile(r"(?!variants(?:/|\Z))[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*\Z")
_PLAIN_ID = re.compile(r"[ -~]{1,200}\Z")      # printable ASCII: nothing to escape, nothing to refuse
_NO_ID = object()
_SCALARS = frozenset((str, int, float, bool, type(None)))
_STR = frozenset((str,))
# sizes that parse_variant() accepted (a task's size is one of a few; the parse was 1.7 us of ~10 a task)
_GOOD_SIZES: set[str] = set()
MAX_GOOD_SIZES = 256


def _identify_plain(task: Any) -> Identity | None:
    """The Identity of a task of the usual plain shape, or None (then the general path decides)."""
    if type(task) is not dict:
        return None
    image_key, size = task.get("image_key"), task.get("size")
    if type(image_key) is not str or type(size) is not str or len(image_key) > MAX_KEY_LEN:
        return None
    task_id = task.get("task_id", _NO_ID)
    own_fields = len(task) - 2
    if task_id is _NO_ID:
        task_id = None
    elif type(task_id) is int:
        if not MIN_TASK_ID <= task_id <= MAX_TASK_ID:
            return None
        task_id = str(task_id)
        own_fields -= 1
    elif type(task_id) is not str or not _PLAIN_ID.match(task_id):
        return None
    else:
        own_fields -= 1
    if not _PLAIN_KEY.match(image_key):
        return None
    if size not in _GOOD_SIZES:
        try:
            parse_variant(size)
        except ValidationError:
            return None
        if len(_GOOD_SIZES) < MAX_GOOD_SIZES:
            _GOOD_SIZES.add(size)
    if own_fields:
        payload = _own_fields_payload(task)
        if payload is None:
            return None
    else:
        payload = f'{{"image_key":"{image_key}","size":"{size}"}}'
    return Identity(f"{image_key}#{size}", payload, task_id, image_key, size, None)


def _own_fields_payload(task: dict[Any, Any]) -> str | None:
    """fingerprint(task) of a task whose other fields are all str-named exact scalars (object_bytes, which
    validation checks, a non-negative int), else None; the fuzz comparison of the two paths checks it."""
    if not _STR.issuperset(map(type, task)) or not _SCALARS.issuperset(map(type, task.values())):
        return None
    nbytes = task.get("object_bytes", 0)
    if type(nbytes) is not int or nbytes < 0:
        return None
    try:
        return flat_fingerprint(task)
    except ValueError:          # an integer past the digit limit: the general path makes it a dead letter
        return None


def _identify(task: Any) -> Identity:
    """The general path of identify(), for any value at all (what raises is identify()'s to catch). A task
    is read as plain(task): exact built-in keys and values, through dict's own methods."""
    image_key: str | None
    variant: str | None
    error: ValidationError | None
    check = validate
    if isinstance(task, dict):
        task, check = plain(task), validate_plain
    try:
        image_key, variant = check(task)
        error = None
    except ValidationError as exc:
        image_key = variant = None
        error = exc
    task_id = task.get("task_id") if isinstance(task, dict) else None
    if not isinstance(task_id, (str, int)) or isinstance(task_id, bool) or \
            (isinstance(task_id, int) and not MIN_TASK_ID <= task_id <= MAX_TASK_ID):
        task_id = None
    elif isinstance(task_id, str):
        task_id = storable(task_id)
    try:
        payload = fingerprint(task)
    except (TypeError, ValueError, RecursionError) as exc:   # keys JSON cannot hold, a cycle, deep nesting
        payload = json.dumps(shown(task))
        if error is None:
            error = ValidationError(f"a task must be plain JSON data ({type(exc).__name__}: {str(exc)[:200]})")
            image_key = variant = None
    if error is None:
        key = f"{image_key}#{variant}"
    else:
        if len(payload) > MAX_INVALID_PAYLOAD:      # a bad task is kept as its digest, not copied whole
            digest = hashlib.sha256(payload.encode("utf-8", "backslashreplace")).hexdigest()
            payload = json.dumps({"invalid_task_sha256": digest, "bytes": len(payload)})
        key = invalid_key(task) or \
            f"/invalid/sha256:{hashlib.sha256(payload.encode('utf-8', 'backslashreplace')).hexdigest()}"
    return Identity(key, payload, str(task_id) if task_id is not None else None, image_key, variant, error)


def _unreadable(task: Any, exc: Exception) -> Identity:
    """The Identity of a submission that raised while identify() read it: dead, keyed by its payload."""
    error = ValidationError(f"a task must be plain JSON data (reading it raised {type_name(exc)})")
    payload = json.dumps(shown(task))        # short: reprlib's limits
    key = f"/invalid/sha256:{hashlib.sha256(payload.encode('utf-8', 'backslashreplace')).hexdigest()}"
    task_id = None
    try:                                    # its task_id, if that much can be read
        value = exact(dict.get(task, "task_id")) if isinstance(task, dict) else None
        if type(value) is int and MIN_TASK_ID <= value <= MAX_TASK_ID:
            task_id = str(value)
        elif type(value) is str:
            task_id = storable(value)
    except Exception:
        pass
    return Identity(key, payload, task_id, None, None, error)


def storable(text: str) -> str:
    """`text` with anything UTF-8 cannot carry (lone surrogates) backslash-escaped, so SQLite takes it."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def invalid_key(task: Any) -> str | None:
    """Key for a task that failed validation: `/invalid/` + the usual key when that is printable and
    short, else None (identify() then keys it `/invalid/sha256:<digest of its payload>`). Repeating the
    same bad task is then a duplicate (a rerun adds no dead letters). A valid image_key never starts with
    `/` (tasks.check_key refuses absolute keys), so no valid task can ever need a key of this form."""
    if not isinstance(task, dict):
        return None
    image_key, variant = task.get("image_key"), task.get("size", task.get("variant"))
    if not isinstance(image_key, str) or not isinstance(variant, str):
        return None
    key = f"/invalid/{image_key}#{variant}"
    if len(key) > 1100 or not key.isprintable():
        return None
    return key


def _goes_to_queue(claim: Claim) -> bool:
    """An ordinary claim that owns its key's unfinished row now (made, reclaimed or adopted): its flight is queued."""
    return claim.outcome in ("new", "reclaimed", "adopted") and claim.intent == "queued"


class _Placing:
    """What the writer does for a run() caller's claim as soon as it is committed (the store's callback: in the
    writer thread, before the caller wakes; never blocks), and what it did: `queued` the flight, parked it in the
    queue's line at `parked_at`, or neither (the caller acts). One object a task, in place of a closure
    over six variables and a list (nine objects that the garbage collector traversed while the task was in
    flight: at 1000 clients its collections cost ~10 us a task, README, Results)."""
    __slots__ = ("queue", "parking", "claim", "flight", "waker", "queued", "parked_at")

    def __init__(self, queue: TaskQueue, parking: bool, claim: Claim, flight: Flight, waker: Signal | None) -> None:
        self.queue, self.parking, self.claim, self.flight, self.waker = queue, parking, claim, flight, waker
        self.queued = False
        self.parked_at: float | None = None

    def __call__(self, err: BaseException | None) -> None:
        flight = self.flight
        if err is None:
            claim = self.claim
            row = claim.row
            assert row is not None
            flight.row_id = row["id"]
            flight.attempts = row.get("attempts", 0)
            if _goes_to_queue(claim):
                if self.parking:
                    if self.queue.park(flight):
                        self.queued = True
                    else:
                        self.parked_at = time.perf_counter()
                    return
                if self.queue.offer_nowait(flight):
                    self.queued = True
                    return
        if self.waker is not None:
            self.waker.set()    # something is left for the submitter: wake it now, not at the outcome


class Admission:
    """Turns submissions into claimed, queued flights (or final records), for one engine."""

    def __init__(self, flights: FlightTable, state: StateStore, queue: TaskQueue, metrics: Metrics, mode: str,
                 resolve: Callable[[Flight, Outcome], object],
                 finish: Callable[[Flight, Outcome], None]) -> None:
        self.flights, self.state, self.queue, self.metrics, self.mode = flights, state, queue, metrics, mode
        self._resolve = resolve        # answer a flight now (nothing to commit)
        self._finish = finish          # commit a final outcome, then answer the flight
        self.submitted = 0

    def admit(self, tasks: Iterable[Any], accepting: bool) -> list[TaskHandle]:
        """Submit several tasks with one database commit for all their claims; a handle per task, returned once
        the claims are durable. The writer queues what fits right after the commit (`committed`); the rest this
        thread offers itself, in order, blocking as the mode says (WorkerPool.run's one task: admit_one)."""
        if type(tasks) is not tuple and type(tasks) is not list:
            # read the caller's iterable before any task is registered, and not under the flight table's
            # lock: one that raised half-way left the tasks before it registered but never claimed (drain()
            # never returned, their keys' resubmissions waited forever), and a slow one held every worker
            tasks = list(tasks)
        now = time.perf_counter()
        if self.metrics.first_submit is None:
            self.metrics.submitted(now)
        handles: list[TaskHandle] = []
        claims: list[Claim] = []
        flights: list[Flight] = []
        with self.flights.lock:
            for task in tasks:
                handle, claim, flight = self._register(task, accepting, now)
                handles.append(handle)
                if claim is not None:
                    assert flight is not None
                    claims.append(claim)
                    flights.append(flight)
        if not claims:
            return handles
        queued: set[int] = set()        # the flights the writer put in the queue

        def committed(err: BaseException | None) -> None:
            # In the writer thread, right after the commit, before this submitter wakes; never blocks. It stops
            # at the first refusal, so the rest keep their order behind the submitter's own (blocking) offer.
            if err is None:
                offer = self.queue.offer_nowait
                for claim, flight in zip(claims, flights, strict=True):
                    row = claim.row
                    assert row is not None
                    flight.row_id = row["id"]
                    flight.attempts = row.get("attempts", 0)
                    if _goes_to_queue(claim):
                        if not offer(flight):
                            break
                        queued.add(id(flight))
        try:
            self.state.claim(claims, committed)
        except Exception as exc:
            for flight in flights:
                self._resolve(flight, Outcome.store_failed(0, exc))
            return handles
        if len(queued) == len(flights):     # the writer queued them all
            return handles
        replayed = set()
        for claim, flight in zip(claims, flights, strict=True):
            if id(flight) not in queued and self._settle(claim, flight):
                replayed.add(id(flight))
        if replayed:
            for handle in handles:
                if id(handle._flight) in replayed:
                    handle.duplicate = True
        return handles

    def admit_one(self, task: Any, accepting: bool, wake: Signal, wake_within: float | None = None) -> TaskHandle:
        """One task for WorkerPool.run(), whose caller sleeps on `wake` through the commit and wakes at the
        outcome: admit()'s steps (_register, the writer's callback, here a _Placing, _settle) without the lists,
        sets and loops of a submission of many (~80 of ~2,900 bytecodes a task, scripts/opcount.py).
        In block mode a flight the writer cannot queue is parked in the queue's line (queue.py): a worker moves
        it in as room comes and the caller sleeps on until the outcome (1000 clients on a queue of 200: see
        README, Results). In fail_fast mode, with no room now, the caller waits for the commit as submit() does:
        woken one by one from the writer thread, callers cost more switches than woken in a chain (measured:
        0.80x tasks/s). `wake` set with the outcome unset means the engine is stopping."""
        now = time.perf_counter()
        if self.metrics.first_submit is None:
            self.metrics.submitted(now)
        with self.flights.lock:
            handle, claim, flight = self._register(task, accepting, now)
        if claim is None:
            return handle
        assert flight is not None
        queue = self.queue
        parking = self.mode == "block"
        placing = _Placing(queue, parking, claim, flight, wake)
        if not parking and not queue.has_room(1 + self.state.claims_pending):
            placing.waker = None
        else:
            flight.waker = wake
        enqueue_s = queue.enqueue_timeout_s      # how long a parked flight may wait for room
        if parking:
            wake_within = enqueue_s if wake_within is None else min(wake_within, enqueue_s)
        try:
            self.state.claim([claim], placing, placing.waker, wake_within)
        except Exception as exc:
            if placing.parked_at is None or queue.withdraw(flight):     # else in the queue: a worker has it
                self._resolve(flight, Outcome.store_failed(0, exc))
            return handle
        if placing.queued:
            return handle
        if placing.parked_at is not None:
            self._end_parking(flight, placing.parked_at + enqueue_s, wake)
            return handle
        if self._settle(claim, flight):
            handle.duplicate = True
        return handle

    def _register(self, task: Any, accepting: bool, now: float) -> tuple[TaskHandle, Claim | None, Flight | None]:
        """One submission, with the flight table's lock held: its handle and, unless it is a duplicate of a key
        in flight (its handle then shares that flight), the Claim to commit and its new Flight."""
        table = self.flights
        self.submitted += 1
        ident = identify(task)
        key = ident.key
        flight = table.by_key.get(key) if ident.error is None else None
        if flight is not None and flight.payload == ident.payload:
            self.metrics.count("duplicates")
            return TaskHandle(flight, ident.task_id, True, now), None, None
        flight = Flight(key, ident.payload, ident.task_id, ident.image_key, ident.variant, now)
        if not accepting:       # recorded and answered, but not work that drain() waits for
            claim = Claim(key, ident.payload, ident.task_id, "rejected", "ShuttingDown",
                          "the engine is shutting down and accepts no new tasks")
            flight.refused = True
        elif ident.error is not None:
            claim = Claim(key, ident.payload, ident.task_id, "dead", type(ident.error).__name__, str(ident.error))
        elif key in table.by_key:
            claim = Claim(key, ident.payload, ident.task_id, "conflict", "IdempotencyConflict",
                          f"conflict: idempotency key {key[:200]!r} is in flight with a different payload")
        else:
            claim = Claim(key, ident.payload, ident.task_id)
            table.by_key[key] = flight
        if not flight.refused:
            table.active += 1
        return TaskHandle(flight, ident.task_id, False, now), claim, flight

    def _settle(self, claim: Claim, flight: Flight) -> bool:
        """After the commit, a claimed flight the writer did not queue: offer it (blocking as the mode says; a
        refusal is committed as `rejected`), hand back a key's stored result, or answer a refusal. True when it
        replayed a stored result (the caller's handle is then a duplicate)."""
        row = claim.row
        assert row is not None              # filled in by the commit
        flight.row_id = row["id"]
        flight.attempts = row.get("attempts", 0)
        if _goes_to_queue(claim):
            if not self.queue.offer(flight):
                reason = f"queue full ({self.mode})"
                self._finish(flight, Outcome.rejected(flight.attempts, "QueueFull", reason))
        elif claim.outcome == "final":
            # The key finished in an earlier run: hand back the stored result, run nothing.
            flight.primary_counted = False
            self.metrics.count("duplicates")
            self._resolve(flight, Outcome.from_row(row))
            return True
        else:  # dead on arrival (validation), rejected while shutting down, or a key conflict
            self._resolve(flight, Outcome(row["status"], 0, error_class=row.get("error_class", claim.error_class),
                                          error=row.get("last_error", claim.error)))
        return False

    def _end_parking(self, flight: Flight, deadline: float, wake: Signal) -> None:
        """Wait until the parked flight is answered or its wait for room (enqueue_timeout_s) ends; take it back if
        it is still parked then: refused as a blocked offer is, or, when the engine is stopping (it sets `wake`
        without answering), left queued in the database for the next start."""
        remaining = deadline - time.perf_counter()
        if remaining > 0 and not flight.event.is_set():
            wake.wait(remaining)
        if flight.event.is_set() or not self.queue.withdraw(flight):
            return          # answered, or in the queue: a worker has it
        if wake.is_set():
            return          # the engine is stopping: shutdown() answers it, its row stays queued
        self._finish(flight, Outcome.rejected(flight.attempts, "QueueFull", f"queue full ({self.mode})"))
