"""The one verdict rule: the lab report, benchmark.py and --benchmark all call this module.

Engine against the baseline (compare()):
1. Throughput is goodput: successes per second (`throughput_tps`). A task that was rejected, went to the
   dead-letter queue or was never answered adds nothing to it.
2. Completion gate. A trial's non-success share is its `error_rate`: (rejected + dead + not answered) /
   submitted. The engine's share must be no worse than the baseline's by its own interval: the upper end
   of the 95% Welch interval of mean(engine share) - mean(baseline share) must be <= COMPLETION_MARGIN
   (0). Where there is no interval (a single trial on a side, or no spread on either side) the point
   difference decides. A cell that fails the gate is "not comparable: engine did not complete N% of
   submissions" for every target, whatever its ratios say, and never counts as met: an engine that
   rejects most of its work answers the rest quickly.
3. Each target is judged on the Fieller 95% interval of the ratio of means (engine / baseline) over the
   trials: "met" when the whole interval clears the target, "not met" when the whole interval misses it,
   "inconclusive" otherwise, and also when there is no interval (n = 1 on a side, no spread on either
   side, or a baseline mean not distinguishable from 0; the note says which and what the point estimate
   alone says). "no data" only when a side has no ok trial at all.

One sample against a fixed target (against_target(), alias one_sided(); for --benchmark: efficiency >=
0.95, P95 <= a bound in ms): the Student-t 95% interval of the mean of the runs, with the same met / not
met / inconclusive reading.

A cell is flagged noisy when the CV of a side exceeds NOISE_CV (10%).
"""
import math
import statistics

from analysis import stats

LEVEL = stats.CONFIDENCE
NOISE_CV = 0.10
COMPLETION_MARGIN = 0.0
COMPLETION_METRIC = "error_rate"

MET, NOT_MET, INCONCLUSIVE, NOT_COMPARABLE, NO_DATA = "met", "not met", "inconclusive", "not comparable", \
    "no data"
VERDICTS = (MET, NOT_MET, INCONCLUSIVE, NOT_COMPARABLE, NO_DATA)

# The user's targets: engine/baseline ratios of means.
TARGETS = (
    {"key": "throughput", "metric": "throughput_tps", "label": "throughput ratio", "target": 2.0,
     "direction": ">="},
    {"key": "p95", "metric": "latency_p95_ms", "label": "P95 ratio", "target": 0.6, "direction": "<="},
)

RULE_TEXT = (
    "Throughput is goodput (successes per second). A target counts as met only when the engine's "
    "non-success share (rejected + dead + not answered, the trials' `error_rate`) is no worse than the "
    "baseline's: the upper end of the 95% Welch interval of engine share − baseline share must be ≤ 0 (the "
    "point difference decides where there is no interval). Otherwise the configuration is **not "
    "comparable** (engine did not complete N% of submissions) for both targets and never counts as met. "
    "Each target is then judged on the Fieller 95% interval of the ratio of means over the trials: **met** "
    "when the whole interval clears the target, **not met** when the whole interval misses it, "
    "**inconclusive** otherwise or without an interval.")


def _pct(v):
    return "?" if v is None else f"{100 * v:.3g}%"


def _signed_pct(v):
    return f"{100 * v:+.3g}%"


def _mean(values):
    return statistics.fmean(values) if values else None


def direction_symbol(direction):
    return {">=": "≥", "<=": "≤"}[direction]


# ---------------------------------------------------------------------------------- completion gate

def completion(engine_shares, baseline_shares, margin=COMPLETION_MARGIN):
    """Is the engine's non-success share no worse than the baseline's?

    Returns {"engine_share", "baseline_share", "diff", "low", "high", "df", "basis", "comparable", "note"}:
    comparable True / False, or None when a side has no trials."""
    e, b = stats.finite(engine_shares), stats.finite(baseline_shares)
    out = {"engine_share": _mean(e), "baseline_share": _mean(b), "diff": None, "low": None, "high": None,
           "df": None, "basis": None, "comparable": None, "note": ""}
    if not e or not b:
        out["note"] = "no ok trials on one side"
        return out
    out["diff"] = diff = out["engine_share"] - out["baseline_share"]
    interval = stats.welch_diff(e, b)
    if interval is not None and interval["high"] is not None:
        out.update(low=interval["low"], high=interval["high"], df=interval["df"],
                   basis="95% Welch interval of engine − baseline")
        out["comparable"] = interval["high"] <= margin
    else:
        why = stats.NO_SPREAD if interval is not None else "a single trial on a side"
        out["basis"] = f"point difference ({why})"
        out["comparable"] = diff <= margin
    if not out["comparable"]:
        interval_text = ""
        if out["high"] is not None:
            interval_text = (f"engine − baseline 95% interval [{_signed_pct(out['low'])}, "
                             f"{_signed_pct(out['high'])}] reaches above 0")
        if diff <= margin and interval_text:
            # the engine failed no more than the baseline on average, but too few or too noisy trials to
            # show it: say so, rather than "did not complete 0%"
            out["note"] = (f"not comparable: the engine's non-success share ({_pct(out['engine_share'])}) is no "
                           f"higher than the baseline's ({_pct(out['baseline_share'])}) but not shown no worse: "
                           f"{interval_text} (n = {len(e)} and {len(b)}; more repeats narrow it)")
        else:
            why = f"; {interval_text}" if interval_text else ""
            out["note"] = (f"not comparable: engine did not complete {_pct(out['engine_share'])} of submissions "
                           f"(baseline {_pct(out['baseline_share'])}{why})")
    return out


# ------------------------------------------------------------------------------------------ ratios

def ratio(engine_values, baseline_values, target, direction):
    """The Fieller ratio verdict of one target, without the completion gate.

    Returns {"ratio", "low", "high", "df", "bounded", "verdict", "note", "n_engine", "n_baseline",
    "noisy": [side, ...]}."""
    a, b = stats.finite(engine_values), stats.finite(baseline_values)
    out = {"ratio": None, "low": None, "high": None, "df": None, "bounded": False, "verdict": NO_DATA,
           "note": "", "n_engine": len(a), "n_baseline": len(b), "target": target, "direction": direction,
           "noisy": [side for side, vs in (("engine", a), ("baseline", b))
                     if (stats.cv(vs) or 0.0) > NOISE_CV]}
    if not a or not b:
        out["note"] = "no ok trials on one side"
        return out
    out["verdict"] = INCONCLUSIVE
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    if mb == 0:
        out["note"] = "the baseline's mean is 0: the ratio is undefined"
        return out
    out["ratio"] = ma / mb
    point = stats.point_verdict(out["ratio"], target, direction)
    fieller = stats.fieller_ratio(a, b)
    if fieller is None:
        out["note"] = f"n={min(len(a), len(b))}: no interval; the point estimate alone {point} the target"
        return out
    out["df"], out["bounded"] = fieller["df"], fieller["bounded"]
    if fieller["low"] is None:
        out["note"] = f"{fieller['note']}; the point estimate alone {point} the target"
        return out
    out["low"], out["high"] = fieller["low"], fieller["high"]
    if not fieller["bounded"]:
        out["note"] = fieller["note"]
        return out
    out["verdict"] = stats.verdict(out["low"], out["high"], target, direction)
    return out


def compare(engine_trials, baseline_trials, targets=TARGETS):
    """Engine vs baseline under the rule: trials are dicts with at least `error_rate` and each target's
    metric (finite numbers). Returns {"completion": completion(), key: ratio() per target}. When the
    completion gate fails every ratio's `verdict` is NOT_COMPARABLE and its `gate_note` says why;
    `interval_verdict` keeps what the interval alone says."""
    out = {"completion": completion([t[COMPLETION_METRIC] for t in engine_trials],
                                    [t[COMPLETION_METRIC] for t in baseline_trials])}
    for t in targets:
        r = ratio([x[t["metric"]] for x in engine_trials], [x[t["metric"]] for x in baseline_trials],
                  t["target"], t["direction"])
        r["interval_verdict"] = r["verdict"]
        r["gate_note"] = ""
        if out["completion"]["comparable"] is False:
            r["verdict"] = NOT_COMPARABLE
            r["gate_note"] = out["completion"]["note"]
        out[t["key"]] = r
    return out


def full_note(r):
    """A ratio result's notes: the completion gate's first, then its own."""
    return "; ".join(x for x in (r.get("gate_note"), r.get("note")) if x)


def within_halfwidth(r, halfwidth):
    """True when a ratio result's interval lies within ±halfwidth (relative) of its estimate."""
    if r is None or r.get("ratio") is None or r.get("low") is None or not r.get("bounded"):
        return False
    est = abs(r["ratio"])
    if not all(math.isfinite(x) for x in (r["low"], r["high"])) or est == 0:
        return False
    return r["ratio"] - r["low"] <= halfwidth * est and r["high"] - r["ratio"] <= halfwidth * est


# -------------------------------------------------------------------------------- one sample

def against_target(values, target, direction, confidence=LEVEL):
    """N runs of one figure against a fixed target (e.g. efficiency >= 0.95, P95 <= 6 ms).

    Returns {"n", "mean", "stdev", "cv", "low", "high", "level", "target", "direction", "verdict", "note",
    "noisy"}: the Student-t interval of the mean at `confidence`, met / not met / inconclusive as for
    the ratios (inconclusive without an interval: n = 1 or no spread; the note says what the mean alone
    says). ValueError for a non-finite value."""
    d = stats.describe(values, confidence)
    out = {"n": d["n"], "mean": d["mean"], "stdev": d["stdev"], "cv": d["cv"], "low": d["ci_low"],
           "high": d["ci_high"], "level": confidence, "target": target, "direction": direction,
           "verdict": NO_DATA, "note": "", "noisy": d["cv"] is not None and d["cv"] > NOISE_CV}
    if not d["n"]:
        out["note"] = "no runs"
        return out
    out["verdict"] = stats.verdict(d["ci_low"], d["ci_high"], target, direction)
    if d["ci_low"] is None:
        out["note"] = (f"{d['note']}; the mean alone {stats.point_verdict(d['mean'], target, direction)} "
                       f"the target")
    return out


one_sided = against_target


def fmt_number(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(digits, len(str(int(abs(v)))))}g}"


def format_against_target(label, r, unit="", digits=3):
    """One line for a terminal: 'efficiency: mean 0.960, 95% CI [0.955, 0.965] (Student t, n=3), target ≥
    0.95: met'."""
    u = f" {unit}" if unit else ""
    if r["low"] is not None:
        spread = (f"{round(100 * r['level'])}% CI [{fmt_number(r['low'], digits)}, {fmt_number(r['high'], digits)}]"
                  f"{u} (Student t, n={r['n']})")
    else:
        spread = f"no interval (n={r['n']})"
    noisy = f", noisy: CV {100 * r['cv']:.0f}%" if r["noisy"] else ""
    note = f" ({r['note']})" if r["note"] else ""
    return (f"{label}: mean {fmt_number(r['mean'], digits)}{u}, {spread}{noisy}, target "
            f"{direction_symbol(r['direction'])} {r['target']:g}{u}: {r['verdict']}{note}")
