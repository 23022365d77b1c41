"""The records a task leaves: its Outcome (how its idempotency key ended) and the TaskResult a handle gives.

`Outcome` is what the engine decides and the state store commits (success, dead, rejected), or what it
tells a caller when there is no final state to commit (failed: the state store itself failed; queued: the
engine stopped first and the task resumes at the next start). `TaskResult` is one submission's view of its
key's outcome: the same fields plus who submitted it, whether it was a duplicate and its latency.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

FINAL = ("success", "dead", "rejected")
_new = object.__new__


class Outcome(NamedTuple):
    """Immutable; a NamedTuple, not a frozen dataclass: made once per attempt on the hot path, it costs
    0.4 us instead of 1.9 (a frozen dataclass sets each field through object.__setattr__)."""
    status: str                      # success | dead | rejected | failed | queued
    attempts: int = 0
    output_key: str | None = None
    output_digest: str | None = None
    output_bytes: int | None = None
    error_class: str | None = None
    error: str | None = None

    @classmethod
    def success(cls, attempts: int, output_key: str, output_digest: str, output_bytes: int) -> Outcome:
        return cls("success", attempts, output_key, output_digest, output_bytes)

    @classmethod
    def dead(cls, attempts: int, error_class: str, error: str) -> Outcome:
        return cls("dead", attempts, error_class=error_class, error=error)

    @classmethod
    def rejected(cls, attempts: int, error_class: str, error: str) -> Outcome:
        return cls("rejected", attempts, error_class=error_class, error=error)

    @classmethod
    def store_failed(cls, attempts: int, exc: BaseException) -> Outcome:
        """The state store could not record the task: its state is unknown until the next start."""
        return cls("failed", attempts, error_class=type(exc).__name__, error=f"state store failed: {exc}")

    @classmethod
    def left_queued(cls, attempts: int) -> Outcome:
        return cls("queued", attempts,
                   error="engine stopped before the task finished; it resumes at next start")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Outcome:
        """The outcome a committed task row records."""
        return cls(row["status"], row.get("attempts") or 0, row.get("output_key"), row.get("output_digest"),
                   row.get("output_bytes"), row.get("error_class"), row.get("last_error"))


@dataclass(frozen=True)
class TaskResult:
    """The final record of one submission, as its handle reports it."""
    task_id: str | None
    idempotency_key: str | None
    status: str                 # success | dead | rejected (failed: the state store itself failed)
    attempts: int
    output_key: str | None
    output_digest: str | None
    latency_ms: float           # this submission's submit -> result
    error: str | None
    error_class: str | None
    duplicate: bool             # True when another submission of the key did the work
    row_id: int | None

    @classmethod
    def build(cls, task_id: str | None, idempotency_key: str | None, status: str, attempts: int,
              output_key: str | None, output_digest: str | None, latency_ms: float, error: str | None,
              error_class: str | None, duplicate: bool, row_id: int | None) -> TaskResult:
        """TaskResult(...) made once per result on the hot path: the same instance in a fifth of the time. A frozen
        dataclass's __init__ sets each field through object.__setattr__ (11 calls, ~5 us); this writes the
        instance dict, in field order, at once (~1 us). tests/test_engine_contract.py compares the two."""
        result = _new(cls)
        result.__dict__.update(task_id=task_id, idempotency_key=idempotency_key, status=status, attempts=attempts,
                               output_key=output_key, output_digest=output_digest, latency_ms=latency_ms,
                               error=error, error_class=error_class, duplicate=duplicate, row_id=row_id)
        return result

    def as_dict(self) -> dict[str, Any]:
        # its fields are plain values: no need for dataclasses.asdict's deep copy (20 us a call); the instance
        # dict holds exactly the fields, in their order (frozen: nothing else is set), copied in 0.9 us
        # instead of 2.2 for a getattr per field
        return self.__dict__.copy()

