"""Statistics for the lab report, benchmark.py and --benchmark, standard library only.

- describe(): n, mean, sample stdev, median, CV and the Student-t 95% interval of the mean (no interval
  when the values have no spread: a zero-width interval would claim certainty nobody measured).
- t_ppf(): Student's t quantile, by bisection on the exact CDF (regularized incomplete beta function,
  evaluated with the Lentz continued fraction); normal quantile for df = inf.
- welch_diff(): interval of mean(a) - mean(b) for independent samples with Welch degrees of freedom.
- fieller_ratio(): interval for the ratio of two independent means (Fieller's theorem with Welch
  degrees of freedom): the set of R for which mean_a - R * mean_b is compatible with 0 by a t test.
  Exact under normal errors, needs no resampling, and honest with 3 repeats (it widens with t_{df}).
- verdict(): met / not met / inconclusive for a target against an interval.
Every interval method printed anywhere has a coverage simulation in tests/test_stats.py. There is no
bootstrap: a percentile bootstrap of 3 values covers the truth about 80% of the time, not 95%.
Inputs must be finite numbers (ValueError otherwise): a caller decides what a NaN means, never a silent
drop here.
"""
import functools
import math
import statistics

CONFIDENCE = 0.95
NO_SPREAD = "no spread: every value is the same, so there is no interval"
_NORMAL = statistics.NormalDist()


# ----------------------------------------------------------------------------- special functions

def _betacf(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a, b, x):
    """Regularized incomplete beta function I_x(a, b) for a, b > 0, 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError("betainc needs a > 0 and b > 0")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with df degrees of freedom (df may be fractional; inf = normal)."""
    if df <= 0:
        raise ValueError("df must be > 0")
    if math.isinf(df):
        return _NORMAL.cdf(t)
    if t == 0:
        return 0.5
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_pdf(t, df):
    """Density of Student's t with df degrees of freedom."""
    log_c = math.lgamma((df + 1) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2.0 * math.log1p(t * t / df))


@functools.lru_cache(maxsize=4096)
def t_ppf(p, df):
    """The p quantile of Student's t (Newton's method on t_cdf, kept inside a shrinking bisection bracket,
    to ~1e-12); df = inf gives the normal one."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    if df <= 0:
        raise ValueError("df must be > 0")
    if math.isinf(df) or df > 1e10:
        return _NORMAL.inv_cdf(p)
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 2.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    x = _NORMAL.inv_cdf(p)
    if not lo < x < hi:
        x = 0.5 * (lo + hi)
    for _ in range(200):
        f = t_cdf(x, df) - p
        if f < 0:
            lo = x
        else:
            hi = x
        density = t_pdf(x, df)
        step = f / density if density > 0 else math.inf
        nxt = x - step
        if not lo < nxt < hi:           # Newton left the bracket: bisect instead
            nxt = 0.5 * (lo + hi)
        if abs(nxt - x) <= 1e-13 * max(1.0, abs(x)) or hi - lo <= 1e-13 * max(1.0, hi):
            return nxt
        x = nxt
    return x


def t_critical(df, confidence=CONFIDENCE):
    """Two-sided critical value t_{1-(1-confidence)/2, df}."""
    return t_ppf(1.0 - (1.0 - confidence) / 2.0, df)


# -------------------------------------------------------------------------------- one sample

def finite(values):
    """values as floats; ValueError for a None, a non-number or a NaN/inf."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"not a finite number: {v!r}")
        out.append(float(v))
    return out


def t_interval(values, confidence=CONFIDENCE):
    """(low, high) of the Student-t interval of the mean; None with fewer than 2 values or no spread."""
    values = finite(values)
    n = len(values)
    if n < 2:
        return None
    sd = statistics.stdev(values)
    if sd == 0:
        return None
    m = statistics.fmean(values)
    half = t_critical(n - 1, confidence) * sd / math.sqrt(n)
    return (m - half, m + half)


def cv(values):
    """Coefficient of variation (sample stdev / |mean|) of finite numbers; None for n < 2 or a mean of 0."""
    if len(values) < 2:
        return None
    m = statistics.fmean(values)
    return statistics.stdev(values) / abs(m) if m != 0 else None


def describe(values, confidence=CONFIDENCE):
    """{n, mean, stdev, median, cv, ci_low, ci_high, note} of a sample of finite numbers (None where
    undefined: cv at mean 0, the interval for n < 2 or no spread; `note` says why there is no interval)."""
    values = finite(values)
    n = len(values)
    out = {"n": n, "mean": None, "stdev": None, "median": None, "cv": None, "ci_low": None, "ci_high": None,
           "note": ""}
    if not n:
        out["note"] = "no values"
        return out
    out["mean"] = statistics.fmean(values)
    out["median"] = statistics.median(values)
    if n < 2:
        out["note"] = "n=1: no interval"
        return out
    out["stdev"] = statistics.stdev(values)
    out["cv"] = cv(values)
    interval = t_interval(values, confidence)
    if interval is None:
        out["note"] = NO_SPREAD
    else:
        out["ci_low"], out["ci_high"] = interval
    return out


# ------------------------------------------------------------------------------ two samples

def welch_df(var_a, na, var_b, nb):
    """Welch-Satterthwaite degrees of freedom of a difference whose two terms have variances var_a / na
    and var_b / nb (var_* are the sample variances, possibly scaled); None when both are 0."""
    va, vb = var_a / na, var_b / nb
    denom = va * va / (na - 1) + vb * vb / (nb - 1)
    if denom == 0:
        return None
    return (va + vb) ** 2 / denom


def welch_diff(a, b, confidence=CONFIDENCE):
    """Interval of mean(a) - mean(b), independent samples, Welch degrees of freedom.

    Returns {"diff", "low", "high", "df", "note"}; None when a side has fewer than 2 values. With no
    spread on either side there is no interval (low/high None, note says so)."""
    a, b = finite(a), finite(b)
    if len(a) < 2 or len(b) < 2:
        return None
    diff = statistics.fmean(a) - statistics.fmean(b)
    var_a, var_b = statistics.variance(a), statistics.variance(b)
    df = welch_df(var_a, len(a), var_b, len(b))
    if df is None:
        return {"diff": diff, "low": None, "high": None, "df": None, "note": NO_SPREAD}
    half = t_critical(df, confidence) * math.sqrt(var_a / len(a) + var_b / len(b))
    return {"diff": diff, "low": diff - half, "high": diff + half, "df": df, "note": ""}


def welch_ratio_df(a, b, ratio):
    """Welch-Satterthwaite degrees of freedom of mean(a) - ratio * mean(b); None without any spread."""
    return welch_df(statistics.variance(a), len(a), ratio * ratio * statistics.variance(b), len(b))


def fieller_ratio(a, b, confidence=CONFIDENCE):
    """Fieller interval for mean(a) / mean(b), a and b independent samples.

    Returns {"ratio", "low", "high", "df", "bounded", "note"}; None when a side has fewer than 2 values.
    - no spread on either side: no interval (low/high None, bounded False, note NO_SPREAD);
    - mean(b) not distinguishable from 0 at this confidence (mean(b) = 0 included): the set is not a
      finite interval, low/high are -inf/inf and bounded is False; ratio is None when mean(b) is 0.
    """
    a, b = finite(a), finite(b)
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    ratio = ma / mb if mb != 0 else None
    var_a, var_b = statistics.variance(a), statistics.variance(b)
    if var_a == 0 and var_b == 0:
        return {"ratio": ratio, "low": None, "high": None, "df": None, "bounded": False, "note": NO_SPREAD}
    if mb == 0:
        df = welch_df(var_a, len(a), var_b, len(b))
        return {"ratio": None, "low": -math.inf, "high": math.inf, "df": df, "bounded": False,
                "note": "the denominator's mean is 0: no finite interval"}
    df = welch_ratio_df(a, b, ratio)
    if df is None:      # var_b > 0 but ratio = 0: only a's spread (none) and b's, scaled by 0
        df = float(len(b) - 1)
    t = t_critical(df, confidence)
    va = var_a / len(a)
    vb = var_b / len(b)
    # (ma - R mb)^2 <= t^2 (va + R^2 vb)  <=>  A R^2 - 2 B R + C <= 0
    qa = mb * mb - t * t * vb
    qb = ma * mb
    qc = ma * ma - t * t * va
    if qa <= 0:
        return {"ratio": ratio, "low": -math.inf, "high": math.inf, "df": df, "bounded": False,
                "note": "the denominator's mean is not distinguishable from 0: no finite interval"}
    disc = max(0.0, qb * qb - qa * qc)
    root = math.sqrt(disc)
    return {"ratio": ratio, "low": (qb - root) / qa, "high": (qb + root) / qa, "df": df, "bounded": True,
            "note": ""}


# ---------------------------------------------------------------------------------- verdicts

def verdict(low, high, target, direction):
    """'met' when the whole [low, high] satisfies the target, 'not met' when none of it does,
    'inconclusive' otherwise. direction '>=' (ratio must reach target) or '<=' (must stay under)."""
    if low is None or high is None:
        return "inconclusive"
    if direction == ">=":
        if low >= target:
            return "met"
        if high < target:
            return "not met"
        return "inconclusive"
    if direction == "<=":
        if high <= target:
            return "met"
        if low > target:
            return "not met"
        return "inconclusive"
    raise ValueError("direction must be '>=' or '<='")


def point_verdict(point, target, direction):
    """What the point estimate alone says (where there is no interval)."""
    if point is None:
        return "no data"
    ok = point >= target if direction == ">=" else point <= target
    return "meets" if ok else "misses"
