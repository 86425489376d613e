"""The scoring core shared by every command: Arrow batch in, score columns out. No I/O.

Every model output becomes columns: a 1-D output keeps its name, a 2-D output of width k
becomes ``<output>_0`` … ``<output>_<k-1>``, and a skl2onnx ZipMap output (a list of
``{class: probability}`` maps) becomes ``<output>_<class>``. Rows the model cannot take are
rejected with a reason, never dropped silently; so are rows whose scores come out NaN.

With a remote model (:class:`streamscore.model.base.SubmittingModel`) ``prepare`` also sends
the request, so several are in flight while earlier batches are written; rows the server
refuses are rejected with a reason starting ``remote_rejected:`` (:func:`rejection_kind`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from streamscore.arrays import from_numpy, to_numpy
from streamscore.errors import ModelError, UsageError
from streamscore.mapping import Feeds, InputPlan, build_feeds, plan_inputs, source_fields
from streamscore.model.base import Model, Pending, SubmittingModel

REASON_COLUMN = "_reject_reason"
# The fewest rows a sliced model call gets (short tails are padded with copies of their last
# row, whose scores are dropped). On several threads, ONNX Runtime's tree ensembles sum the
# trees of calls of up to 50 rows in another order than larger calls, so the last bit of a
# row's score would depend on where its batch happened to end.
MIN_CALL_ROWS = 64
REJECTED = "rejected"  # a row the mapping or the model could not score
REMOTE_REJECTED = "remote_rejected"  # a row a model server refused, with its message


def rejection_kind(reason: str) -> str:
    """The dead-letter kind of a rejection reason: ``remote_rejected`` or ``rejected``."""
    return REMOTE_REJECTED if reason.startswith(REMOTE_REJECTED + ":") else REJECTED


@dataclass(frozen=True)
class Submitted:
    """Feeds already sent to a remote model, ``step`` rows per request; ``pending`` gives
    each request's answer, in order."""

    feeds: Feeds
    pending: tuple[Pending, ...]
    step: int


@dataclass(frozen=True)
class ScoredBatch:
    """Scores for the accepted rows of one input batch, and the rejected rows' reasons."""

    scores: pa.RecordBatch  # score columns only, one row per accepted input row
    accepted: np.ndarray  # int64 indices of the input rows that were scored
    rejected: np.ndarray  # int64 indices of the input rows that were not
    reasons: list[str]

    def with_passthrough(self, batch: pa.RecordBatch, keep: Sequence[str]) -> pa.RecordBatch:
        """The kept input columns of the scored rows, followed by the score columns."""
        if not keep:
            kept = None
        elif len(self.accepted) == batch.num_rows:  # the usual case: nothing to filter
            kept = batch.select(list(keep))
        else:
            kept = batch.select(list(keep)).take(from_numpy(self.accepted))
        arrays = (kept.columns if kept is not None else []) + self.scores.columns
        names = (list(keep) if kept is not None else []) + self.scores.schema.names
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def rejected_rows(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The rejected input rows, every original column, plus ``_reject_reason``."""
        rows = batch.take(from_numpy(self.rejected.astype(np.int64, copy=False)))
        return rows.append_column(REASON_COLUMN, pa.array(self.reasons, type=pa.string()))


def _output_columns(name: str, value: Any) -> list[tuple[str, pa.Array]]:
    if isinstance(value, list):  # ZipMap: one {label: probability} dict per row
        keys = list(value[0]) if value else []
        return [
            (f"{name}_{key}", pa.array([row[key] for row in value], type=pa.float32()))
            for key in keys
        ]
    array = np.asarray(value)
    if array.ndim == 1:
        return [(name, from_numpy(array))]
    if array.ndim == 2:
        return [(f"{name}_{i}", from_numpy(array[:, i])) for i in range(array.shape[1])]
    raise ModelError(f"model output '{name}' has {array.ndim} dimensions; streamscore needs 1 or 2")


class Scorer:
    """Scores Arrow batches with one model, one input plan and one output selection."""

    def __init__(
        self,
        model: Model,
        plan: InputPlan,
        *,
        outputs: Sequence[str] | None = None,
        reject_nan: bool = False,
        batch_size: int | None = None,
    ) -> None:
        """``batch_size`` caps the rows of one model call: prepared feeds of more rows (a
        large I/O chunk) are run in slices of that size, none shorter than
        :data:`MIN_CALL_ROWS`, so scores do not depend on where slices end. None runs the
        feeds in one call, as they come."""
        self.model = model
        # Checked once: a runtime protocol check costs microseconds, on every small batch.
        self._submitting = model if isinstance(model, SubmittingModel) else None
        self.plan = plan
        self.reject_nan = reject_nan
        self.batch_size = batch_size
        self.outputs = OutputSelection.parse(model.signature.output_names(), outputs)
        known = self.score_schema()
        unknown = self.outputs.columns - set(known.names) if known is not None else set()
        if unknown:
            raise UsageError(
                f"--outputs names unknown column(s): {', '.join(sorted(unknown))}",
                hint=f"columns: {', '.join(known.names) if known is not None else ''}",
            )

    @classmethod
    def for_schema(
        cls,
        model: Model,
        schema: pa.Schema,
        *,
        features: Sequence[str] | None = None,
        outputs: Sequence[str] | None = None,
        reject_nan: bool = False,
        batch_size: int | None = None,
    ) -> Scorer:
        """Plan the input mapping against ``schema`` and build a scorer (raises MappingError)."""
        columns = {field.name: field.type for field in schema}
        plan = plan_inputs(model.signature, columns, features)
        return cls(model, plan, outputs=outputs, reject_nan=reject_nan, batch_size=batch_size)

    def score_schema(self) -> pa.Schema | None:
        """The score columns' names and types, known from the model's signature alone.

        None when they depend on the data (a ZipMap's classes, an output of unknown width).
        """
        fields: list[pa.Field] = []
        for name in self.outputs.run:
            spec = next(s for s in self.model.signature.outputs if s.name == name)
            dtype = spec.dtype
            if dtype is None or len(spec.shape) not in (1, 2):
                return None
            if len(spec.shape) == 1:
                columns = [name]
            elif spec.width is not None:
                columns = [f"{name}_{i}" for i in range(spec.width)]
            else:
                return None
            arrow = pa.string() if dtype.kind == "O" else pa.from_numpy_dtype(dtype)
            fields += [pa.field(c, arrow) for c in columns if self.outputs.keeps(name, c)]
        return pa.schema(fields)

    def score(self, batch: pa.RecordBatch) -> ScoredBatch:
        """Score one batch. Bad rows are rejected with a reason; the rest get scores."""
        return self.run(self.prepare(batch))

    @property
    def in_flight(self) -> int:
        """How many prepared batches may wait for ``run`` (a remote model's concurrency)."""
        return self._submitting.in_flight if self._submitting is not None else 0

    def prepare(self, batch: pa.RecordBatch) -> Feeds | Submitted:
        """Convert a batch into model feeds (CPU work a reader thread can do ahead); a
        remote model gets them sent now."""
        feeds = build_feeds(self.plan, batch, reject_nan=self.reject_nan)
        model = self._submitting
        if model is not None and len(feeds.accepted):
            rows = len(feeds.accepted)
            step = self.batch_size or rows  # one request per --batch-size rows
            pending = tuple(
                model.submit(
                    self.outputs.run,
                    {name: values[start : start + step] for name, values in feeds.arrays.items()},
                )
                for start in range(0, rows, step)
            )
            return Submitted(feeds, pending, step)
        return feeds

    def run(self, prepared: Feeds | Submitted) -> ScoredBatch:
        """Run the model on prepared feeds and turn its outputs into score columns."""
        if isinstance(prepared, Submitted):
            return self._answered(prepared)
        feeds = prepared
        if len(feeds.accepted) == 0:
            return ScoredBatch(_EMPTY, feeds.accepted, feeds.rejected, feeds.reasons)
        values = self._run_model(feeds.arrays, len(feeds.accepted))
        return self._scored(values, feeds.accepted, feeds.rejected, feeds.reasons)

    def _answered(self, submitted: Submitted) -> ScoredBatch:
        feeds = submitted.feeds
        answers = [pending.result() for pending in submitted.pending]
        offsets = [i * submitted.step for i in range(len(answers))]
        kept = np.concatenate([a.kept + o for a, o in zip(answers, offsets, strict=True)])
        refused = np.concatenate([a.rejected + o for a, o in zip(answers, offsets, strict=True)])
        rejected, reasons = feeds.rejected, feeds.reasons
        if len(refused):
            more = feeds.accepted[refused.astype(np.int64)]
            everything = np.concatenate([rejected, more])
            texts = reasons + [f"{REMOTE_REJECTED}: {m}" for a in answers for m in a.messages]
            order = np.argsort(everything, kind="stable")
            rejected, reasons = everything[order], [texts[i] for i in order]
        accepted = feeds.accepted[kept.astype(np.int64)]
        if len(accepted) == 0:
            return ScoredBatch(_EMPTY, accepted, rejected, reasons)
        answered = [a for a in answers if len(a.kept)]
        values = [
            np.concatenate([a.values[o] for a in answered]) for o in range(len(self.outputs.run))
        ]
        return self._scored(values, accepted, rejected, reasons)

    def _scored(
        self, values: Sequence[Any], accepted: np.ndarray, rejected: np.ndarray, reasons: list[str]
    ) -> ScoredBatch:
        columns = [
            (column, array)
            for name, value in zip(self.outputs.run, values, strict=True)
            for column, array in _output_columns(name, value)
            if self.outputs.keeps(name, column)
        ]
        missing = self.outputs.columns - {column for column, _ in columns}
        if missing:
            raise UsageError(f"--outputs names unknown column(s): {', '.join(sorted(missing))}")
        scores = pa.RecordBatch.from_arrays([a for _, a in columns], names=[n for n, _ in columns])
        return _drop_nan_scores(scores, accepted, rejected, reasons)

    def _run_model(self, arrays: dict[str, np.ndarray], rows: int) -> list[Any]:
        """The model's outputs for all rows, computed ``batch_size`` rows per call."""
        if self.batch_size is None:
            return self.model.run(self.outputs.run, arrays)
        parts = [
            self._run_slice(arrays, start, min(rows, start + self.batch_size))
            for start in range(0, rows, self.batch_size)
        ]
        if len(parts) == 1:
            return parts[0]
        return [_concatenate([part[o] for part in parts]) for o in range(len(parts[0]))]

    def _run_slice(self, arrays: dict[str, np.ndarray], start: int, stop: int) -> list[Any]:
        # Row slices of C-contiguous feeds are contiguous views: no copy per call.
        feeds = {name: values[start:stop] for name, values in arrays.items()}
        short = MIN_CALL_ROWS - (stop - start)
        if short <= 0 or not self._batch_dimension_is_free:
            return self.model.run(self.outputs.run, feeds)
        padded = {
            name: np.concatenate([values, np.repeat(values[-1:], short, axis=0)])
            for name, values in feeds.items()
        }
        values = self.model.run(self.outputs.run, padded)
        return [v if np.ndim(v) == 0 else v[: stop - start] for v in values]

    @property
    def _batch_dimension_is_free(self) -> bool:
        return all(
            spec.shape and not isinstance(spec.shape[0], int)
            for spec in self.model.signature.inputs
        )


def _concatenate(parts: list[Any]) -> Any:
    if isinstance(parts[0], list):  # ZipMap: lists of dicts
        return [row for part in parts for row in part]
    if np.ndim(parts[0]) == 0:  # not one value per row: _output_columns says so
        return parts[0]
    return np.concatenate(parts)


_EMPTY = pa.RecordBatch.from_pydict({})


def scorer_for_records(
    model: Model,
    *,
    features: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    reject_nan: bool = False,
) -> tuple[Scorer, dict[str, pa.DataType]]:
    """A scorer for schemaless records (JSON), and the fields it reads with their types.

    The model, not the data, decides the field types (:func:`streamscore.mapping.source_fields`);
    a decoder then reads exactly those fields.
    """
    fields = source_fields(model.signature, features)
    scorer = Scorer.for_schema(
        model,
        pa.schema(list(fields.items())),
        features=features,
        outputs=outputs,
        reject_nan=reject_nan,
    )
    return scorer, fields


@dataclass(frozen=True)
class OutputSelection:
    """Which model outputs to run, and which of their columns to keep.

    ``--outputs probabilities`` keeps every column of that output; ``--outputs
    probabilities_1`` keeps that one column.
    """

    run: tuple[str, ...]
    whole: frozenset[str]
    columns: frozenset[str]

    @classmethod
    def parse(cls, names: Sequence[str], selection: Sequence[str] | None) -> OutputSelection:
        if not selection:
            return cls(tuple(names), frozenset(names), frozenset())
        run: list[str] = []
        whole: set[str] = set()
        columns: set[str] = set()
        for item in selection:
            match = re.fullmatch(r"(.+)_([^_]+)", item)
            if item in names:
                whole.add(item)
                run.append(item)
            elif match and match.group(1) in names:
                columns.add(item)
                run.append(match.group(1))
            else:
                raise UsageError(
                    f"--outputs: model has no output '{item}'",
                    hint=f"outputs: {', '.join(names)}",
                )
        return cls(tuple(dict.fromkeys(run)), frozenset(whole), frozenset(columns))

    def keeps(self, output: str, column: str) -> bool:
        return output in self.whole or column in self.columns


def _drop_nan_scores(
    scores: pa.RecordBatch, accepted: np.ndarray, rejected: np.ndarray, reasons: list[str]
) -> ScoredBatch:
    nan = np.zeros(scores.num_rows, dtype=bool)
    for column in scores.columns:
        if pa.types.is_floating(column.type):
            nan |= np.isnan(to_numpy(column))
    if not nan.any():
        return ScoredBatch(scores, accepted, rejected, reasons)
    more = accepted[nan]
    all_rejected = np.concatenate([rejected, more])
    all_reasons = reasons + ["model returned NaN (an input is likely NaN)"] * len(more)
    order = np.argsort(all_rejected, kind="stable")
    return ScoredBatch(
        scores.filter(pa.array(~nan)),
        accepted[~nan],
        all_rejected[order],
        [all_reasons[i] for i in order],
    )
