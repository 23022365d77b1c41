"""Which trials count: one rule for the sweep (when it records a trial) and the report (when it loads one).

A trial the implementation finished ("ok") still fails when a metric the statistics use is missing, or
when any numeric metric is not a finite number (NaN, inf: JSON from Python can carry them). It is then
recorded as `invalid` with the reason, listed with the failed trials, and left out of every statistic,
so the n a report prints is the n it used for every figure of that cell.
"""
import math

from tqcontract.metrics import TRIAL_COLUMNS, dig

INVALID = "invalid"
# every figure with an interval or a verdict in the report; an ok trial without one of them is invalid
REQUIRED_METRICS = ("throughput_tps", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
                    "error_rate")
NUMERIC_METRICS = tuple(c for c, _ in TRIAL_COLUMNS)


def parse_number(text):
    """A CSV cell as a number: None for blank, float('nan') etc. kept as they are, the text itself when it
    is not a number."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return text
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def problem(values):
    """Why a trial's metrics must not be used, or None. `values`: {column: number or None} for the
    columns of tqcontract.metrics.TRIAL_COLUMNS (missing keys count as None)."""
    bad = []
    for column in NUMERIC_METRICS:
        v = values.get(column)
        if v is None:
            if column in REQUIRED_METRICS:
                bad.append(f"{column} missing")
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            bad.append(f"{column} not a number ({v!r})")
        elif not math.isfinite(v):
            bad.append(f"{column} = {v!r}")
    if not bad:
        return None
    return "non-finite or missing metric: " + ", ".join(bad[:4]) + (" …" if len(bad) > 4 else "")


def result_problem(result):
    """problem() of a metrics JSON (a trial's result)."""
    if not isinstance(result, dict):
        return "no metrics"
    return problem({c: dig(result, path) for c, path in TRIAL_COLUMNS})


def row_problem(row):
    """problem() of a trials.csv row (strings)."""
    return problem({c: parse_number(row.get(c)) for c in NUMERIC_METRICS})
