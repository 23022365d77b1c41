"""analysis.verdicts: the one rule. A cell whose engine rejects most of its submissions is not comparable
(issue 14's 4 workers / queue 4 / fail_fast cell read 'met'); no interval means inconclusive, never a
zero-width 'met'; a zero mean is data; one sample against a fixed target for --benchmark; which trials
count (analysis.trials)."""
import math

import pytest

from analysis import stats, trials, verdicts
from analysis.verdicts import INCONCLUSIVE, MET, NO_DATA, NOT_COMPARABLE, NOT_MET


def _trials(tps, p95, errors):
    return [{"throughput_tps": t, "latency_p95_ms": p, "error_rate": e} for t, p, e in zip(tps, p95, errors,
                                                                                         strict=True)]


def test_an_engine_that_rejects_most_submissions_is_not_comparable():
    """Issue 14: error rate 0.69-0.86 against the baseline's 0.02, yet both ratios cleared their targets."""
    engine = _trials([480.0, 500.0, 470.0], [20.0, 22.0, 21.0], [0.69, 0.86, 0.78])
    baseline = _trials([195.0, 194.0, 196.0], [250.0, 252.0, 249.0], [0.019, 0.021, 0.020])
    out = verdicts.compare(engine, baseline)
    assert out["completion"]["comparable"] is False
    assert "engine did not complete 77.7% of submissions" in out["completion"]["note"]
    for key in ("throughput", "p95"):
        r = out[key]
        assert r["interval_verdict"] == MET          # what the intervals alone say...
        assert r["verdict"] == NOT_COMPARABLE        # ...is not the verdict
        assert "not comparable" in verdicts.full_note(r)


def test_completion_gate_uses_the_difference_interval():
    base = [0.05, 0.052, 0.048]
    better = verdicts.completion([0.0, 0.001, 0.0], base)
    assert better["comparable"] is True and better["high"] < 0 and better["basis"].startswith("95% Welch")
    # slightly worse on average, but the interval reaches above 0: not shown to be no worse
    close = verdicts.completion([0.051, 0.049, 0.056], base)
    assert close["low"] < 0 < close["high"] and close["comparable"] is False
    assert "95% interval [" in close["note"] and "reaches above 0" in close["note"]
    # better on average but too noisy to show it (a fail_fast engine rejecting 0%, 0%, 6% of its tasks)
    noisy = verdicts.completion([0.0, 0.0, 0.063], [0.056, 0.055, 0.057])
    assert noisy["engine_share"] < noisy["baseline_share"] and noisy["comparable"] is False
    # ...and the note says that, not "engine did not complete 2.1% of submissions" (the quick sweep's engine
    # failed 0% of its tasks in every trial and read "did not complete 0%")
    assert "did not complete" not in noisy["note"] and "no higher than the baseline's (5.6%)" in noisy["note"]
    assert "not shown no worse" in noisy["note"] and "n = 3 and 3; more repeats narrow it" in noisy["note"]
    assert "engine did not complete 5.2% of submissions (baseline 5%;" in close["note"]
    # both sides never fail: no spread, the point difference (0) decides
    clean = verdicts.completion([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert clean["comparable"] is True and clean["low"] is None and "point difference" in clean["basis"]
    # one dead task in 3 trials against a baseline that lost none is worse
    assert verdicts.completion([0.0, 0.0, 0.001], [0.0, 0.0, 0.0])["comparable"] is False
    # a single trial on a side: the point difference decides
    assert verdicts.completion([0.01], [0.02, 0.03])["comparable"] is True
    assert verdicts.completion([0.04], [0.02, 0.03])["comparable"] is False
    assert verdicts.completion([], [0.0])["comparable"] is None


def test_ratio_verdicts_from_fieller_intervals():
    r = verdicts.ratio([410.0, 400.0, 405.0], [100.0, 101.0, 99.0], 2.0, ">=")
    assert r["verdict"] == MET and 2.0 < r["low"] < r["ratio"] < r["high"]
    assert verdicts.ratio([150.0, 160.0, 155.0], [100.0, 101.0, 99.0], 2.0, ">=")["verdict"] == NOT_MET
    assert verdicts.ratio([190.0, 210.0, 200.0], [100.0, 101.0, 99.0], 2.0, ">=")["verdict"] == INCONCLUSIVE
    assert verdicts.ratio([50.0, 52.0, 51.0], [100.0, 101.0, 99.0], 0.6, "<=")["verdict"] == MET
    assert verdicts.ratio([70.0, 72.0, 71.0], [100.0, 101.0, 99.0], 0.6, "<=")["verdict"] == NOT_MET


def test_the_noisy_benchmark_row_of_issue_14_is_not_met():
    """Runs of 669, 1495, 1480 tasks/s were MET from the point ratio: the interval says inconclusive."""
    r = verdicts.ratio([669.0, 1495.0, 1480.0], [194.0, 195.0, 193.5], 2.0, ">=")
    assert r["ratio"] == pytest.approx(1214.67 / 194.17, rel=1e-3)
    assert r["low"] < 2.0 and r["verdict"] == INCONCLUSIVE
    assert r["noisy"] == ["engine"]


def test_no_interval_is_inconclusive_never_a_zero_width_met():
    r = verdicts.ratio([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], 1.5, ">=")
    assert r["verdict"] == INCONCLUSIVE and r["low"] is None and r["ratio"] == 2.0
    assert stats.NO_SPREAD in r["note"] and "meets" in r["note"]
    single = verdicts.ratio([300.0], [100.0, 101.0], 2.0, ">=")
    assert single["verdict"] == INCONCLUSIVE and single["note"].startswith("n=1: no interval")


def test_a_zero_mean_is_data():
    r = verdicts.ratio([10.0, 11.0], [0.0, 0.0], 2.0, ">=")
    assert r["verdict"] == INCONCLUSIVE and r["verdict"] != NO_DATA
    assert "baseline's mean is 0" in r["note"]
    zero_engine = verdicts.ratio([0.0, 0.0, 0.0], [100.0, 101.0, 99.0], 2.0, ">=")
    assert zero_engine["ratio"] == 0.0 and zero_engine["verdict"] == NOT_MET
    assert verdicts.ratio([], [1.0], 2.0, ">=")["verdict"] == NO_DATA


def test_within_halfwidth():
    tight = verdicts.ratio([400.0, 401.0, 399.0], [100.0, 100.2, 99.8], 2.0, ">=")
    loose = verdicts.ratio([300.0, 420.0, 380.0], [100.0, 101.0, 99.0], 2.0, ">=")
    assert verdicts.within_halfwidth(tight, 0.05) and not verdicts.within_halfwidth(tight, 0.001)
    assert not verdicts.within_halfwidth(loose, 0.05)
    assert not verdicts.within_halfwidth(verdicts.ratio([2.0, 2.0], [1.0, 1.0], 2.0, ">="), 0.5)


def test_one_sample_against_a_target_for_the_engine_benchmark():
    eff = verdicts.one_sided([0.960, 0.963, 0.964], 0.95, ">=")
    assert eff["verdict"] == MET and eff["low"] > 0.95 and eff["n"] == 3 and eff["level"] == 0.95
    line = verdicts.format_against_target("efficiency", eff)
    assert "95% CI [" in line and "n=3" in line and line.endswith("target ≥ 0.95: met")
    assert verdicts.against_target([0.94, 0.96, 0.95], 0.95, ">=")["verdict"] == INCONCLUSIVE
    assert verdicts.against_target([0.80, 0.81, 0.82], 0.95, ">=")["verdict"] == NOT_MET
    p95 = verdicts.against_target([5.69, 5.65, 5.71], 6.0, "<=")
    assert p95["verdict"] == MET
    assert "ms" in verdicts.format_against_target("P95", p95, unit="ms")
    one = verdicts.against_target([0.97], 0.95, ">=")
    assert one["verdict"] == INCONCLUSIVE and "the mean alone meets" in one["note"]
    flat = verdicts.against_target([0.97, 0.97, 0.97], 0.95, ">=")
    assert flat["verdict"] == INCONCLUSIVE and flat["low"] is None
    assert "no interval" in verdicts.format_against_target("efficiency", flat)
    noisy = verdicts.against_target([0.5, 1.0, 0.8], 0.6, ">=")
    assert noisy["noisy"] and "noisy" in verdicts.format_against_target("efficiency", noisy)
    assert verdicts.against_target([], 0.95, ">=")["verdict"] == NO_DATA
    with pytest.raises(ValueError):
        verdicts.against_target([0.96, math.nan], 0.95, ">=")


def test_which_trials_count():
    good = {c: 1.0 for c in trials.REQUIRED_METRICS}
    assert trials.problem(good) is None
    assert trials.problem(dict(good, efficiency=None)) is None             # unknown is allowed
    assert "throughput_tps = nan" in trials.problem(dict(good, throughput_tps=math.nan))
    assert "latency_p95_ms missing" in trials.problem(dict(good, latency_p95_ms=None))
    assert "peak_rss_mb = inf" in trials.problem(dict(good, peak_rss_mb=math.inf))
    assert "not a number" in trials.problem(dict(good, error_rate="x"))
    row = {c: "1.5" for c in trials.REQUIRED_METRICS}
    assert trials.row_problem(row) is None
    assert trials.row_problem(dict(row, latency_p99_ms="inf")) is not None
    assert trials.result_problem(None) == "no metrics"
