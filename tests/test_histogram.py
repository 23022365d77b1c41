"""tqcontract.histogram: every percentile within 1% of the exact one (tqcontract.metrics.percentile) on
skewed, tiny, huge and tied values; exact count, mean, min, max; merge = recording everything in one;
the compact JSON form round-trips and refuses malformed input."""
import json
import math
import random

import pytest

from tqcontract.histogram import MAX_RELATIVE_ERROR, LatencyHistogram, bucket_bounds, bucket_of
from tqcontract.metrics import latency_summary, percentile

QS = [i / 4 for i in range(401)]        # 0, 0.25, ..., 100


def _hist(values):
    h = LatencyHistogram()
    h.record_many(values)
    return h


def _worst_error(values, h):
    exact = sorted(values)
    worst = 0.0
    for q in QS:
        e, got = percentile(exact, q), h.percentile(q)
        if e == 0:
            assert got == 0
            continue
        worst = max(worst, abs(got - e) / e)
    return worst


@pytest.mark.parametrize("name, make", [
    ("lognormal", lambda r: [r.lognormvariate(2.0, 1.2) for _ in range(3000)]),
    ("exponential", lambda r: [r.expovariate(1 / 30.0) for _ in range(1000)]),
    ("sub-millisecond", lambda r: [r.uniform(0.001, 0.9) for _ in range(500)]),
    ("huge", lambda r: [r.uniform(1e5, 1e7) for _ in range(500)]),
    ("ties and zeros", lambda r: [0.0] * 20 + [5.0] * 200 + [r.choice((5.0, 6.25, 100.0)) for _ in range(300)]),
    ("two values", lambda r: [3.0, 7.0]),
    ("one value", lambda r: [42.5]),
])
def test_every_percentile_within_one_percent(name, make):
    values = make(random.Random(name))
    h = _hist(values)
    assert _worst_error(values, h) <= 0.01
    assert h.count == len(values)
    assert h.mean == pytest.approx(math.fsum(values) / len(values), rel=1e-12)
    assert h.max == max(values) and h.min == min(values)
    assert h.percentile(0) == min(values) and h.percentile(100) == max(values)


def test_the_bucket_scheme_bounds_the_error():
    assert MAX_RELATIVE_ERROR < 0.01
    for v in (1e-6, 0.0123, 1.0, 5.0, 5.000001, 63.99, 64.0, 1e9):
        low, high = bucket_bounds(bucket_of(v))
        assert low <= v < high
        assert (high - low) / low <= 1 / 64 + 1e-15
    # neighbouring buckets tile the line: no gap, no overlap
    for i in (bucket_of(0.5), bucket_of(3.3), bucket_of(1000.0)):
        assert bucket_bounds(i)[1] == bucket_bounds(i + 1)[0]


def test_percentiles_match_latency_summary_within_one_percent():
    rng = random.Random(3)
    values = [rng.gammavariate(2.0, 10.0) for _ in range(300)]
    exact = latency_summary(values)
    approx = _hist(values).summary()
    for key in ("p50", "p95", "p99"):
        assert approx[key] == pytest.approx(exact[key], rel=0.01)
    assert approx["mean"] == pytest.approx(exact["mean"], rel=1e-12) and approx["max"] == exact["max"]


def test_merge_is_recording_everything_in_one():
    rng = random.Random(5)
    parts = [[rng.lognormvariate(1.0, 1.0) for _ in range(n)] for n in (100, 250, 1)]
    merged = LatencyHistogram.merged(_hist(p) for p in parts)
    whole = _hist([v for p in parts for v in p])
    assert merged.counts == whole.counts and merged.count == whole.count == 351
    assert merged.min == whole.min and merged.max == whole.max
    assert merged.mean == pytest.approx(whole.mean, rel=1e-12)
    for q in (50, 95, 99):
        assert merged.percentile(q) == whole.percentile(q)
    # pooled percentiles are over all tasks, not an average of per-part percentiles
    a, b = [float(i) for i in range(1, 101)], [float(i) for i in range(101, 201)]
    pooled = LatencyHistogram.merged([_hist(a), _hist(b)])
    assert pooled.percentile(95) == pytest.approx(percentile(sorted(a + b), 95), rel=0.01)
    assert abs(pooled.percentile(95) - (percentile(a, 95) + percentile(b, 95)) / 2) > 40


def test_empty_histogram_and_bad_input():
    h = LatencyHistogram()
    assert h.count == 0 and h.mean is None and h.percentile(95) is None
    assert h.summary() == {"mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError):
            h.record(bad)
    assert h.count == 0 and not h.counts
    h.record(1.0)
    with pytest.raises(ValueError):
        h.percentile(101)
    with pytest.raises(ValueError):
        h.percentile(-0.1)


def test_json_form_is_compact_and_round_trips():
    rng = random.Random(11)
    values = [rng.lognormvariate(3.0, 0.8) for _ in range(10_000)] + [0.0, 0.0]
    h = _hist(values)
    data = json.loads(json.dumps(h.to_dict()))
    back = LatencyHistogram.from_dict(data)
    assert back == h and back.zeros == 2
    assert back.percentile(99) == h.percentile(99) and back.mean == h.mean
    assert len(json.dumps(h.to_dict())) < 8000          # 10,000 values in a few kB
    empty = LatencyHistogram.from_dict(LatencyHistogram().to_dict())
    assert empty.count == 0 and empty.percentile(50) is None


@pytest.mark.parametrize("mutate", [
    lambda d: "not a dict",
    lambda d: dict(d, v=99),
    lambda d: dict(d, sub=32),
    lambda d: dict(d, b="x"),
    lambda d: dict(d, b=[[1, 2, 3]]),
    lambda d: dict(d, b=[[1, 0]]),
    lambda d: dict(d, b=[[1.5, 2]]),
    lambda d: dict(d, b=d["b"] + [d["b"][0]]),
    lambda d: dict(d, n=d["n"] + 1),
    lambda d: dict(d, n=True),
    lambda d: dict(d, min=math.nan),
    lambda d: dict(d, max="7"),
    lambda d: dict(d, min=-1.0),
    lambda d: dict(d, zeros=-1),
])
def test_from_dict_refuses_malformed_input(mutate):
    good = _hist([1.0, 2.0, 3.0, 50.0]).to_dict()
    with pytest.raises(ValueError):
        LatencyHistogram.from_dict(mutate(good))


def test_pooled_merges_every_trial_or_none_of_them():
    """What the report and benchmark.py pool into one percentile: all the trials' histograms, never a subset."""
    a, b = LatencyHistogram(), LatencyHistogram()
    a.record_many([1.0, 2.0, 3.0])
    b.record_many([10.0, 20.0])
    pooled = LatencyHistogram.pooled([a, b.to_dict()])      # objects and their JSON form alike
    assert pooled is not None and pooled.count == 5 and pooled.max == 20.0
    assert pooled.percentile(50) == LatencyHistogram.merged([a, b]).percentile(50)
    assert LatencyHistogram.pooled([a, None]) is None                   # a trial without one
    assert LatencyHistogram.pooled([a, {"v": -1}]) is None              # a trial whose histogram is unreadable
    assert LatencyHistogram.pooled([]) is None and LatencyHistogram.pooled([LatencyHistogram()]) is None
