"""Where the two sides' scores come from, as streams of matched rows (:class:`PairedBatch`).

* :class:`ModelPairs`: score Parquet DATA with models A and B in one pass of the shared
  pipeline (the same input mapping and scorer as ``batch``); rows match by position.
* :class:`ScoredPairs`: two ``batch`` output folders, full outer join on ``--key`` (polars'
  streaming engine; it holds one side's key and score columns in its hash table).
* :class:`streamscore.compare.topics.TopicPairs`: two output topics (its own module, as it
  needs the Kafka client).

A source pushes each batch of matched rows, with the score columns compared, to a callback:
the pipeline's writer thread can then hand them on without anything piling up.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamscore.compare.comparison import PairedBatch
from streamscore.compare.report import Side
from streamscore.config import READ_ROWS, ScoringOptions
from streamscore.errors import InputError, UsageError
from streamscore.pipeline import Sink, SourceBatch, run_pipeline
from streamscore.reporting import Reporter
from streamscore.scoring import ScoredBatch, Scorer

Emit = Callable[[Sequence[str], PairedBatch], None]


class PairSource(ABC):
    """Matched rows of A and B. Implement :meth:`feed`; set ``a`` and ``b`` (the sides)."""

    a: Side
    b: Side

    @abstractmethod
    def feed(self, emit: Emit) -> None:
        """Call ``emit(columns, batch)`` for every batch of matched rows, with the counts of
        rows only one side has; ``columns`` may be empty until the source knows them."""


def choose_columns(
    a_numeric: Sequence[str],
    b_numeric: Sequence[str],
    wanted: Sequence[str] | None,
    exclude: Sequence[str] = (),
    where: str = "",
) -> list[str]:
    """The score columns to compare: ``wanted``, or every numeric column both sides have."""
    common = [c for c in a_numeric if c in set(b_numeric) and c not in set(exclude)]
    if not common:
        raise UsageError(f"the two sides have no numeric score column in common{where}")
    if wanted:
        missing = [c for c in wanted if c not in common]
        if missing:
            raise UsageError(
                f"--columns {', '.join(missing)}: not a numeric column of both sides{where}",
                hint=f"both have: {', '.join(common) or 'no numeric column'}",
            )
        return list(wanted)
    return common


def _numeric(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if pa.types.is_floating(f.type) or pa.types.is_integer(f.type)]


def _matrix(batch: pa.RecordBatch, columns: Sequence[str], rows: np.ndarray) -> np.ndarray:
    """float64 rows x columns of ``columns`` at ``rows`` (nulls as NaN)."""
    out = np.empty((len(rows), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        values = batch.column(name).to_numpy(zero_copy_only=False)
        out[:, j] = np.asarray(values, dtype=np.float64)[rows]
    return out


# --- models: one pass of the shared pipeline, two scorers --------------------------------------


@dataclass(frozen=True)
class PairScored(ScoredBatch):
    """A batch scored by both models: ``accepted`` are the rows both scored."""

    scored_a: ScoredBatch
    scored_b: ScoredBatch
    in_a: np.ndarray  # positions in scored_a.scores of the rows both scored
    in_b: np.ndarray


class PairScorer:
    """Scores each batch with two scorers (a BatchScorer for the shared pipeline)."""

    def __init__(self, a: Scorer, b: Scorer) -> None:
        self.a, self.b = a, b

    def prepare(self, batch: pa.RecordBatch) -> tuple[Any, Any, int]:
        return self.a.prepare(batch), self.b.prepare(batch), batch.num_rows

    def run(self, prepared: tuple[Any, Any, int]) -> PairScored:
        feeds_a, feeds_b, rows = prepared
        a, b = self.a.run(feeds_a), self.b.run(feeds_b)
        common, in_a, in_b = np.intersect1d(
            a.accepted, b.accepted, assume_unique=True, return_indices=True
        )
        rejected = np.setdiff1d(np.arange(rows, dtype=np.int64), common, assume_unique=True)
        why_a = dict(zip(a.rejected.tolist(), a.reasons, strict=True))
        why_b = dict(zip(b.rejected.tolist(), b.reasons, strict=True))
        reasons = [
            "; ".join(f"{side}: {why[r]}" for side, why in (("A", why_a), ("B", why_b)) if r in why)
            for r in rejected.tolist()
        ]
        return PairScored(
            a.scores.take(pa.array(in_a)),
            common.astype(np.int64),
            rejected,
            reasons,
            scored_a=a,
            scored_b=b,
            in_a=in_a,
            in_b=in_b,
        )


class _PairSink(Sink):
    """Turns each doubly scored batch into a PairedBatch for ``emit``."""

    def __init__(
        self,
        file: str,
        keep: Sequence[str],
        wanted: Sequence[str] | None,
        columns: list[str] | None,
        emit: Emit,
    ) -> None:
        self.file, self.keep, self.wanted = file, list(keep), wanted
        self.columns = columns
        self.emit = emit
        self.position = 0

    def write(self, batch: SourceBatch, scored: ScoredBatch) -> None:
        assert isinstance(scored, PairScored)
        a, b = scored.scored_a, scored.scored_b
        if self.columns is None and len(a.accepted) and len(b.accepted):
            self.columns = choose_columns(
                _numeric(a.scores.schema), _numeric(b.scores.schema), self.wanted
            )
        rows = batch.rows
        start, common = self.position, scored.accepted
        self.position += rows.num_rows

        def describe(i: int) -> dict[str, Any]:
            row = int(common[i])
            kept = {name: rows.column(name)[row].as_py() for name in self.keep}
            return {"key": f"{self.file}#{start + row}", "keep": kept}

        columns = self.columns or []
        only_a = len(a.accepted) - len(common)
        only_b = len(b.accepted) - len(common)
        neither = rows.num_rows - len(common) - only_a - only_b
        paired = PairedBatch(
            _matrix(a.scores, columns, scored.in_a),
            _matrix(b.scores, columns, scored.in_b),
            describe,
            only_a=only_a,
            only_b=only_b,
            neither=neither,
        )
        self.emit(columns, paired)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class ModelPairs(PairSource):
    """Score DATA with two models in one pass; rows pair up by position in the file."""

    def __init__(
        self,
        data: Path,
        scoring_a: ScoringOptions,
        scoring_b: ScoringOptions,
        wanted: Sequence[str] | None,
        reporter: Reporter,
    ) -> None:
        from streamscore.model import resolve_model
        from streamscore.model.session import load_model
        from streamscore.sources.parquet import discover_parquet

        self.data = data
        self.scoring_a, self.scoring_b = scoring_a, scoring_b
        self.wanted = wanted
        self.reporter = reporter
        self.inputs = discover_parquet(data)
        if not self.inputs:
            raise InputError(f"no .parquet files under {data}")
        self.models = [
            load_model(
                resolve_model(s.model, s.registry),
                provider=s.provider,
                threads=s.call_threads,
                spin=False,
            )
            for s in (scoring_a, scoring_b)
        ]
        self.a, self.b = (
            Side(str(m.ref.path), m.ref.name, m.ref.version, m.ref.sha256) for m in self.models
        )
        self._found: list[str] | None = None

    def feed(self, emit: Emit) -> None:
        from streamscore.sources.parquet import ParquetSource, open_parquet

        def remember(columns: Sequence[str], paired: PairedBatch) -> None:
            if columns:
                self._found = list(columns)
            emit(columns, paired)

        total = 0
        schemas = []
        for item in self.inputs:
            parquet = open_parquet(item.path)
            schemas.append(parquet.schema_arrow)
            total += parquet.metadata.num_rows
            parquet.close()
        self.reporter.add_task("rows", "rows", total)
        for item, schema in zip(self.inputs, schemas, strict=True):
            scorers = [
                Scorer.for_schema(
                    model,
                    schema,
                    features=s.features,
                    outputs=s.outputs,
                    reject_nan=s.reject_nan,
                    batch_size=s.batch_size,
                )
                for model, s in zip(self.models, (self.scoring_a, self.scoring_b), strict=True)
            ]
            inputs = tuple(dict.fromkeys(scorers[0].plan.columns + scorers[1].plan.columns))
            keep = self.scoring_a.keep.resolve(list(schema.names), inputs)
            read = [n for n in schema.names if n in set(inputs) | set(keep)]
            sink = _PairSink(str(item.relative), keep, self.wanted, self._found, remember)
            # Read in batch's chunks; the scorers run the models --batch-size rows per call.
            source = ParquetSource(item.path, read, max(READ_ROWS, self.scoring_a.batch_size))

            def progress(batch: SourceBatch, _scored: ScoredBatch) -> None:
                self.reporter.advance("rows", batch.rows.num_rows)

            run_pipeline(source, PairScorer(*scorers), sink, on_batch=progress)


# --- two batch output folders, joined on a key -------------------------------------------------


class ScoredPairs(PairSource):
    """Two ``batch`` outputs joined on ``key`` (full outer join: unmatched rows counted)."""

    def __init__(
        self,
        dir_a: Path,
        dir_b: Path,
        key: str,
        keep: Sequence[str],
        wanted: Sequence[str] | None,
        batch_rows: int = 65536,
    ) -> None:
        import polars as pl

        from streamscore.sources.parquet import discover_parquet

        self.key, self.keep, self.batch_rows = key, list(keep), batch_rows
        frames = []
        schemas = []
        for option, root in (("A", dir_a), ("B", dir_b)):
            files = [str(item.path) for item in discover_parquet(root)]
            if not files:
                raise InputError(f"--scored {option}: no .parquet files under {root}")
            frame = pl.scan_parquet(files)
            try:
                schema = frame.collect_schema()
            except (pl.exceptions.PolarsError, OSError) as exc:
                message = str(exc).splitlines()[0]
                raise InputError(f"cannot read --scored {option} {root}: {message}") from exc
            for name in (key, *self.keep):
                if name not in schema:
                    raise InputError(
                        f"--scored {option} {root} has no column '{name}'",
                        hint=f"columns: {', '.join(list(schema)[:12])}",
                    )
            frames.append(frame)
            schemas.append(schema)
        stamps = (_batch_stamps(dir_a), _batch_stamps(dir_b))
        # By default only the columns batch recorded as scores (not kept input columns).
        recorded = (None, None) if wanted else tuple(stamp.scores for stamp in stamps)
        numeric = [
            [n for n, t in schema.items() if t.is_numeric() and (scores is None or n in scores)]
            for schema, scores in zip(schemas, recorded, strict=True)
        ]
        self.columns = choose_columns(
            numeric[0], numeric[1], wanted, exclude=[key, *self.keep], where=" (--scored)"
        )
        # The model batch recorded, when every output file names the same one.
        self.a, self.b = (
            Side(str(root), *(stamp.model or (None, None, None)))
            for root, stamp in zip((dir_a, dir_b), stamps, strict=True)
        )
        # polars reads the first file's schema only: name a later file that lacks a column.
        needed = [key, *self.keep, *self.columns]
        for option, stamp in zip(("A", "B"), stamps, strict=True):
            stamp.check_columns(needed, f"--scored {option}")
        self._frames = frames
        self._where = f"--scored A {dir_a} and B {dir_b}"
        for option, frame, root in zip(("A", "B"), frames, (dir_a, dir_b), strict=True):
            with _polars_errors(f"cannot read --scored {option} {root}"):
                _check_unique(frame, key, f"--scored {option} {root}")

    def feed(self, emit: Emit) -> None:
        import polars as pl

        a, b = self._frames
        cols = self.columns
        left = a.select(
            pl.col(self.key),
            *(pl.col(c).cast(pl.Float64).alias(f"a.{c}") for c in cols),
            *(pl.col(c).alias(f"keep.{c}") for c in self.keep),
            pl.lit(True).alias("_in_a"),
        )
        right = b.select(
            pl.col(self.key),
            *(pl.col(c).cast(pl.Float64).alias(f"b.{c}") for c in cols),
            pl.lit(True).alias("_in_b"),
        )
        joined = left.join(right, on=self.key, how="full", coalesce=True, nulls_equal=False)
        with _polars_errors(f"cannot join {self._where} on '{self.key}'"):
            for frame in joined.collect_batches(chunk_size=self.batch_rows):
                self._emit_frame(frame, emit)

    def _emit_frame(self, frame: Any, emit: Emit) -> None:
        import polars as pl

        cols = self.columns
        in_a = frame["_in_a"].fill_null(False).to_numpy()
        in_b = frame["_in_b"].fill_null(False).to_numpy()
        both = in_a & in_b
        matched = frame.filter(pl.Series(both))
        keys = matched[self.key]
        kept = {c: matched[f"keep.{c}"] for c in self.keep}

        def describe(
            i: int, keys: pl.Series = keys, kept: dict[str, pl.Series] = kept
        ) -> dict[str, Any]:
            return {"key": keys[i], "keep": {c: values[i] for c, values in kept.items()}}

        paired = PairedBatch(
            _frame_matrix(matched, [f"a.{c}" for c in cols]),
            _frame_matrix(matched, [f"b.{c}" for c in cols]),
            describe,
            only_a=int(np.count_nonzero(in_a & ~in_b)),
            only_b=int(np.count_nonzero(in_b & ~in_a)),
        )
        emit(cols, paired)


Model = tuple[str, str, str]  # name, version, sha256


@dataclass(frozen=True)
class _Stamps:
    """What ``batch`` recorded in one side's outputs, and each file's column names."""

    scores: set[str] | None  # the score columns (None if a file did not record them)
    model: Model | None  # None unless every file names the same one
    files: dict[Path, list[str]]

    def check_columns(self, needed: Sequence[str], where: str) -> None:
        for path, names in self.files.items():
            present = set(names)
            missing = [name for name in needed if name not in present]
            if missing:
                raise InputError(
                    f"{where} {path} has no column {', '.join(repr(m) for m in missing)}",
                    hint="every file of a side needs the key and the compared columns",
                )


@contextmanager
def _polars_errors(what: str) -> Iterator[None]:
    """A polars error (unreadable file, key types that do not join) as a one-line InputError."""
    import polars as pl

    try:
        yield
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{what}: {first}") from exc


def _batch_stamps(root: Path) -> _Stamps:
    """What ``batch`` recorded in the outputs under ``root`` (see :class:`_Stamps`)."""
    from streamscore.sources.parquet import discover_parquet

    found: set[str] | None = set()
    models: set[Model | None] = set()
    files: dict[Path, list[str]] = {}
    for item in discover_parquet(root):
        try:
            footer = pq.read_metadata(item.path)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot read {item.path}: {exc}".splitlines()[0]) from exc
        files[item.path] = footer.schema.to_arrow_schema().names
        metadata = footer.metadata or {}
        names = metadata.get(b"streamscore.score_columns")
        if names is None:
            found = None
        elif found is not None:
            found.update(names.decode().split(","))
        name, version, sha256 = (
            metadata.get(f"streamscore.model_{key}".encode())
            for key in ("name", "version", "sha256")
        )
        if name is None or version is None or sha256 is None:
            models.add(None)
        else:
            models.add((name.decode(), version.decode(), sha256.decode()))
    model = next(iter(models)) if len(models) == 1 else None
    return _Stamps(found, model, files)


def _frame_matrix(frame: Any, names: Sequence[str]) -> np.ndarray:
    out = np.empty((frame.height, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        out[:, j] = frame[name].fill_null(float("nan")).to_numpy()
    return out


def _check_unique(frame: Any, key: str, where: str) -> None:
    import polars as pl

    repeated = (
        frame.group_by(key)
        .agg(pl.len().alias("n"))
        .filter(pl.col("n") > 1)
        .head(1)
        .collect(engine="streaming")
    )
    if repeated.height:
        value, count = repeated[key][0], repeated["n"][0]
        raise InputError(
            f"{where}: key column '{key}' is not unique ({value!r} appears {count} times)",
            hint="--key must name a column with one row per key",
        )
