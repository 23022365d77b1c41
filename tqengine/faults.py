"""The seeded fault model: how long one attempt of one task sleeps and whether it fails.

Every draw is a function of (seed, idempotency key, attempt) only, never of thread scheduling, so the
engine and the baseline inject exactly the same faults for the same seed (see docs/CONTRACTS.md).
"""
from __future__ import annotations

import random

TRANSIENT = "transient"
PERMANENT = "permanent"


def plan(seed: object, key: str, attempt: int, latency_ms: float, jitter_ms: float, transient_rate: float,
         permanent_rate: float) -> tuple[float, str | None]:
    """Return (latency_s, fault) for one attempt; fault is None, "transient" or "permanent"."""
    latency = float(latency_ms)
    if jitter_ms:
        latency += random.Random(f"{seed}|{key}|{attempt}|lat").uniform(-jitter_ms, jitter_ms)
    latency_s = max(0.0, latency) / 1000.0
    if permanent_rate and random.Random(f"{seed}|{key}|perm").random() < permanent_rate:
        return latency_s, PERMANENT
    if transient_rate and random.Random(f"{seed}|{key}|{attempt}").random() < transient_rate:
        return latency_s, TRANSIENT
    return latency_s, None
