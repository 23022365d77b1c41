"""The seeded fault model against the formulas of docs/CONTRACTS.md, written out here independently, on
cases the engine-vs-baseline comparison does not reach (jitter larger than the latency)."""
import random

import pytest

from tests.engine_helpers import engine_config, workload
from tqengine import WorkerPool, faults


def contract_plan(s, k, a, latency_ms, jitter_ms, transient_rate, permanent_rate):
    """docs/CONTRACTS.md, "Fault model", as written there."""
    latency = latency_ms + (random.Random(f"{s}|{k}|{a}|lat").uniform(-jitter_ms, jitter_ms) if jitter_ms else 0)
    latency_s = max(0, latency) / 1000
    if permanent_rate and random.Random(f"{s}|{k}|perm").random() < permanent_rate:
        return latency_s, "permanent"
    if transient_rate and random.Random(f"{s}|{k}|{a}").random() < transient_rate:
        return latency_s, "transient"
    return latency_s, None


@pytest.mark.parametrize("latency_ms, jitter_ms", [(5.0, 0.0), (5.0, 2.0), (1.0, 4.0), (0.0, 3.0), (20.0, 20.0),
                                                  (3.0, 0.5), (0.2, 0.1)])
def test_plan_is_the_contract_formula(latency_ms, jitter_ms):
    for i in range(400):
        args = (i % 5, f"img/{i}.raw#100x100", 1 + i % 4, latency_ms, jitter_ms, 0.3, 0.1)
        got = faults.plan(*args)
        assert got[1] == contract_plan(*args)[1], args
        assert got[0] == pytest.approx(contract_plan(*args)[0], abs=1e-12), args


def test_latency_never_negative_and_spans_the_jitter():
    drawn = [faults.plan(1, f"k{i}", 1, 1.0, 4.0, 0.0, 0.0)[0] for i in range(2000)]
    assert min(drawn) == 0.0                              # clamped, not negative (time.sleep refuses those)
    assert 0.0045 < max(drawn) <= 0.005                   # up to latency + jitter
    assert sum(1 for d in drawn if d == 0.0) > 700        # P(latency + U(-4, 4) <= 0) = 5/8


def test_a_permanent_fault_is_a_property_of_the_task_and_transients_are_fresh_each_attempt():
    keys = [f"img/{i}.raw#1x1" for i in range(300)]
    for key in keys:
        kinds = {faults.plan(9, key, a, 0, 0, 0.0, 0.2)[1] for a in range(1, 6)}
        assert kinds in ({None}, {"permanent"})           # the same on every attempt
    per_attempt = [[faults.plan(9, key, a, 0, 0, 0.5, 0.0)[1] for a in range(1, 4)] for key in keys]
    assert any(len(set(draws)) > 1 for draws in per_attempt)
    share = sum(d == "transient" for draws in per_attempt for d in draws) / (3 * len(keys))
    assert 0.43 < share < 0.57
    assert faults.plan(9, keys[0], 1, 0, 0, 0.0, 0.0) == (0.0, None)
    assert all(faults.plan(9, k, 1, 0, 0, 1.0, 0.0)[1] == "transient" for k in keys)


@pytest.mark.timeout(30)
def test_engine_with_jitter_larger_than_latency_retries_transient_faults(tmp_path):
    """With latency 1 +- 4 ms, attempts that draw a fault must fail as the injected transient fault (and be
    retried), never with an error from sleeping a negative time."""
    tasks = workload(tmp_path, 40, seed=91, object_bytes=200)
    cfg = engine_config(tmp_path, latency_ms=1.0, latency_jitter_ms=4.0, transient_rate=0.3, seed=6,
                        max_attempts=6)
    with WorkerPool(cfg) as pool:
        results = [h.result(20) for h in pool.submit_many(tasks)]
    assert all(r.error_class in (None, "InjectedTransient") for r in results), \
        {r.error_class for r in results}
    assert any(r.attempts > 1 for r in results)
