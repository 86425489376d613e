"""The comparison report and its JSON form (schema ``streamscore.compare``, version 1).

``streamscore compare --json FILE`` writes ``CompareReport.to_dict()``. Top level::

    schema            "streamscore.compare"
    schema_version    1
    created_at        UTC time, ISO 8601
    mode              "models" | "scored" | "topics"
    a, b              {source, model, version, sha256}   model fields null where unknown
    settings          {threshold, top, sample_rows, key, keep, columns}
    rows              {matched, only_a, only_b, neither, duplicates_a, duplicates_b}
    sample            {rows, exact}: rows in the reservoir sample; exact when every matched
                      row is in it (then quantiles, Spearman and PSI are exact too)
    columns           [column]            one per compared score column
    gate              {max_flip_rate, max_psi, failures: [{column, metric, value, limit}]}
                      metric: flip_rate, psi, or matched_rows (column "(all)") when a gate
                      is set and no row matched

A column::

    name, compared (matched rows with a finite value on both sides), missing (null, NaN
                      or infinite on a side)
    a, b              {mean, min, max, quantiles: {p01, p05, p25, p50, p75, p95, p99}}
    delta             A−B: {mean, mean_abs, max_abs, quantiles}
    pearson           exact, over every compared row
    spearman, psi     over the sample (see ``sample``); PSI of B against A's deciles
    classifier        both sides in [0, 1]: flips apply (a 0/1 label or a probability)
    threshold, flips, flip_rate, table     table[i][j]: rows with A label i and B label j,
                      a label being score >= threshold; null when not a classifier column
    top               [{a, b, delta, key, keep}]: the rows with the largest |A−B|

Rows counts: ``only_a`` rows only A has (B's model rejected the row, or no B row has its
key / source offset), ``only_b`` the reverse, ``neither`` rows both models rejected;
``duplicates_*`` repeated source offsets in a topic (at-least-once), the first one counts.
Versioning as bench's: fields may be added within a version; renaming or removing one, or
changing its meaning, increments ``schema_version``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamscore.atomic import write_atomically

SCHEMA = "streamscore.compare"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Side:
    """Where one side's scores come from."""

    source: str
    model: str | None = None
    version: str | None = None
    sha256: str | None = None


@dataclass
class RowCounts:
    matched: int = 0
    only_a: int = 0
    only_b: int = 0
    neither: int = 0
    duplicates_a: int = 0
    duplicates_b: int = 0


@dataclass(frozen=True)
class Distribution:
    mean: float
    min: float
    max: float
    quantiles: dict[str, float]


@dataclass(frozen=True)
class Delta:
    mean: float
    mean_abs: float
    max_abs: float
    quantiles: dict[str, float]


@dataclass(frozen=True)
class ColumnResult:
    """How one score column compares between A and B."""

    name: str
    compared: int
    missing: int
    a: Distribution
    b: Distribution
    delta: Delta
    pearson: float
    spearman: float
    psi: float
    classifier: bool
    threshold: float
    flips: int | None
    flip_rate: float | None
    table: list[list[int]] | None
    top: list[dict[str, Any]]


@dataclass(frozen=True)
class GateFailure:
    column: str
    metric: str  # flip_rate | psi | matched_rows (no row matched: nothing to check)
    value: float
    limit: float


@dataclass
class Gate:
    max_flip_rate: float | None = None
    max_psi: float | None = None
    failures: list[GateFailure] = field(default_factory=list)


@dataclass
class CompareReport:
    """Everything ``streamscore compare`` found; ``samples`` feed the pictures only."""

    created_at: str
    mode: str
    a: Side
    b: Side
    settings: dict[str, Any]
    rows: RowCounts
    sample: dict[str, Any]
    columns: list[ColumnResult]
    gate: Gate = field(default_factory=Gate)
    samples: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        body = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "samples"
        }
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            **_plain(dataclasses.asdict(_Holder(body)))["body"],
        }

    def column(self, name: str) -> ColumnResult:
        return next(c for c in self.columns if c.name == name)


@dataclass
class _Holder:
    body: dict[str, Any]


def _plain(value: Any) -> Any:
    """JSON-ready: NaN and infinities become null, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)  # timestamps and other kept values: their text


def dumps_report(report: CompareReport) -> str:
    return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"


def save_report(report: CompareReport, path: Path) -> None:
    """Write the JSON report atomically (a temporary file renamed into place)."""
    write_atomically(path, dumps_report(report))
