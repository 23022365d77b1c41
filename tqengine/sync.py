"""Signal: the one-shot event the engine uses for every task and every commit batch (cheaper than
threading.Event, which costs a Python-level Condition per set)."""
from __future__ import annotations

import _thread
import math

TIMEOUT_MAX = _thread.TIMEOUT_MAX       # the longest wait a lock takes (~292 years here)


def wait_seconds(timeout: float | None) -> float | None:
    """A caller's timeout as a lock wait takes it: None stays None (no deadline); a number is clamped to
    0 .. TIMEOUT_MAX, so float("inf") waits as long as a lock can (it raised OverflowError, as did 1e10);
    ValueError for NaN or anything that is not a number."""
    if timeout is None:
        return None
    kind = type(timeout)
    if (kind is float or kind is int) and 0 <= timeout <= TIMEOUT_MAX:     # the usual ones (NaN fails the test)
        return float(timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout):
        raise ValueError(f"timeout must be a number of seconds or None, not {timeout!r}"[:200])
    return min(max(0.0, float(timeout)), TIMEOUT_MAX)


class Signal:
    """A one-shot event on a bare lock: `set()` once, `wait(timeout)` by any number of threads.

    threading.Event does the same through a Python-level Condition (a waiter list, a lock per waiter):
    setting one costs ~4 us of interpreter time, paid once per task by the engine's writer thread. Here
    the lock is held from the start and `set()` releases it; a waiter that gets it releases it again at
    once, passing it on to the next waiter. So set() is one C lock operation.

    No lock guards set(): two setters racing (a result and a stop) may both release. Every release, a
    setter's or a waiter's pass-on, either frees the lock or finds it free (RuntimeError, ignored), and a
    waiter's release always follows its own acquire, so once set the lock ends up free whatever the
    interleaving, and every waiter returns True. (A module-wide lock around set() cost ~15 bytecodes a set,
    two or three sets a task in the engine's writer.)

    Signals can also be woken in turn (`wake_in_turn`): each one's `next` is set by its own waiter as soon as
    it wakes, so the woken threads queue for the GIL one after the other instead of as a herd."""
    __slots__ = ("_lock", "_set", "next", "_gone")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._set = False
        self.next: Signal | None = None     # set by whoever wakes this one's waiter (wake_in_turn)
        self._gone = False      # a wait on it timed out or failed: its waiter may not be there to wake `next`

    def set(self) -> None:
        if self._set:           # set before: its waiter woke then (or is gone), so this call wakes `next`
            if self.next is not None:
                self._pass_on()
            return
        self._set = True
        try:
            self._lock.release()
        except RuntimeError:            # another setter released it first (and no waiter holds it now)
            pass
        if self._gone and self.next is not None:
            self._pass_on()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False if `timeout` seconds passed first."""
        if self._set:
            if self.next is not None:
                self._pass_on()
            return True
        lock = self._lock
        try:
            got = lock.acquire(True, -1 if timeout is None else min(max(0.0, timeout), TIMEOUT_MAX))
        except BaseException:           # interrupted: nobody may wait behind a waiter that is gone
            self._left()
            raise
        if got:
            try:
                lock.release()          # pass it on
            except RuntimeError:        # a second setter released it already: it is free, as it should be
                pass
            if self.next is not None:
                self._pass_on()
            return True
        self._left()
        return self._set

    def _left(self) -> None:
        """A wait ended without the lock. Marked first, then looked at: a set() that came before the mark is seen
        here, and one that comes after sees the mark, so one of the two wakes `next` (both may: harmless)."""
        self._gone = True
        if self._set and self.next is not None:
            self._pass_on()

    def _pass_on(self) -> None:
        following = self.next
        if following is not None:
            self.next = None
            following.set()


def wake_in_turn(signals: list[Signal]) -> None:
    """Set the signals one after the other, each by the waiter of the one before it as soon as that one wakes
    (or here, or by whoever sets it, when its waiter is gone or it was set already). The writer wakes the
    run() callers of a commit this way: set all at once, the 15-30 callers of a commit woke together and
    queued for the GIL in front of the workers coming back from their tasks (1 ms tasks: 1.5-12% of the 1 ms
    sleeps took over 2 ms; woken in turn 0.2-0.4%). Where the workers hold the GIL throughout (thumbnails of
    tiny sources) the herd is better, its callers' work back to back needing fewer GIL hand-offs, and the
    engine wakes them at once (pool.WORKERS_CPU_BOUND)."""
    if not signals:
        return
    for signal, following in zip(signals, signals[1:], strict=False):
        signal.next = following
    signals[0].set()
