"""Statistics for the lab report, standard library only.

- describe(): n, mean, sample stdev, median, CV and the Student-t 95% interval of the mean.
- t_ppf(): Student's t quantile, by bisection on the exact CDF (regularized incomplete beta function,
  evaluated with the Lentz continued fraction); normal quantile for df = inf.
- fieller_ratio(): interval for the ratio of two independent means (Fieller's theorem with Welch
  degrees of freedom): the set of R for which mean_a - R * mean_b is compatible with 0 by a t test.
  Exact under normal errors, needs no resampling, and honest with 3 repeats (it widens with t_{df}).
- bootstrap_ratio(): percentile bootstrap of the ratio of means with a fixed seed (cross-check).
- verdict(): met / not met / inconclusive for a target against an interval.
"""
import math
import random
import statistics

from tqcontract.metrics import percentile

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20240601
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


def t_ppf(p, df):
    """The p quantile of Student's t (bisection on t_cdf to ~1e-12); df = inf gives the normal one."""
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
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def t_critical(df, confidence=CONFIDENCE):
    """Two-sided critical value t_{1-(1-confidence)/2, df}."""
    return t_ppf(1.0 - (1.0 - confidence) / 2.0, df)


# -------------------------------------------------------------------------------- one sample

def t_interval(values, confidence=CONFIDENCE):
    """(low, high) of the Student-t interval of the mean; None with fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    m = statistics.fmean(values)
    half = t_critical(n - 1, confidence) * statistics.stdev(values) / math.sqrt(n)
    return (m - half, m + half)


def describe(values, confidence=CONFIDENCE):
    """{n, mean, stdev, median, cv, ci_low, ci_high} of a sample (None where undefined)."""
    values = [float(v) for v in values if v is not None]
    n = len(values)
    out = {"n": n, "mean": None, "stdev": None, "median": None, "cv": None, "ci_low": None, "ci_high": None}
    if not n:
        return out
    out["mean"] = statistics.fmean(values)
    out["median"] = statistics.median(values)
    if n >= 2:
        out["stdev"] = statistics.stdev(values)
        if out["mean"]:
            out["cv"] = out["stdev"] / abs(out["mean"])
        out["ci_low"], out["ci_high"] = t_interval(values, confidence)
    return out


# ---------------------------------------------------------------------------- ratio of means

def welch_ratio_df(a, b, ratio):
    """Welch-Satterthwaite degrees of freedom of mean(a) - ratio * mean(b)."""
    na, nb = len(a), len(b)
    va = statistics.variance(a) / na
    vb = ratio * ratio * statistics.variance(b) / nb
    denom = va * va / (na - 1) + vb * vb / (nb - 1)
    if denom == 0:
        return float(na + nb - 2)
    return (va + vb) ** 2 / denom


def fieller_ratio(a, b, confidence=CONFIDENCE):
    """Fieller interval for mean(a) / mean(b), a and b independent samples.

    Returns {"ratio", "low", "high", "df", "bounded"}; None when a side has fewer than 2 values or mean(b)
    is 0. `bounded` is False when mean(b) is itself not distinguishable from 0 at this confidence (then
    the set is not a finite interval and low/high are -inf/inf).
    """
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    if mb == 0:
        return None
    ratio = ma / mb
    df = welch_ratio_df(a, b, ratio)
    t = t_critical(df, confidence)
    va = statistics.variance(a) / len(a)
    vb = statistics.variance(b) / len(b)
    # (ma - R mb)^2 <= t^2 (va + R^2 vb)  <=>  A R^2 - 2 B R + C <= 0
    qa = mb * mb - t * t * vb
    qb = ma * mb
    qc = ma * ma - t * t * va
    if qa <= 0:
        return {"ratio": ratio, "low": -math.inf, "high": math.inf, "df": df, "bounded": False}
    disc = max(0.0, qb * qb - qa * qc)
    root = math.sqrt(disc)
    return {"ratio": ratio, "low": (qb - root) / qa, "high": (qb + root) / qa, "df": df, "bounded": True}


def bootstrap_ratio(a, b, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED, confidence=CONFIDENCE):
    """Percentile bootstrap interval of mean(a) / mean(b): each side resampled with replacement on its
    own, `resamples` times, with random.Random(seed). Returns {"ratio", "low", "high", "resamples"} or
    None (fewer than 2 values on a side, or mean(b) = 0). Same inputs and seed, same interval."""
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        return None
    mb = statistics.fmean(b)
    if mb == 0:
        return None
    rng = random.Random(seed)
    na, nb = len(a), len(b)
    ratios = []
    for _ in range(resamples):
        sa = sum(a[int(rng.random() * na)] for _ in range(na))
        sb = sum(b[int(rng.random() * nb)] for _ in range(nb))
        if sb != 0:
            ratios.append((sa / na) / (sb / nb))
    ratios.sort()
    alpha = (1.0 - confidence) / 2.0
    return {"ratio": statistics.fmean(a) / mb, "low": percentile(ratios, 100.0 * alpha),
            "high": percentile(ratios, 100.0 * (1.0 - alpha)), "resamples": len(ratios)}


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
    """What the point estimate alone says (for n = 1, where there is no interval)."""
    if point is None:
        return "no data"
    ok = point >= target if direction == ">=" else point <= target
    return "meets" if ok else "misses"
