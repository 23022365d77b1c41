"""Signal (tqengine/sync.py), the one-shot event every task and every commit batch waits on: one set() must
wake every waiter (its lock is passed on from waiter to waiter), also past a waiter that gave up; a second
set() must not release anything twice; a wait on an unset Signal times out."""
import os
import threading
import time

import pytest

from tqengine.sync import Signal, wake_in_turn


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


# -- waking in turn (wake_in_turn): the writer sets the run() callers' Signals of a commit this way ----------

@pytest.mark.timeout(30)
def test_signals_woken_in_turn_are_each_set_by_the_waiter_of_the_one_before():
    """Only the first is set at once; each next one when the waiter before it wakes (here: arrives late and
    finds its signal set). Set all at once, ~30 woken callers queued for the GIL ahead of the workers."""
    signals = [Signal() for _ in range(3)]
    wake_in_turn(signals)
    assert [s.is_set() for s in signals] == [True, False, False]
    assert signals[0].wait(0) is True
    assert [s.is_set() for s in signals] == [True, True, False]
    assert signals[1].wait(0) is True and signals[2].is_set()
    wake_in_turn([])                        # nothing to wake: nothing happens


@pytest.mark.timeout(30)
def test_a_signal_whose_waiter_is_gone_or_that_was_set_before_passes_the_turn_on_at_once():
    """A waiter that gave up (a run() caller's timeout) is not there to wake the next one, nor is the waiter of
    a signal set earlier (a caller woken at its commit): the next one is set at once, or the turn stops there
    and every caller behind it waits out its own timeout."""
    gone, after_gone = Signal(), Signal()
    assert gone.wait(0.01) is False
    wake_in_turn([gone, after_gone])
    assert after_gone.is_set()
    early, after_early = Signal(), Signal()
    early.set()
    assert early.wait(0) is True
    wake_in_turn([early, after_early])
    assert after_early.is_set()
    late, after_late = Signal(), Signal()   # the waiter gives up just as its turn comes: one of the two wakes next
    wake_in_turn([late, after_late])
    late._left()
    assert after_late.is_set()


@pytest.mark.timeout(60)
def test_waiters_woken_in_turn_all_wake():
    signals = [Signal() for _ in range(30)]
    results = [None] * len(signals)

    def wait(i):
        results[i] = signals[i].wait(60.0)

    threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(len(signals))]
    for thread in threads:
        thread.start()
    _parked(threads)
    wake_in_turn(signals)
    _joined(threads)
    assert results == [True] * len(signals)
