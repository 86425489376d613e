"""Model inputs for benchmarks: generated from the model's signature, or real rows from Parquet.

Generated values are seeded, so two runs feed the same numbers: floats from a standard
normal, integers 0..9, booleans at random, strings from a small vocabulary of short words.
Real rows go through the same input mapping as ``streamscore batch`` (:mod:`streamscore.mapping`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from streamscore.errors import InputError, MappingError, UsageError
from streamscore.mapping import build_feeds, plan_inputs
from streamscore.model.signature import Dim, ModelSignature, TensorSpec
from streamscore.sources.parquet import discover_parquet, open_parquet

# Short, category-like words: enough distinct values that lookups and one-hot encoders do
# real work. Models that reject unknown strings need real rows: --data.
_WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
)  # fmt: skip


class InputSource(Protocol):
    """Gives the feeds of one model call with ``batch_size`` rows."""

    description: str

    def feeds(self, batch_size: int) -> dict[str, np.ndarray]: ...


def _dims(spec: TensorSpec, batch_size: int, shapes: dict[str, tuple[int, ...]]) -> list[int]:
    """Concrete dimensions of one input: the first is the batch, the rest fixed or given."""
    if not spec.shape:
        return []
    first = spec.shape[0]
    if isinstance(first, int) and first != batch_size:
        raise UsageError(
            f"model input '{spec.name}' has a fixed first dimension {first}; "
            f"batch size {batch_size} cannot be fed",
            hint=f"use --batch-sizes {first}",
        )
    rest: Sequence[Dim] = spec.shape[1:]
    if spec.name in shapes:
        given = shapes[spec.name]
        if len(given) != len(rest):
            raise UsageError(
                f"--shape {spec.name}: the input has {len(rest)} dimension(s) after the batch "
                f"dimension, {len(given)} given"
            )
        return [batch_size, *given]
    dims = [batch_size]
    for position, dim in enumerate(rest, start=1):
        if isinstance(dim, int):
            dims.append(dim)
        elif isinstance(dim, str) and dim in shapes and len(shapes[dim]) == 1:
            dims.append(shapes[dim][0])
        else:
            named = f"'{dim}'" if isinstance(dim, str) else "(unnamed)"
            raise UsageError(
                f"model input '{spec.name}' has dynamic dimension {named} at position {position}",
                hint=f"give its size, e.g. --shape {dim if isinstance(dim, str) else spec.name}=16",
            )
    return dims


def _values(spec: TensorSpec, dims: list[int], rng: np.random.Generator) -> np.ndarray:
    dtype = spec.dtype
    if dtype is None:
        raise MappingError(
            f"model input '{spec.name}' has type {spec.type}, which bench cannot generate",
            hint="bench with real rows: --data FILE.parquet",
        )
    if dtype.kind == "O":
        return np.array(rng.choice(np.array(_WORDS, dtype=object), size=dims), dtype=object)
    if dtype.kind == "f":
        return rng.standard_normal(dims).astype(dtype)
    if dtype.kind == "b":
        return rng.random(dims) < 0.5
    return rng.integers(0, 10, size=dims).astype(dtype)


@dataclass
class GeneratedInputs:
    """Seeded synthetic feeds that match the model's input types and shapes."""

    signature: ModelSignature
    shapes: dict[str, tuple[int, ...]]
    seed: int = 0
    description: str = "generated from the model signature"

    def feeds(self, batch_size: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        return {
            spec.name: _values(spec, _dims(spec, batch_size, self.shapes), rng)
            for spec in self.signature.inputs
        }


@dataclass
class DataRows:
    """Feeds cut from real rows; rows are repeated when a batch needs more than there are."""

    arrays: dict[str, np.ndarray]
    rows: int
    description: str

    def feeds(self, batch_size: int) -> dict[str, np.ndarray]:
        if batch_size <= self.rows:
            return {name: values[:batch_size] for name, values in self.arrays.items()}
        take = np.arange(batch_size) % self.rows
        return {name: np.ascontiguousarray(v[take]) for name, v in self.arrays.items()}

    def chunks(self, batch_size: int) -> list[dict[str, np.ndarray]]:
        """Every row once, in model calls of at most ``batch_size`` rows."""
        return [
            {name: values[start : start + batch_size] for name, values in self.arrays.items()}
            for start in range(0, self.rows, batch_size)
        ]


def load_rows(
    path: Path,
    signature: ModelSignature,
    *,
    features: Sequence[str] | None = None,
    limit: int | None = None,
) -> DataRows:
    """Real model feeds from a Parquet file or directory: up to ``limit`` rows (None: all).

    Rows the mapping rejects (nulls, unparseable values) are left out, as ``batch`` would.
    """
    files = discover_parquet(path)
    if not files:
        raise InputError(f"no .parquet files under {path}")
    parts: dict[str, list[np.ndarray]] = {spec.name: [] for spec in signature.inputs}
    rows = 0
    for item in files:
        parquet = open_parquet(item.path)
        try:
            columns = {field.name: field.type for field in parquet.schema_arrow}
            plan = plan_inputs(signature, columns, features)
            for batch in parquet.iter_batches(batch_size=65536, columns=list(plan.columns)):
                feeds = build_feeds(plan, batch)
                for name, values in feeds.arrays.items():
                    parts[name].append(values)
                rows += len(feeds.accepted)
                if limit is not None and rows >= limit:
                    break
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot read {item.path}: {exc}".splitlines()[0]) from exc
        finally:
            parquet.close()
        if limit is not None and rows >= limit:
            break
    if rows == 0:
        raise InputError(f"no row under {path} can feed the model", hint="check for nulls")
    arrays = {name: np.concatenate(chunks)[: limit or rows] for name, chunks in parts.items()}
    count = min(rows, limit) if limit is not None else rows
    return DataRows(arrays, count, f"{count:,} real rows from {path}")
