"""The latency histogram every part uses: fixed log-linear buckets in the style of HdrHistogram.

A positive value v (milliseconds) with `math.frexp(v) = (m, e)`, m in [0.5, 1), falls in bucket
`e * SUB_BUCKETS + floor((m - 0.5) * 2 * SUB_BUCKETS)`: every power of two is cut into SUB_BUCKETS (64)
equal parts, so a bucket is at most 1/64 of its lower bound wide and its midpoint is within 1/128 (0.79%)
of any value in it. The buckets are fixed (the same for every histogram, no configuration), so histograms
from different trials, processes or machines merge by adding counts. Zero goes to a bucket of its own.

- `record(value_ms)`: one frexp, one dict update, a min/max/sum update; no lock (a caller that records
  from several threads holds its own).
- `percentile(q)`: q in percent, the same definition as `tqcontract.metrics.percentile` (linear
  interpolation between closest ranks) applied to the bucket midpoints; rank 0 and rank n-1 are the exact
  min and max. Every percentile is within 1% of the exact one of the recorded values.
- `count`, `mean` (exact sum / count), `min`, `max` (exact).
- `merge(other)`: add another histogram's counts (the pooled histogram of both samples).
- `to_dict()` / `from_dict()`: a compact JSON form ({"v", "n", "sum", "min", "max", "b": [[bucket,
  count], ...]}), a few kB for thousands of values; `from_dict` refuses anything malformed (ValueError).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from math import frexp
from typing import Any

SUB_BUCKETS = 64          # buckets per power of two: relative width <= 1/64, midpoint error <= 1/128
FORMAT_VERSION = 1
MAX_RELATIVE_ERROR = 1.0 / (2 * SUB_BUCKETS)
_SCALE = 2 * SUB_BUCKETS
_INF = math.inf


def bucket_of(value: float) -> int:
    """The bucket index of a positive finite value."""
    m, e = math.frexp(value)
    return e * SUB_BUCKETS + int((m - 0.5) * _SCALE)


def bucket_bounds(index: int) -> tuple[float, float]:
    """[low, high) of a bucket."""
    e, sub = divmod(index, SUB_BUCKETS)
    return math.ldexp(0.5 + sub / _SCALE, e), math.ldexp(0.5 + (sub + 1) / _SCALE, e)


def bucket_midpoint(index: int) -> float:
    low, high = bucket_bounds(index)
    return 0.5 * (low + high)


class LatencyHistogram:
    """Counts of latencies (ms) in fixed log-linear buckets; see the module docstring."""

    __slots__ = ("counts", "zeros", "count", "total", "min", "max")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.zeros = 0
        self.count = 0
        self.total = 0.0
        self.min = _INF
        self.max = -_INF

    # ------------------------------------------------------------------------------ recording

    def record(self, value_ms: float) -> None:
        """Add one value (ms, finite and >= 0; anything else is a ValueError and changes nothing)."""
        if 0.0 < value_ms < _INF:
            m, e = frexp(value_ms)
            index = e * SUB_BUCKETS + int((m - 0.5) * _SCALE)
            counts = self.counts
            counts[index] = counts.get(index, 0) + 1
        elif value_ms == 0.0:
            self.zeros += 1
        else:
            raise ValueError(f"a latency must be a finite number >= 0, not {value_ms!r}")
        self.count += 1
        self.total += value_ms
        if value_ms < self.min:
            self.min = value_ms
        if value_ms > self.max:
            self.max = value_ms

    def record_many(self, values_ms: Iterable[float]) -> None:
        for v in values_ms:
            self.record(v)

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Add other's counts to this histogram (returns self)."""
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.zeros += other.zeros
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    @classmethod
    def merged(cls, histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
        out = cls()
        for h in histograms:
            out.merge(h)
        return out

    @classmethod
    def pooled(cls, histograms: Iterable[LatencyHistogram | dict[str, Any] | None]) -> LatencyHistogram | None:
        """The trials' histograms (objects or their to_dict() forms) merged into one; None when any is missing
        or unreadable (a percentile pooled over only some trials would pass for all of them) or when they hold
        no latency at all."""
        out = cls()
        for h in histograms:
            if h is None:
                return None
            if not isinstance(h, LatencyHistogram):
                try:
                    h = cls.from_dict(h)
                except ValueError:
                    return None
            out.merge(h)
        return out if out.count else None

    # ------------------------------------------------------------------------------ reading

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def _value_at_rank(self, rank: int, ordered: list[tuple[int, int]]) -> float:
        """The (approximate) value of 0-based rank `rank`: exact min/max at the ends, else its bucket's
        midpoint kept within [min, max]."""
        if rank <= 0:
            return float(self.min)
        if rank >= self.count - 1:
            return float(self.max)
        if rank < self.zeros:
            return 0.0
        seen = self.zeros
        for index, n in ordered:
            seen += n
            if rank < seen:
                return min(max(bucket_midpoint(index), self.min), self.max)
        return float(self.max)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (q in percent, 0..100), defined as tqcontract.metrics.percentile; None when
        empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"q must be within 0..100, not {q}")
        n = self.count
        if n == 0:
            return None
        if n == 1:
            return float(self.min)
        ordered = sorted(self.counts.items())
        pos = (n - 1) * q / 100.0
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        frac = pos - lo
        low_value = self._value_at_rank(lo, ordered)
        if frac == 0:
            return low_value
        return low_value + (self._value_at_rank(hi, ordered) - low_value) * frac

    def summary(self) -> dict[str, float | None]:
        """mean, p50, p95, p99, max: the shape of tqcontract.metrics.latency_summary."""
        if not self.count:
            return {"mean": None, "p50": None, "p95": None, "p99": None, "max": None}
        return {"mean": self.mean, "p50": self.percentile(50), "p95": self.percentile(95),
                "p99": self.percentile(99), "max": float(self.max)}

    # ------------------------------------------------------------------------------ JSON form

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-ready form; from_dict(to_dict()) is an equal histogram."""
        out: dict[str, Any] = {"v": FORMAT_VERSION, "sub": SUB_BUCKETS, "n": self.count, "sum": self.total,
                               "min": self.min if self.count else None, "max": self.max if self.count else None,
                               "b": [[i, c] for i, c in sorted(self.counts.items())]}
        if self.zeros:
            out["zeros"] = self.zeros
        return out

    @classmethod
    def from_dict(cls, data: Any) -> LatencyHistogram:
        """The histogram of a to_dict() form; ValueError for anything else (wrong version, bucket scheme,
        types, negative counts, counts that do not add up)."""
        if not isinstance(data, dict):
            raise ValueError("a histogram must be a JSON object")
        if data.get("v") != FORMAT_VERSION or data.get("sub") != SUB_BUCKETS:
            raise ValueError(f"unknown histogram format (v={data.get('v')!r}, sub={data.get('sub')!r})")
        h = cls()
        buckets = data.get("b")
        if not isinstance(buckets, list):
            raise ValueError("histogram buckets must be a list")
        for item in buckets:
            if (not isinstance(item, list) or len(item) != 2
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in item) or item[1] < 1
                    or item[0] in h.counts):
                raise ValueError(f"bad histogram bucket {item!r}")
            h.counts[item[0]] = item[1]
        zeros = data.get("zeros", 0)
        n = data.get("n")
        if not (isinstance(zeros, int) and not isinstance(zeros, bool) and zeros >= 0):
            raise ValueError("histogram zeros must be a count")
        h.zeros = zeros
        if not isinstance(n, int) or isinstance(n, bool) or n != zeros + sum(h.counts.values()):
            raise ValueError("histogram count does not match its buckets")
        h.count = n
        if n:
            values: list[Any] = [data.get(k) for k in ("sum", "min", "max")]
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                       for x in values):
                raise ValueError("histogram sum, min and max must be finite numbers")
            h.total, h.min, h.max = (float(x) for x in values)
            if not 0 <= h.min <= h.max:
                raise ValueError("histogram min/max out of order")
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"LatencyHistogram(count={self.count}, buckets={len(self.counts)})"
