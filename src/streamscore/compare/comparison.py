"""Accumulate matched score pairs batch by batch, then summarize them as a report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamscore.compare.options import DEFAULT_SAMPLE_ROWS
from streamscore.compare.report import (
    ColumnResult,
    Delta,
    Distribution,
    Gate,
    GateFailure,
    RowCounts,
)
from streamscore.compare.stats import (
    QUANTILES,
    ColumnStats,
    Reservoir,
    TopRows,
    psi,
    spearman,
)


def _no_details(_row: int) -> dict[str, Any]:
    return {"key": None, "keep": {}}


@dataclass
class PairedBatch:
    """Matched rows of one batch: A's and B's scores (float64, rows x columns, NaN = null),
    ``describe(i)`` naming row i (key and kept columns), and rows only one side has."""

    a: np.ndarray
    b: np.ndarray
    describe: Callable[[int], dict[str, Any]] = field(default=_no_details)
    only_a: int = 0
    only_b: int = 0
    neither: int = 0
    duplicates_a: int = 0
    duplicates_b: int = 0


class Comparison:
    """Streaming comparison of the score ``columns`` of two sides, in bounded memory."""

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        top: int = 10,
        sample_rows: int = DEFAULT_SAMPLE_ROWS,
        seed: int = 0,
    ) -> None:
        self.threshold, self.top, self.sample_rows, self.seed = threshold, top, sample_rows, seed
        self.columns: list[str] = []
        self.stats: list[ColumnStats] = []
        self.tops: list[TopRows] = []
        self.sample = Reservoir(sample_rows, 0, seed)
        self.rows = RowCounts()

    def _start(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.stats = [ColumnStats(name, self.threshold) for name in self.columns]
        self.tops = [TopRows(self.top) for _ in self.columns]
        self.sample = Reservoir(self.sample_rows, len(self.columns), self.seed)

    def add(self, columns: Sequence[str], batch: PairedBatch) -> None:
        """Add one batch whose matrices hold ``columns`` (the same ones every time, once
        known: a source may send row counts before it knows its columns)."""
        if not self.columns and columns:
            self._start(columns)
        rows = self.rows
        rows.matched += len(batch.a)
        rows.only_a += batch.only_a
        rows.only_b += batch.only_b
        rows.neither += batch.neither
        rows.duplicates_a += batch.duplicates_a
        rows.duplicates_b += batch.duplicates_b
        if len(batch.a) == 0 or not self.columns:
            return
        self.sample.add(batch.a, batch.b)
        for i, (stats, top) in enumerate(zip(self.stats, self.tops, strict=True)):
            a, b = batch.a[:, i], batch.b[:, i]
            stats.add(a, b)
            top.add(a, b, batch.describe)

    def results(self) -> list[ColumnResult]:
        samples = self.samples()
        return [self._result(i, samples) for i in range(len(self.columns))]

    def samples(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The sampled (A, B) pairs of each column, rows missing a finite value left out."""
        pairs = {}
        for i, name in enumerate(self.columns):
            a, b = self.sample.column(i)
            present = np.isfinite(a) & np.isfinite(b)
            pairs[name] = (a[present], b[present])
        return pairs

    def _result(
        self, index: int, samples: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> ColumnResult:
        stats = self.stats[index]
        a, b = samples[stats.name]
        m = stats.moments
        classifier = stats.is_probability
        table = stats.table.tolist() if classifier else None
        flips = stats.flips if classifier else None
        return ColumnResult(
            name=stats.name,
            compared=stats.compared,
            missing=stats.missing,
            a=Distribution(
                *_spread(stats.compared, m.mean_a, stats.min_a, stats.max_a), _quantiles(a)
            ),
            b=Distribution(
                *_spread(stats.compared, m.mean_b, stats.min_b, stats.max_b), _quantiles(b)
            ),
            delta=Delta(
                stats.sum_delta / stats.compared if stats.compared else float("nan"),
                stats.sum_abs_delta / stats.compared if stats.compared else float("nan"),
                stats.max_abs_delta if stats.compared else float("nan"),
                _quantiles(a - b),
            ),
            pearson=m.correlation,
            spearman=spearman(a, b),
            psi=psi(a, b),
            classifier=classifier,
            threshold=self.threshold,
            flips=flips,
            flip_rate=None if flips is None or not stats.compared else flips / stats.compared,
            table=table,
            top=self.tops[index].rows(),
        )


def _spread(count: int, mean: float, low: float, high: float) -> tuple[float, float, float]:
    """Mean, min and max, or NaN (null in JSON) when no row was compared."""
    nan = float("nan")
    return (mean, low, high) if count else (nan, nan, nan)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {f"p{round(q * 100):02d}": float("nan") for q in QUANTILES}
    found = np.quantile(values, QUANTILES)
    return {f"p{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, found, strict=True)}


def check_gate(
    columns: Sequence[ColumnResult],
    max_flip_rate: float | None,
    max_psi: float | None,
    matched: int,
) -> Gate:
    """Which columns exceed the limits. Flip limits apply to classifier columns only; with
    no matched row at all, a gate fails rather than pass on nothing."""
    gate = Gate(max_flip_rate, max_psi)
    if (max_flip_rate is not None or max_psi is not None) and matched == 0:
        gate.failures.append(GateFailure("(all)", "matched_rows", 0, 1))
    for column in columns:
        if (
            max_flip_rate is not None
            and column.flip_rate is not None
            and column.flip_rate > max_flip_rate
        ):
            gate.failures.append(
                GateFailure(column.name, "flip_rate", column.flip_rate, max_flip_rate)
            )
        if max_psi is not None and np.isfinite(column.psi) and column.psi > max_psi:
            gate.failures.append(GateFailure(column.name, "psi", column.psi, max_psi))
    return gate
