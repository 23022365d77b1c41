"""analysis.stats against known values: t quantiles vs published tables, intervals of known samples,
Fieller's ratio interval with Welch degrees of freedom, the Welch difference interval, verdicts; and a
seeded coverage simulation for every interval method the report, benchmark.py and --benchmark print."""
import math
import random
import statistics

import pytest

from analysis import stats
from tqcontract.metrics import percentile

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


def test_no_interval_without_spread_and_a_zero_mean_is_data():
    flat = stats.describe([2.0, 2.0, 2.0])
    assert flat["mean"] == 2.0 and flat["stdev"] == 0.0
    assert flat["ci_low"] is None and flat["ci_high"] is None and flat["note"] == stats.NO_SPREAD
    assert stats.t_interval([5.0, 5.0]) is None
    zero = stats.describe([-1.0, 0.0, 1.0])
    assert zero["mean"] == 0.0 and zero["cv"] is None          # CV undefined at 0, the mean is still 0
    assert zero["ci_low"] < 0 < zero["ci_high"]
    assert stats.describe([0.0, 0.0])["mean"] == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None, "3"])
def test_non_finite_values_are_refused_not_dropped(bad):
    for fn in (stats.describe, stats.t_interval):
        with pytest.raises(ValueError):
            fn([1.0, 2.0, bad])
    with pytest.raises(ValueError):
        stats.fieller_ratio([1.0, 2.0, bad], [1.0, 2.0])
    with pytest.raises(ValueError):
        stats.welch_diff([1.0, 2.0], [1.0, bad])


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
    # no spread on either side: no interval at all (a zero-width [2, 2] would claim certainty)
    same = stats.fieller_ratio([4.0, 4.0], [2.0, 2.0])
    assert same["ratio"] == 2.0 and same["low"] is None and same["high"] is None and not same["bounded"]
    assert same["note"] == stats.NO_SPREAD
    # spread on one side only is an interval
    one = stats.fieller_ratio([4.0, 4.4, 3.6], [2.0, 2.0, 2.0])
    assert one["bounded"] and one["low"] < 2.0 < one["high"]
    # baseline mean indistinguishable from 0: no finite interval
    wild = stats.fieller_ratio([10.0, 11.0, 12.0], [-5.0, 1.0, 6.0])
    assert not wild["bounded"] and wild["low"] == -math.inf
    zero = stats.fieller_ratio([10.0, 11.0, 12.0], [-1.0, 0.0, 1.0])
    assert zero["ratio"] is None and not zero["bounded"] and zero["high"] == math.inf
    assert stats.fieller_ratio([1.0], [1.0, 2.0]) is None


def _welch_df_by_hand(a, b, ratio=1.0):
    na, nb = len(a), len(b)
    sa = sum((x - sum(a) / na) ** 2 for x in a) / (na - 1) / na
    sb = ratio * ratio * sum((x - sum(b) / nb) ** 2 for x in b) / (nb - 1) / nb
    return (sa + sb) ** 2 / (sa * sa / (na - 1) + sb * sb / (nb - 1))


def test_welch_degrees_of_freedom_with_unequal_variances():
    """Issue 15 point 5: with unequal variance contributions Welch's df is far from the pooled na + nb - 2
    (the known case above has equal contributions, where both give 4)."""
    a = [300.0, 420.0, 250.0]                    # engine: CV ~27%
    b = [100.0, 101.0, 99.5, 100.4, 100.2]       # baseline: CV ~0.6%
    r = stats.fieller_ratio(a, b)
    expected = _welch_df_by_hand(a, b, r["ratio"])
    assert expected == pytest.approx(2.0, abs=0.05)      # the noisy side's n - 1, nearly
    assert r["df"] == pytest.approx(expected, rel=1e-12)
    assert abs(r["df"] - (len(a) + len(b) - 2)) > 3     # pooled: 6
    t = stats.t_ppf(0.975, expected)
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 5
    for bound in (r["low"], r["high"]):
        assert (ma - bound * mb) ** 2 == pytest.approx(t * t * (va + bound * bound * vb), rel=1e-9)
    d = stats.welch_diff(a, b)
    assert d["df"] == pytest.approx(_welch_df_by_hand(a, b), rel=1e-12)
    half = stats.t_ppf(0.975, d["df"]) * math.sqrt(va + vb)
    assert (d["low"], d["high"]) == (pytest.approx(ma - mb - half), pytest.approx(ma - mb + half))
    assert stats.welch_diff([1.0, 1.0], [0.0, 0.0])["low"] is None       # no spread: no interval
    assert stats.welch_diff([1.0], [0.0, 1.0]) is None


# ------------------------------------------------------------------------ coverage simulations
# Every interval method that is printed, at n = 3 (the default repeats), seeded. 1,500 simulations give a
# standard error of ~0.6 points, so the band [0.93, 0.975] is about -3.4 / +4 standard errors.

SIMS = 1500
BAND = (0.93, 0.975)


def _coverage(hit):
    rng = random.Random(20261201)
    return sum(hit(rng) for _ in range(SIMS)) / SIMS


def test_coverage_t_interval_of_the_mean():
    def hit(rng):
        low, high = stats.t_interval([rng.gauss(10.0, 2.0) for _ in range(3)])
        return low <= 10.0 <= high
    assert BAND[0] <= _coverage(hit) <= BAND[1]


@pytest.mark.parametrize("engine_cv, baseline_cv", [(0.10, 0.10), (0.30, 0.02), (0.02, 0.30)])
def test_coverage_fieller_ratio(engine_cv, baseline_cv):
    """Also the case issue 14 names (engine CV 30%, baseline 2%), where a pooled df (4 instead of ~2)
    covers about 89%."""
    def hit(rng):
        a = [rng.gauss(300.0, 300.0 * engine_cv) for _ in range(3)]
        b = [rng.gauss(100.0, 100.0 * baseline_cv) for _ in range(3)]
        r = stats.fieller_ratio(a, b)
        return not r["bounded"] or r["low"] <= 3.0 <= r["high"]     # unbounded: the whole line
    assert BAND[0] <= _coverage(hit) <= BAND[1]


def test_coverage_welch_difference_of_shares():
    """The completion gate's interval: engine - baseline non-success shares, unequal spreads."""
    def hit(rng):
        a = [rng.gauss(0.02, 0.006) for _ in range(3)]
        b = [rng.gauss(0.05, 0.001) for _ in range(3)]
        d = stats.welch_diff(a, b)
        return d["low"] <= -0.03 <= d["high"]
    assert BAND[0] <= _coverage(hit) <= BAND[1]


def test_coverage_fieller_on_per_trial_p95():
    """The P95 ratio's estimand: the mean over trials of a trial's P95. Each trial is 100 skewed
    (lognormal) latencies times a trial-level factor; both sides share the shape and the task count, so
    the true ratio of mean per-trial P95s is exactly the ratio of the factors' means (0.4)."""
    def trial_p95(rng, scale):
        values = sorted(scale * rng.lognormvariate(0.0, 0.5) for _ in range(100))
        return percentile(values, 95)

    def hit(rng):
        a = [trial_p95(rng, rng.gauss(40.0, 4.0)) for _ in range(3)]
        b = [trial_p95(rng, rng.gauss(100.0, 2.0)) for _ in range(3)]
        r = stats.fieller_ratio(a, b)
        return r["bounded"] and r["low"] <= 0.4 <= r["high"]
    rng_sims = SIMS // 2
    rng = random.Random(7)
    coverage = sum(hit(rng) for _ in range(rng_sims)) / rng_sims
    assert 0.925 <= coverage <= 0.98


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
