"""Latency histograms that merge across processes: fixed log-spaced bins, counts only."""
from __future__ import annotations

import math

# 1 us .. 100 s in 10 bins per decade: 80 bins, each ~26% wide, so a percentile read from
# the histogram is within one bin (~±13%) of the exact value.
_MIN_NS = 1_000
_PER_DECADE = 10
N_BINS = 8 * _PER_DECADE


def _bin(ns: int) -> int:
    if ns <= _MIN_NS:
        return 0
    return min(N_BINS - 1, int(math.log10(ns / _MIN_NS) * _PER_DECADE))


def _bin_upper_ms(index: int) -> float:
    return _MIN_NS * 10 ** ((index + 1) / _PER_DECADE) / 1e6


class LatencyHistogram:
    """Counts of durations (ns); exact maximum; percentiles to within one bin."""

    def __init__(self, counts: dict | None = None, max_ns: int = 0):
        self.counts = [0] * N_BINS
        for index, n in (counts or {}).items():
            self.counts[int(index)] += int(n)
        self.max_ns = max_ns

    def add(self, ns: int) -> None:
        self.counts[_bin(ns)] += 1
        if ns > self.max_ns:
            self.max_ns = ns

    @property
    def n(self) -> int:
        return sum(self.counts)

    def merge(self, other: "LatencyHistogram") -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.max_ns = max(self.max_ns, other.max_ns)

    def percentile_ms(self, q: float) -> float:
        """Upper edge of the bin holding the q-th percentile (q in 0..100), in ms."""
        total = self.n
        if total == 0:
            return math.nan
        rank = q / 100 * total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                return min(_bin_upper_ms(index), self.max_ns / 1e6)
        return self.max_ns / 1e6

    def to_wire(self) -> dict:
        """Sparse form for a heartbeat's meta: {"c": {bin: count}, "max": ns}."""
        return {"c": {str(i): c for i, c in enumerate(self.counts) if c}, "max": self.max_ns}

    @classmethod
    def from_wire(cls, data: dict) -> "LatencyHistogram":
        return cls(data.get("c", {}), int(data.get("max", 0)))

    def summary(self) -> dict:
        return {"n": self.n, "p50_ms": self.percentile_ms(50), "p99_ms": self.percentile_ms(99),
                "max_ms": self.max_ns / 1e6}
