"""Recovery: at start, resume what an earlier process left queued, running or retrying.

For each unfinished row: a task that no longer validates is dead; a `running` row that had used its last
attempt is a success if its variant is in the store and was made from the current source (only the commit
was lost, `Processor.completed_output`), else dead (`Interrupted`), so attempts never exceed max_attempts
across restarts; everything else goes back to the queue through the backoff scheduler (a `retrying` row
after what remains of its backoff, at most backoff_cap_s), so start() never blocks on a full queue. A row
the engine cannot have written (edited by hand: attempts not a count) is dead (`DamagedRow`); a `retrying`
row whose due time is not a number is due at once. No row can stop the engine from starting.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from .admission import identify
from .flight import Flight, FlightTable
from .records import Outcome
from .retry import BackoffScheduler


class CompletedOutput(Protocol):
    def completed_output(self, image_key: str, variant: str) -> tuple[str, str, int] | None: ...


class Recovered(NamedTuple):
    resumed: int        # put back on the queue
    settled: int        # decided at once (success from a finished output, or dead)


def recover(rows: list[dict[str, Any]], flights: FlightTable, processor: CompletedOutput,
            scheduler: BackoffScheduler, max_attempts: int, backoff_cap_s: float,
            finish: Callable[[Flight, Outcome], None]) -> Recovered:
    """Resume every unfinished row (StateStore.unfinished(), read before the workers started);
    `finish(flight, outcome)` commits an outcome decided here."""
    now_wall = time.time()
    resumed = settled = 0
    for row in rows:
        flight, error = _flight_for(row)
        with flights.lock:
            if flight.key is not None:
                flights.by_key[flight.key] = flight
            flights.active += 1
        if error is None and flight.attempts != row["attempts"]:
            error = DamagedRow(f"the row's attempts is {str(row['attempts'])[:40]!r}, not a count of attempts")
        out_of_attempts = row["status"] == "running" and flight.attempts >= max_attempts
        if error is None and out_of_attempts:
            assert flight.image_key is not None and flight.variant is not None
            done = processor.completed_output(flight.image_key, flight.variant)
            if done is not None:   # the last attempt finished its output; only the commit was lost
                finish(flight, Outcome.success(flight.attempts, *done))
                settled += 1
                continue
        if error is not None or out_of_attempts:
            if error is not None:
                outcome = Outcome.dead(flight.attempts, type(error).__name__, str(error))
            else:
                outcome = Outcome.dead(flight.attempts, "Interrupted",
                                       f"attempt {flight.attempts} was interrupted by a crash and no attempts "
                                       f"are left")
            finish(flight, outcome)
            settled += 1
            continue
        delay = 0.0
        due = row["next_attempt_at"]
        if row["status"] == "retrying" and isinstance(due, (int, float)) and due:    # else due now
            delay = max(0.0, min(due - now_wall, backoff_cap_s))
        scheduler.schedule(delay, flight)
        resumed += 1
    return Recovered(resumed, settled)


def _flight_for(row: dict[str, Any]) -> tuple[Flight, Exception | None]:
    """The flight of an unfinished row, rebuilt from its stored payload, and its validation error."""
    try:
        task = json.loads(row["payload"])
    except ValueError:
        task = None
    if isinstance(task, dict) and row["task_id"] is not None:
        task["task_id"] = row["task_id"]
    ident = identify(task)
    flight = Flight(row["idempotency_key"], row["payload"], row["task_id"], ident.image_key, ident.variant,
                    time.perf_counter())
    flight.row_id = row["id"]
    attempts = row["attempts"]      # an int >= 0 as the engine writes it; a hand-edited row may hold anything
    flight.attempts = attempts if type(attempts) is int and attempts >= 0 else 0
    flight.recovered = True
    return flight, ident.error


class DamagedRow(Exception):
    """An unfinished row whose fields the engine cannot have written (edited by hand): its task is dead."""
