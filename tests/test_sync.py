"""Signal (tqengine/sync.py), the one-shot event every task and every commit batch waits on: one set() must
wake every waiter (its lock is passed on from waiter to waiter), also past a waiter that gave up; a second
set() must not release anything twice; a wait on an unset Signal times out."""
import os
import threading
import time

import pytest

from tqengine.sync import Signal


def _waiters(signal, n, timeout):
    results = [None] * n

    def wait(i):
        results[i] = signal.wait(timeout)

    threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    return threads, results


def _parked(threads, deadline_s=10.0):
    """Poll (bounded) until every thread sleeps in the kernel (/proc state S): blocked in its wait, so set()
    must really wake it. Without /proc, a short settle instead (the assertions hold either way)."""
    if not os.path.isdir("/proc/self/task"):
        time.sleep(0.2)
        return
    deadline = time.perf_counter() + deadline_s
    while time.perf_counter() < deadline:
        states = []
        for thread in threads:
            try:
                with open(f"/proc/self/task/{thread.native_id}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                states.append("?")
        if all(state == "S" for state in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"the waiters never all blocked: {states}")


def _joined(threads, within_s=10.0):
    """Every waiter returned within `within_s` of set(), far inside its own 60 s timeout: it was woken."""
    deadline = time.perf_counter() + within_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    assert not any(thread.is_alive() for thread in threads), "set() did not wake every waiter"


@pytest.mark.timeout(60)
def test_one_set_wakes_every_waiter():
    signal = Signal()
    threads, results = _waiters(signal, 50, 60.0)
    _parked(threads)
    signal.set()
    _joined(threads)
    assert results == [True] * 50
    assert signal.is_set() and signal.wait(0) is True


@pytest.mark.timeout(60)
def test_a_waiter_that_timed_out_does_not_break_the_chain_for_the_others():
    signal = Signal()
    quitter, quit_result = _waiters(signal, 1, 0.05)
    quitter[0].join(10.0)
    assert quit_result == [False]
    threads, results = _waiters(signal, 10, 60.0)
    _parked(threads)
    signal.set()
    _joined(threads)
    assert results == [True] * 10


@pytest.mark.timeout(30)
def test_set_twice_is_harmless_and_an_unset_wait_times_out():
    signal = Signal()
    started = time.perf_counter()
    assert signal.wait(0.05) is False
    assert time.perf_counter() - started >= 0.04
    signal.set()
    signal.set()                        # a result and a stop racing: must not raise or release twice
    assert [signal.wait(1.0) for _ in range(3)] == [True] * 3


class _SecondSetterAfterAcquire:
    """Stands in for a Signal's lock: right after a waiter acquires it, a second setter that had read the signal
    as unset (before the first set) releases it, the interleaving of a result and a stop racing."""

    def __init__(self, signal):
        self.real, self.signal = signal._lock, signal

    def acquire(self, *args):
        got = self.real.acquire(*args)
        if got:
            self.signal._set = False        # what the second setter read
            self.signal.set()
        return got

    def release(self):
        self.real.release()

    def locked(self):
        return self.real.locked()


@pytest.mark.timeout(30)
def test_a_second_setter_that_finds_the_lock_free_is_harmless():
    """set() takes no lock: two setters may both get past `if self._set`; the second release then finds the
    lock free. It must not raise, and the signal stays set with its lock free."""
    signal = Signal()
    signal.set()
    signal._set = False                     # the second setter read it before the first set it
    signal.set()
    assert signal.is_set() and signal.wait(0) is True and not signal._lock.locked()


@pytest.mark.timeout(30)
def test_a_second_setter_releasing_a_waiters_pass_on_leaves_the_signal_set_and_free():
    """The second setter's release lands while a woken waiter holds the lock to pass it on: the waiter's own
    release then finds it free. The waiter must return True without raising, and later waiters too."""
    signal = Signal()
    real = signal._lock
    signal.set()
    signal._set = False                     # this waiter read it as unset: it takes the lock's path
    signal._lock = _SecondSetterAfterAcquire(signal)
    assert signal.wait(5.0) is True
    signal._lock = real
    assert signal.is_set() and not real.locked() and signal.wait(0) is True
