"""analysis.stats against known values: t quantiles vs published tables, intervals of known samples,
Fieller's ratio interval, bootstrap determinism, verdicts."""
import math
import random
import statistics

import pytest

from analysis import stats

# t_{0.975, df} from standard tables (two-sided 95%).
T_TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
               10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


@pytest.mark.parametrize("df, expected", sorted(T_TABLE_975.items()))
def test_t_quantile_matches_table(df, expected):
    assert stats.t_ppf(0.975, df) == pytest.approx(expected, abs=6e-4)


def test_t_quantile_other_levels_and_limits():
    assert stats.t_ppf(0.95, 10) == pytest.approx(1.812, abs=6e-4)     # one-sided 95%
    assert stats.t_ppf(0.995, 5) == pytest.approx(4.032, abs=6e-4)     # two-sided 99%
    assert stats.t_ppf(0.9995, 1) == pytest.approx(636.619, rel=1e-4)
    assert stats.t_ppf(0.975, 1e6) == pytest.approx(1.960, abs=5e-4)
    assert stats.t_ppf(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    assert stats.t_ppf(0.025, 7) == pytest.approx(-stats.t_ppf(0.975, 7), abs=1e-12)
    assert stats.t_ppf(0.5, 3) == 0.0
    # df = 1 is the Cauchy distribution: quantile tan(pi (p - 1/2)); df = 2 has a closed form too
    for p in (0.6, 0.9, 0.99):
        assert stats.t_ppf(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        a = 4 * p * (1 - p)
        assert stats.t_ppf(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / a), rel=1e-9)
    # fractional df (Welch) lies between its integer neighbours
    assert stats.t_ppf(0.975, 3) > stats.t_ppf(0.975, 3.5) > stats.t_ppf(0.975, 4)
    with pytest.raises(ValueError):
        stats.t_ppf(1.0, 3)


def test_t_cdf_inverts_and_betainc_identities():
    for df in (1, 2.5, 7, 40):
        for p in (0.05, 0.3, 0.8, 0.975):
            assert stats.t_cdf(stats.t_ppf(p, df), df) == pytest.approx(p, abs=1e-10)
    assert stats.betainc(1, 1, 0.3) == pytest.approx(0.3)
    assert stats.betainc(3.7, 3.7, 0.5) == pytest.approx(0.5)
    x = 0.4   # I_x(2, 3) = 6x^2 - 8x^3 + 3x^4
    assert stats.betainc(2, 3, x) == pytest.approx(6 * x ** 2 - 8 * x ** 3 + 3 * x ** 4, rel=1e-12)
    assert stats.betainc(2, 3, 0) == 0.0 and stats.betainc(2, 3, 1) == 1.0


def test_interval_of_a_known_sample():
    d = stats.describe([1, 2, 3, 4, 5])
    assert d["n"] == 5 and d["mean"] == 3 and d["median"] == 3
    assert d["stdev"] == pytest.approx(math.sqrt(2.5))
    assert d["cv"] == pytest.approx(math.sqrt(2.5) / 3)
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)      # t_{0.975,4} s / sqrt(n)
    assert d["ci_low"] == pytest.approx(3 - half, abs=1e-5)
    assert d["ci_high"] == pytest.approx(3 + half, abs=1e-5)
    # Student's 1908 sleep data (differences, n = 10): mean 1.58, 95% CI [0.700, 2.460]
    sleep = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4]
    low, high = stats.t_interval(sleep)
    assert (low, high) == (pytest.approx(0.700, abs=5e-4), pytest.approx(2.460, abs=5e-4))
    one = stats.describe([7.0])
    assert one["n"] == 1 and one["mean"] == 7.0 and one["stdev"] is None and one["ci_low"] is None
    assert stats.t_interval([7.0]) is None
    assert stats.describe([])["mean"] is None


def test_fieller_ratio_known_case():
    a, b = [10.0, 11.0, 12.0], [5.0, 5.5, 6.0]
    r = stats.fieller_ratio(a, b)
    assert r["ratio"] == 2.0 and r["bounded"]
    assert r["df"] == pytest.approx(4.0)         # equal variance contributions: Welch df = 2 + 2
    t = stats.t_ppf(0.975, 4)
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 3
    for bound in (r["low"], r["high"]):          # the bounds solve (ma - R mb)^2 = t^2 (va + R^2 vb)
        assert (11 - bound * 5.5) ** 2 == pytest.approx(t * t * (va + bound * bound * vb), rel=1e-9)
    assert r["low"] == pytest.approx(1.6245, abs=1e-4) and r["high"] == pytest.approx(2.4623, abs=1e-4)
    # no spread: the interval is the point
    same = stats.fieller_ratio([4.0, 4.0], [2.0, 2.0])
    assert same["low"] == same["high"] == 2.0
    # baseline mean indistinguishable from 0: no finite interval
    wild = stats.fieller_ratio([10.0, 11.0, 12.0], [-5.0, 1.0, 6.0])
    assert not wild["bounded"] and wild["low"] == -math.inf
    assert stats.fieller_ratio([1.0], [1.0, 2.0]) is None


def test_fieller_coverage_with_three_repeats():
    """The reason Fieller is the report's method: with n = 3 it covers the true ratio ~95% of the time."""
    rng = random.Random(7)
    hits = 0
    sims = 600
    for _ in range(sims):
        a = [rng.gauss(300.0, 30.0) for _ in range(3)]
        b = [rng.gauss(100.0, 10.0) for _ in range(3)]
        r = stats.fieller_ratio(a, b)
        hits += r["low"] <= 3.0 <= r["high"]
    assert 0.92 <= hits / sims <= 0.985


def test_bootstrap_is_deterministic_with_its_seed():
    a, b = [10.0, 11.0, 12.5, 9.5], [5.0, 5.5, 6.0, 5.2]
    first = stats.bootstrap_ratio(a, b, seed=42)
    assert first == stats.bootstrap_ratio(a, b, seed=42)
    assert first["resamples"] == stats.BOOTSTRAP_RESAMPLES == 10_000
    assert first["low"] < first["ratio"] < first["high"]
    assert stats.bootstrap_ratio(a, b, seed=43) != first
    assert stats.bootstrap_ratio(a, b) == stats.bootstrap_ratio(a, b)      # default seed is fixed too
    assert stats.bootstrap_ratio([1.0], b) is None


@pytest.mark.parametrize("low, high, target, direction, expected", [
    (2.1, 3.0, 2, ">=", "met"), (2.0, 3.0, 2, ">=", "met"), (1.5, 2.5, 2, ">=", "inconclusive"),
    (1.0, 1.9, 2, ">=", "not met"), (0.2, 0.5, 0.6, "<=", "met"), (0.5, 0.7, 0.6, "<=", "inconclusive"),
    (0.7, 0.9, 0.6, "<=", "not met"), (None, None, 2, ">=", "inconclusive"),
    (-math.inf, math.inf, 2, ">=", "inconclusive"),
])
def test_verdicts(low, high, target, direction, expected):
    assert stats.verdict(low, high, target, direction) == expected


def test_point_verdict_for_single_trials():
    assert stats.point_verdict(2.5, 2, ">=") == "meets"
    assert stats.point_verdict(0.7, 0.6, "<=") == "misses"
    assert stats.point_verdict(None, 0.6, "<=") == "no data"
