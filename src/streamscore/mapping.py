"""Input mapping: which columns feed which model input, and converting Arrow data to feeds.

Two model shapes are supported:

* one input per column (what skl2onnx makes from a DataFrame pipeline: ``[N, 1]`` inputs of
  float, int64 or string): each input is fed from the column of the same name;
* one 2-D numeric input ``[N, k]``: fed from the columns named by ``features``, or else from
  the model's ``feature_names`` metadata (comma-separated, in input order).

Planning (:func:`plan_inputs`) checks names and types once, before any bulk reading.
Conversion (:func:`build_feeds`) never fails on a bad value: rows that cannot be fed (null,
unparseable string, non-integer for an integer input, NaN when rejected) are set aside with
a reason, and the rest are fed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from streamscore.arrays import to_numpy
from streamscore.errors import MappingError
from streamscore.model.signature import ModelSignature, TensorSpec

FEATURE_NAMES_KEY = "feature_names"
# Reasons quote the offending value ("cannot cast 'abc' in column …", "value 1.5 in column
# …"); summaries count reasons by kind, with the value masked.
_REASON_VALUE = re.compile(r"^(cannot cast |value )(.+?)( in column )")


def reason_kind(reason: str) -> str:
    """A rejection reason without the offending value, for counting reasons by kind."""
    return _REASON_VALUE.sub(r"\1…\3", reason, count=1)


@dataclass(frozen=True)
class InputFeed:
    """One model input and the column(s) that feed it."""

    input: TensorSpec
    columns: tuple[str, ...]
    matrix: bool  # True: columns are stacked into one [N, k] tensor

    @property
    def dtype(self) -> np.dtype[np.generic]:
        dtype = self.input.dtype
        assert dtype is not None  # plan_inputs only accepts supported element types
        return dtype


@dataclass(frozen=True)
class InputPlan:
    """How every model input is fed; built once per model and input schema."""

    feeds: tuple[InputFeed, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the model reads, in first-use order, without repeats."""
        return tuple(dict.fromkeys(col for feed in self.feeds for col in feed.columns))


@dataclass
class Feeds:
    """Model feeds for the accepted rows of one batch, and why the others were rejected."""

    arrays: dict[str, np.ndarray]
    accepted: np.ndarray  # int64 row indices into the batch, ascending
    rejected: np.ndarray  # int64 row indices, ascending
    reasons: list[str]  # one per rejected row, same order


def _is_string(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        return _is_string(dtype.value_type)
    return (
        bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype))
        or str(dtype) == "string_view"
    )


def _is_number(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_null(dtype)
    )


def _check_type(column: str, dtype: pa.DataType, spec: TensorSpec, *, matrix: bool) -> None:
    target = spec.dtype
    if target is None:
        raise MappingError(
            f"model input '{spec.name}' has unsupported type {spec.type}",
            hint="streamscore feeds numeric and string tensors",
        )
    feedable = (
        _is_string(dtype) or pa.types.is_null(dtype)
        if target.kind == "O"
        else _is_number(dtype) or _is_string(dtype)
    )
    if not feedable:
        raise MappingError(
            f"column '{column}' has type {dtype}, which cannot feed model input "
            f"'{spec.name}' ({spec.element_type})",
            # --features only chooses the columns of a 2-D input; other inputs take theirs
            # by name.
            hint="cast the column or choose other columns with --features"
            if matrix
            else "cast the column to a type that fits",
        )


def _feature_names(signature: ModelSignature, features: Sequence[str] | None) -> list[str]:
    if features:
        return list(features)
    listed = signature.metadata.get(FEATURE_NAMES_KEY, "")
    names = [name.strip() for name in listed.split(",") if name.strip()]
    if not names:
        spec = signature.inputs[0]
        raise MappingError(
            f"model input '{spec.name}' is a 2-D tensor and the model has no "
            f"'{FEATURE_NAMES_KEY}' metadata",
            hint="name its columns in order with --features a,b,c",
        )
    return names


def _choose_feeds(
    signature: ModelSignature,
    columns: Mapping[str, pa.DataType],
    features: Sequence[str] | None,
) -> tuple[InputFeed, ...]:
    inputs = signature.inputs
    single = inputs[0] if len(inputs) == 1 else None
    if features and single is None:
        raise MappingError(
            f"--features needs a model with one 2-D input; this model has {len(inputs)} inputs",
            hint="its inputs are fed from the columns of the same names; drop --features",
        )
    matrix_input = single is not None and (
        bool(features)
        or (len(single.shape) == 2 and single.width != 1)
        or (single.name not in columns and FEATURE_NAMES_KEY in signature.metadata)
    )
    if matrix_input:
        assert single is not None
        if not single.is_numeric or len(single.shape) != 2:
            raise MappingError(
                f"--features needs one 2-D numeric model input; '{single.name}' is "
                f"{single.type} with {len(single.shape)} dimension(s)",
            )
        names = _feature_names(signature, features)
        if single.width is not None and single.width != len(names):
            raise MappingError(
                f"model input '{single.name}' takes {single.width} features but "
                f"{len(names)} column names were given",
                hint="pass exactly as many names with --features",
            )
        feeds: tuple[InputFeed, ...] = (InputFeed(single, tuple(names), matrix=True),)
    else:
        feeds = tuple(InputFeed(spec, (spec.name,), matrix=False) for spec in inputs)
    return feeds


def plan_inputs(
    signature: ModelSignature,
    columns: Mapping[str, pa.DataType],
    features: Sequence[str] | None = None,
) -> InputPlan:
    """Decide which columns feed each model input; raise MappingError if any cannot."""
    feeds = _choose_feeds(signature, columns, features)
    for feed in feeds:
        for column in feed.columns:
            if column not in columns:
                raise MappingError(
                    f"column '{column}' needed by model input '{feed.input.name}' is missing",
                    hint=f"available: {_listing(list(columns))}",
                )
            _check_type(column, columns[column], feed.input, matrix=feed.matrix)
    return InputPlan(feeds)


def _listing(names: list[str], shown: int = 12) -> str:
    """``a, b, c`` or, for a long list, its start and how long it is."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])}, … ({len(names)} columns)"


def source_fields(
    signature: ModelSignature, features: Sequence[str] | None = None
) -> dict[str, pa.DataType]:
    """The fields a source without a schema (JSON records) must decode, and as which type.

    Numbers are read as float64 (int64 for integer inputs, bool for boolean ones) and text as
    string; :func:`plan_inputs` then checks these fields exactly as it checks Parquet columns.
    """
    fields: dict[str, pa.DataType] = {}
    for feed in _choose_feeds(signature, {}, features):
        dtype = feed.input.dtype
        kind = dtype.kind if dtype is not None else "O"
        natural = {"f": pa.float64(), "i": pa.int64(), "u": pa.int64(), "b": pa.bool_()}
        for column in feed.columns:
            fields.setdefault(column, natural.get(kind, pa.string()))
    return fields


class _Rejections:
    """First reason per row; most batches have none, so storage is made on demand."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reasons: dict[int, str] = {}

    def add(self, bad: np.ndarray, reason_for: object) -> None:
        for row in np.flatnonzero(bad):
            index = int(row)
            if index not in self.reasons:
                assert callable(reason_for)
                self.reasons[index] = reason_for(index)


def _describe(column: str, spec: TensorSpec) -> str:
    return f"column '{column}' (model input '{spec.name}')"


def _to_strings(array: pa.Array, column: str, spec: TensorSpec, rej: _Rejections) -> np.ndarray:
    if pa.types.is_dictionary(array.type) or pa.types.is_null(array.type):
        array = array.cast(pa.string())
    if array.null_count:
        rej.add(
            array.is_null().to_numpy(zero_copy_only=False),
            lambda _: f"null in {_describe(column, spec)}",
        )
        array = array.fill_null("")
    try:
        return np.asarray(array.to_numpy(zero_copy_only=False), dtype=object)
    except pa.ArrowException as exc:  # the one check Arrow leaves to the conversion
        raise MappingError(
            f"{_describe(column, spec)} holds text that is not valid UTF-8",
            hint="re-encode the column as UTF-8",
        ) from exc


def _parse_strings(array: pa.Array, target: np.dtype[np.generic]) -> pa.Array:
    kind = pl.Float64 if target.kind == "f" else pl.Int64 if target.kind in "iu" else pl.Boolean
    series = pl.Series(array.cast(pa.large_string())).str.strip_chars().cast(kind, strict=False)
    return series.to_arrow()


def _to_numbers(
    array: pa.Array, column: str, spec: TensorSpec, target: np.dtype[np.generic], rej: _Rejections
) -> np.ndarray:
    where = _describe(column, spec)
    if array.null_count:
        rej.add(array.is_null().to_numpy(zero_copy_only=False), lambda _: f"null in {where}")
    if _is_string(array.type):
        original = array
        array = _parse_strings(array, target)
        unparsed = pc.and_(array.is_null(), original.is_valid()).to_numpy(zero_copy_only=False)
        rej.add(
            unparsed,
            lambda i: f"cannot cast {original[i].as_py()!r} in {where} to {spec.element_type}",
        )
    elif pa.types.is_decimal(array.type) or pa.types.is_null(array.type):
        array = array.cast(pa.float64())
    if array.null_count:  # null rows are rejected above; any placeholder value will do
        array = array.fill_null(False if pa.types.is_boolean(array.type) else 0)
    values = to_numpy(array)
    if target.kind in "iu" and values.dtype.kind == "f":
        info = np.iinfo(target)  # type: ignore[type-var]
        # float(info.max) rounds up to 2**63 (a value that does not fit): compare against
        # the exact power of two above the range instead.
        above = 2.0 ** (info.bits if info.min == 0 else info.bits - 1)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values != np.floor(values))
            bad |= (values < info.min) | (values >= above)
        rej.add(
            bad, lambda i: f"value {values[i].item()!r} in {where} is not a valid {target.name}"
        )
        values = np.where(bad, 0, values)
    elif target.kind in "iu" and values.dtype.kind in "iu" and values.dtype != target:
        info = np.iinfo(target)  # type: ignore[type-var]
        bad = (values < info.min) | (values > info.max)
        rej.add(bad, lambda i: f"value {values[i]} in {where} is out of range for {target.name}")
        values = np.where(bad, 0, values)
    elif (
        target.kind == "f"
        and values.dtype.kind in "fiu"
        and values.dtype.itemsize > target.itemsize
    ):
        # A value that becomes infinity when cast is out of range: the same rule as the
        # fast path of _fill_matrix, so a value's verdict never depends on its batch.
        with np.errstate(over="ignore"):
            bad = np.isinf(values.astype(target)) & np.isfinite(values)
        rej.add(
            bad,
            lambda i: f"value {values[i].item()!r} in {where} is out of range for {target.name}",
        )
        values = np.where(bad, 0, values)
    converted: np.ndarray = values.astype(target, copy=False)
    return converted


def _reject_nan(values: np.ndarray, column: str, spec: TensorSpec, rej: _Rejections) -> None:
    if values.dtype.kind == "f":
        nan = np.isnan(values)
        if nan.any():
            rej.add(nan, lambda _: f"NaN in {_describe(column, spec)}")


# Rows per block when stacking columns into a feed matrix: a [k, block] staging array stays
# in cache, so each column is cast with contiguous writes and the block is transposed into
# the matrix with one copy (measured: ~30 ns/row for 30 features, against ~125 assigning
# straight into the matrix's columns, which strides through memory on large chunks).
_BLOCK_ROWS = 4096


# Up to this many rows, a feed of float columns of one type is stacked by Arrow in one call
# (RecordBatch.to_tensor): a few microseconds whatever the number of columns, against ~7 per
# column column by column, which is most of a small batch's cost (a live tail's micro-batch).
# Above it, row-major stacking strides through memory and the block path below is faster.
SMALL_MATRIX_ROWS = 256
_FLOATS: dict[pa.DataType, np.dtype[np.generic]] = {
    pa.float32(): np.dtype(np.float32),
    pa.float64(): np.dtype(np.float64),
}


@dataclass(frozen=True)
class _Layout:
    """Whether a batch schema's feed columns are floats of one type, and in feed order."""

    schema: pa.Schema
    columns: tuple[str, ...]
    source: np.dtype[np.generic] | None  # None: not one float type
    in_order: bool  # the batch holds exactly the feed's columns, in order


_last_layout: _Layout | None = None  # batches of one topic or file share their schema


def _layout(schema: pa.Schema, columns: tuple[str, ...]) -> _Layout:
    global _last_layout  # noqa: PLW0603 - a one-entry cache; a stale read only costs a lookup
    last = _last_layout
    if last is not None and last.columns == columns and last.schema.equals(schema):
        return last
    types = {schema.field(name).type for name in columns}
    source = _FLOATS.get(types.pop()) if len(types) == 1 else None
    layout = _Layout(schema, columns, source, list(schema.names) == list(columns))
    _last_layout = layout
    return layout


def _small_float_matrix(feed: InputFeed, batch: pa.RecordBatch) -> np.ndarray | None:
    """The feed matrix of a small batch whose feed columns are floats of one type without
    nulls, stacked by Arrow; None when the column-by-column path must decide (other types,
    nulls, a value the cast to the input's type makes infinite)."""
    target = feed.dtype
    if not 0 < batch.num_rows <= SMALL_MATRIX_ROWS or target.kind != "f":
        return None
    layout = _layout(batch.schema, feed.columns)
    if layout.source is None:
        return None
    chosen = batch if layout.in_order else batch.select(list(feed.columns))
    try:
        stacked = np.asarray(chosen.to_tensor(row_major=True))
    except pa.ArrowTypeError:  # nulls
        return None
    with np.errstate(over="ignore"):
        matrix = stacked.astype(target)  # the same cast as below, so the same values
    if _can_overflow(layout.source, target) and not (
        np.isfinite(np.fmin.reduce(matrix, axis=None))
        and np.isfinite(np.fmax.reduce(matrix, axis=None))
    ):
        return None  # an overflow, or an infinity in the source: the other path tells them apart
    return matrix


def _fill_matrix(
    feed: InputFeed, batch: pa.RecordBatch, rej: _Rejections, reject_nan: bool
) -> np.ndarray:
    """Stack the feed's columns into one C-contiguous [N, k] tensor.

    The common case (a float input, numeric columns without nulls) is the hot path of every
    batch: those columns are cast straight into the matrix (block by block, see
    ``_BLOCK_ROWS``), and float64 values too large for float32 are looked for only in blocks
    whose finite extremes are infinite.
    """
    if not reject_nan:
        small = _small_float_matrix(feed, batch)
        if small is not None:
            return small
    target, spec = feed.dtype, feed.input
    n, k = batch.num_rows, len(feed.columns)
    columns: list[np.ndarray] = []
    narrowed: list[int] = []  # direct columns a cast can overflow (float64 into float32)
    for j, column in enumerate(feed.columns):
        array = batch.column(column)
        kind = array.type
        if (
            target.kind == "f"
            and not array.null_count
            and (pa.types.is_floating(kind) or pa.types.is_integer(kind))
        ):
            values = to_numpy(array)
            if _can_overflow(values.dtype, target):
                narrowed.append(j)
        else:
            values = _to_numbers(array, column, spec, target, rej)
        if reject_nan:
            _reject_nan(values, column, spec, rej)
        columns.append(values)
    matrix = np.empty((n, k), dtype=target)
    staged = np.empty((k, min(n, _BLOCK_ROWS)), dtype=target)
    overflowed = False
    with np.errstate(over="ignore"):
        for start in range(0, n, _BLOCK_ROWS):
            stop = min(n, start + _BLOCK_ROWS)
            block = staged[:, : stop - start]
            for j, values in enumerate(columns):
                block[j] = values[start:stop]
            if narrowed and not overflowed:
                # fmin/fmax skip NaN; an infinity is either an overflow or one in the source.
                overflowed = not (
                    np.isfinite(np.fmin.reduce(block, axis=None))
                    and np.isfinite(np.fmax.reduce(block, axis=None))
                )
            np.copyto(matrix[start:stop], block.T)
        for j in narrowed if overflowed else ():
            inf = np.isinf(columns[j].astype(target))
            if inf.any():
                _reject_overflow(feed, batch, j, inf, rej)
    return matrix


@functools.cache
def _can_overflow(source: np.dtype[np.generic], target: np.dtype[np.generic]) -> bool:
    """Whether casting ``source`` numbers to the float ``target`` can give infinity."""
    info = np.finfo(source) if source.kind == "f" else np.iinfo(source)  # type: ignore[type-var]
    return float(info.max) > float(np.finfo(target).max)  # type: ignore[type-var]


def _reject_overflow(
    feed: InputFeed, batch: pa.RecordBatch, j: int, inf: np.ndarray, rej: _Rejections
) -> None:
    column = feed.columns[j]
    source = to_numpy(batch.column(column))
    bad = inf & np.isfinite(source)  # a source infinity stays infinity; that is no overflow
    where = _describe(column, feed.input)
    rej.add(
        bad,
        lambda i: f"value {source[i].item()!r} in {where} is out of range for {feed.dtype.name}",
    )


def build_feeds(plan: InputPlan, batch: pa.RecordBatch, *, reject_nan: bool = False) -> Feeds:
    """Convert one Arrow batch into model feeds; bad rows are set aside with a reason."""
    n = batch.num_rows
    rej = _Rejections(n)
    arrays: dict[str, np.ndarray] = {}
    for feed in plan.feeds:
        target = feed.dtype
        spec = feed.input
        if feed.matrix:
            arrays[spec.name] = _fill_matrix(feed, batch, rej, reject_nan)
            continue
        column = feed.columns[0]
        array = batch.column(column)
        if target.kind == "O":
            values = _to_strings(array, column, spec, rej)
        else:
            values = _to_numbers(array, column, spec, target, rej)
            if reject_nan:
                _reject_nan(values, column, spec, rej)
        arrays[spec.name] = values.reshape(n, 1) if len(spec.shape) == 2 else values
    if not rej.reasons:
        everything = np.arange(n, dtype=np.int64)
        return Feeds(arrays, everything, np.empty(0, dtype=np.int64), [])
    rejected = np.array(sorted(rej.reasons), dtype=np.int64)
    keep = np.ones(n, dtype=bool)
    keep[rejected] = False
    accepted = np.flatnonzero(keep).astype(np.int64)
    arrays = {name: values[keep] for name, values in arrays.items()}
    return Feeds(arrays, accepted, rejected, [rej.reasons[int(i)] for i in rejected])
