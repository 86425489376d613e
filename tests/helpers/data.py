"""Parquet files to score: deterministic tables shaped like the test models' inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from helpers.models import CATEGORIES, feature_names


def dense_table(rows: int, n_features: int = 4, *, seed: int = 1, first_id: int = 0) -> pa.Table:
    """``id`` int64, ``f0``..``f{k-1}`` float64 and a string ``note`` column."""
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {
        "id": pa.array(np.arange(first_id, first_id + rows), pa.int64())
    }
    for i, name in enumerate(feature_names(n_features)):
        columns[name] = pa.array(np.round(rng.normal(size=rows) + 0.1 * i, 3))
    columns["note"] = pa.array([f"row {first_id + i}" for i in range(rows)], pa.string())
    return pa.table(columns)


def column_table(rows: int, *, seed: int = 1) -> pa.Table:
    """Rows for the per-column model (amount, score, count, category) plus an ``id``."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": pa.array(np.arange(rows)),
            "amount": pa.array(np.round(rng.lognormal(3, 1, rows), 2)),
            "score": pa.array(np.round(rng.normal(size=rows), 3)),
            "count": pa.array(rng.integers(0, 20, rows)),
            "category": pa.array(rng.choice(CATEGORIES, rows).tolist()),
        }
    )


def write_parquet(path: Path, table: pa.Table, **options: object) -> Path:
    """Write ``table`` to ``path``, creating folders (hive ``key=value/`` ones included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **options)
    return path


def read_output(path: Path) -> pa.Table:
    """An output file's rows, without its key-value metadata (which names the run)."""
    table = pq.read_table(path)
    return table.replace_schema_metadata(None)


def streamscore_metadata(path: Path) -> dict[str, str]:
    """The ``streamscore.*`` key-value metadata of a Parquet file, prefix removed."""
    raw = pq.read_metadata(path).metadata or {}
    prefix = b"streamscore."
    return {k[len(prefix) :].decode(): v.decode() for k, v in raw.items() if k.startswith(prefix)}
