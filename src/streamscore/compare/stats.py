"""Streaming statistics of two score columns over matched rows, in bounded memory.

Exact over every matched row: counts, means, min/max, mean and max of |A−B|, Pearson
correlation (co-moments merged batch by batch, Chan et al.), the 2×2 table of labels at the
threshold. From a uniform reservoir sample of matched rows (exact while the rows fit in it):
quantiles, the distribution of A−B, Spearman correlation, the population stability index and
the pictures. The rows that differ most are kept in a heap of fixed size.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
PSI_BINS = 10
PSI_FLOOR = 1e-4  # share given to an empty bin, so PSI stays finite


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``actual`` against ``expected``.

    Bins are ``expected``'s deciles (unique edges, right-closed: ``(e[i-1], e[i]]``, with
    open ends); each side's share per bin, floored at 1e-4; PSI = Σ (a − e) · ln(a / e).
    Usual reading: < 0.1 stable, 0.1–0.25 some shift, > 0.25 a large shift.
    """
    if len(expected) == 0 or len(actual) == 0:
        return float("nan")
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, expected, side="left"), minlength=len(edges) + 1)
    a = np.bincount(np.searchsorted(edges, actual, side="left"), minlength=len(edges) + 1)
    e_share = np.maximum(e / len(expected), PSI_FLOOR)
    a_share = np.maximum(a / len(actual), PSI_FLOOR)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (as Spearman's rho needs)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.concatenate([starts[1:], [len(values)]])
    average = (starts + ends - 1) / 2 + 1
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = average[group]
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks)."""
    return pearson(average_ranks(a), average_ranks(b)) if len(a) else float("nan")


@dataclass
class _Moments:
    """Count, means and co-moments of (a, b), mergeable batch by batch."""

    n: int = 0
    mean_a: float = 0.0
    mean_b: float = 0.0
    m2_a: float = 0.0
    m2_b: float = 0.0
    c_ab: float = 0.0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        m = len(a)
        if m == 0:
            return
        ma, mb = float(a.mean()), float(b.mean())
        da, db = a - ma, b - mb
        m2a, m2b, cab = float(da @ da), float(db @ db), float(da @ db)
        n = self.n + m
        delta_a, delta_b = ma - self.mean_a, mb - self.mean_b
        self.m2_a += m2a + delta_a * delta_a * self.n * m / n
        self.m2_b += m2b + delta_b * delta_b * self.n * m / n
        self.c_ab += cab + delta_a * delta_b * self.n * m / n
        self.mean_a += delta_a * m / n
        self.mean_b += delta_b * m / n
        self.n = n

    @property
    def correlation(self) -> float:
        if self.n < 2 or self.m2_a <= 0 or self.m2_b <= 0:
            return float("nan")
        return self.c_ab / math.sqrt(self.m2_a * self.m2_b)


class Reservoir:
    """A uniform random sample of up to ``size`` matched rows (Algorithm R), seeded."""

    def __init__(self, size: int, columns: int, seed: int = 0) -> None:
        self.size = size
        self.seen = 0
        # Grown as rows come (doubling, up to size): --sample-rows is an upper bound, and
        # a generous one must not allocate it all before the first row.
        self.a = np.empty((0, columns), dtype=np.float64)
        self.b = np.empty((0, columns), dtype=np.float64)
        self.rng = np.random.default_rng(seed)

    def _reserve(self, rows: int) -> None:
        held = len(self.a)
        if rows <= held:
            return
        capacity = min(self.size, max(rows, 2 * held))
        extra = ((0, capacity - held), (0, 0))
        self.a, self.b = np.pad(self.a, extra), np.pad(self.b, extra)

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        """Offer rows (2-D: rows x columns) to the sample."""
        m = len(a)
        self._reserve(min(self.size, self.seen + m))
        free = min(max(self.size - self.seen, 0), m)
        if free:
            self.a[self.seen : self.seen + free] = a[:free]
            self.b[self.seen : self.seen + free] = b[:free]
        if free < m:
            # row t (0-based overall) replaces a random slot with probability size / (t + 1)
            t = np.arange(self.seen + free, self.seen + m)
            slots = (self.rng.random(len(t)) * (t + 1)).astype(np.int64)
            take = slots < self.size
            self.a[slots[take]] = a[free:][take]
            self.b[slots[take]] = b[free:][take]
        self.seen += m

    def column(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        kept = min(self.seen, self.size)
        return self.a[:kept, index], self.b[:kept, index]

    @property
    def exact(self) -> bool:
        return self.seen <= self.size


@dataclass
class ColumnStats:
    """Exact streaming statistics of one score column on matched rows."""

    name: str
    threshold: float
    moments: _Moments = field(default_factory=_Moments)
    missing: int = 0  # matched rows where either side is null, NaN or infinite here
    min_a: float = math.inf
    max_a: float = -math.inf
    min_b: float = math.inf
    max_b: float = -math.inf
    sum_delta: float = 0.0
    sum_abs_delta: float = 0.0
    max_abs_delta: float = 0.0
    table: np.ndarray = field(default_factory=lambda: np.zeros((2, 2), dtype=np.int64))

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        """Add matched values (float64, same length); a null (NaN) or infinite value on either
        side counts as missing: no statistic can use it."""
        present = np.isfinite(a) & np.isfinite(b)
        if not present.all():
            self.missing += int(len(a) - present.sum())
            a, b = a[present], b[present]
        if len(a) == 0:
            return
        self.moments.add(a, b)
        self.min_a, self.max_a = min(self.min_a, float(a.min())), max(self.max_a, float(a.max()))
        self.min_b, self.max_b = min(self.min_b, float(b.min())), max(self.max_b, float(b.max()))
        delta = a - b
        self.sum_delta += float(delta.sum())
        absolute = np.abs(delta)
        self.sum_abs_delta += float(absolute.sum())
        self.max_abs_delta = max(self.max_abs_delta, float(absolute.max()))
        pos_a, pos_b = a >= self.threshold, b >= self.threshold
        self.table[0, 0] += int(np.count_nonzero(~pos_a & ~pos_b))
        self.table[0, 1] += int(np.count_nonzero(~pos_a & pos_b))
        self.table[1, 0] += int(np.count_nonzero(pos_a & ~pos_b))
        self.table[1, 1] += int(np.count_nonzero(pos_a & pos_b))

    @property
    def compared(self) -> int:
        return self.moments.n

    @property
    def is_probability(self) -> bool:
        """Both sides' values lie in [0, 1]: a probability or a 0/1 label, so flips apply."""
        return (
            self.compared > 0
            and min(self.min_a, self.min_b) >= 0
            and max(self.max_a, self.max_b) <= 1
        )

    @property
    def flips(self) -> int:
        return int(self.table[0, 1] + self.table[1, 0])


@dataclass(order=True)
class _Differing:
    abs_delta: float
    sequence: int
    row: dict[str, Any] = field(compare=False)


class TopRows:
    """The ``size`` rows with the largest |A−B| of one column, with their kept columns."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.heap: list[_Differing] = []
        self.sequence = 0

    def add(self, a: np.ndarray, b: np.ndarray, describe: Callable[[int], dict[str, Any]]) -> None:
        """Offer matched rows; ``describe(i)`` gives row i's key and kept columns."""
        if self.size == 0 or len(a) == 0:
            return
        with np.errstate(invalid="ignore"):  # inf - inf: skipped below as missing
            absolute = np.abs(a - b)
        absolute = np.where(np.isfinite(absolute), absolute, -1.0)
        count = min(self.size, len(a))
        candidates = np.argpartition(-absolute, count - 1)[:count]
        floor = self.heap[0].abs_delta if len(self.heap) == self.size else -math.inf
        for i in candidates.tolist():
            value = float(absolute[i])
            if value < 0 or value <= floor:
                continue
            row = {"a": float(a[i]), "b": float(b[i]), "delta": float(a[i] - b[i])}
            row.update(describe(i))
            self.sequence += 1
            item = _Differing(value, -self.sequence, row)
            if len(self.heap) < self.size:
                heapq.heappush(self.heap, item)
            else:
                heapq.heapreplace(self.heap, item)
            floor = self.heap[0].abs_delta if len(self.heap) == self.size else -math.inf

    def rows(self) -> list[dict[str, Any]]:
        """Largest |A−B| first."""
        return [item.row for item in sorted(self.heap, reverse=True)]
