"""Retry: classification of errors and full-jitter exponential backoff."""
import random

import pytest

from tqengine import errors
from tqengine.retry import BackoffScheduler, backoff_delay, classify


@pytest.mark.parametrize("exc, kind", [
    (errors.InjectedTransient("x"), "transient"), (TimeoutError(), "transient"),
    (ConnectionResetError(), "transient"), (errors.TransientError("x"), "transient"),
    (errors.ValidationError("x"), "permanent"), (errors.ObjectNotFound("x"), "permanent"),
    (errors.InjectedPermanent("x"), "permanent"), (FileNotFoundError(), "permanent"),
    (ValueError(), "permanent"), (KeyError(), "permanent"),
    (RuntimeError("unknown"), "transient"), (OSError(5, "EIO"), "transient"),
])
def test_classification(exc, kind):
    assert classify(exc) == kind


def test_backoff_stays_within_the_full_jitter_bounds():
    rng = random.Random(1)
    for attempt in range(1, 12):
        bound = min(2.0, 0.05 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, 0.05, 2.0, rng) for _ in range(500)]
        assert all(0.0 <= d <= bound for d in delays)
        # full jitter: spread over the whole interval, not clustered at the top
        assert min(delays) < 0.1 * bound and max(delays) > 0.9 * bound
        assert 0.4 * bound < sum(delays) / len(delays) < 0.6 * bound


def test_scheduler_releases_in_due_order_without_a_worker():
    import threading
    released, done = [], threading.Event()

    def release(item):
        released.append(item)
        if len(released) == 3:
            done.set()

    scheduler = BackoffScheduler(release)
    try:
        scheduler.schedule(0.06, "c")
        scheduler.schedule(0.0, "a")
        scheduler.schedule(0.03, "b")
        assert done.wait(5)
        assert released == ["a", "b", "c"]
    finally:
        scheduler.stop()
