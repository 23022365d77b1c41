"""Signal: the one-shot event the engine uses for every task and every commit batch (cheaper than
threading.Event, which costs a Python-level Condition per set)."""
from __future__ import annotations

import _thread

_SETTING = _thread.allocate_lock()


class Signal:
    """A one-shot event on a bare lock: `set()` once, `wait(timeout)` by any number of threads.

    threading.Event does the same through a Python-level Condition (a waiter list, a lock per waiter):
    setting one costs ~4 us of interpreter time, paid once per task by the engine's writer thread. Here
    the lock is held from the start and `set()` releases it; a waiter that gets it releases it again at
    once, passing it on to the next waiter. So set() is two C lock operations."""
    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        with _SETTING:                  # set() twice (a result and a stop racing) must release once
            if self._set:
                return
            self._set = True
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False if `timeout` seconds passed first."""
        if self._set:
            return True
        if self._lock.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._lock.release()        # pass it on
            return True
        return self._set
