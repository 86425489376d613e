"""JSON record values <-> Arrow: decode micro-batches for the model, encode scored rows.

Decoding is the ceiling of a Kafka scoring pipeline, so it was measured (30 float fields plus
4 others, ~450 bytes a record, this project's 2-core CI machine): ``polars.read_ndjson`` on
the batch joined with newlines costs ~1.3 µs a record with an explicit schema and ~1.5 µs
when it also infers the passthrough fields; ``orjson.loads`` alone costs ~3.3 µs a record
(~5.8 µs once the columns are built); ``json.loads`` ~15 µs. So a batch is decoded with one
polars call. One malformed record makes that call fail for the whole batch, so such a batch
is screened record by record with orjson, which names each bad record's problem, and the
good ones are decoded again with one polars call: every scored value is converted by the same
code, and one bad record never costs its neighbours their scores.

Typing rules (the same for every record): a numeric model input takes a JSON number (an
integer input a JSON integer); a string input takes a string (a number or boolean is taken as
its JSON text, as polars does). Missing fields, nulls, other types, ``NaN``/``Infinity``
literals (``nan``: not JSON, though Python's json module writes them), numbers beyond float64
such as ``1e400`` (``out_of_range``), a byte order mark or a lone surrogate (``not_json``),
empty or oversized values and tombstones (null values) are failures with a kind and a message.
A record that names a model field twice is a ``duplicate_field`` failure: decoders disagree
on which of the two values counts, so neither is scored. Finding them costs one regex pass
(in Rust) over the batch; only records that name a model field more often than once are then
parsed again to confirm.

Encoding uses ``polars.DataFrame.write_ndjson`` (~0.6 µs a record against ~2.2 µs for orjson
per row); it writes float32 scores in their shortest form, so they read back bit-identical.

A small batch (``tail`` at a modest rate: tens to hundreds of records) pays polars' fixed
cost per call (~2 ms for decoding, checks included, more under load as its thread pools wake)
instead of its per-record one, so up to ``small_batch`` (256) records whose model fields are
all numbers or booleans are decoded with orjson, with the same typing rules, failures and
messages: a batch without failures is checked column by column (one type test per field),
any other record by record (:meth:`JsonDecoder._screen` decides both ways). A record orjson
could read differently from polars (a duplicate key, a nested or quoted value the quote count
cannot vouch for) sends the batch to polars. Such a batch's scores are written with orjson
too (numpy's float32 scalars serialize in their shortest form, as polars writes them).

Passthrough fields (``--keep`` default or a list of names) are read column-wise too, by the
same polars call (their types inferred from the batch's first rows), whenever that is exact:
every kept field present once in every record, as a string, an integer or a boolean
(checked on each record's bytes, so a value polars would convert, such as a number among
strings, a duplicate key or a nested value, is never taken). Then the output values are
written by one polars call, kept columns and scores together. Other batches take the
per-record path: orjson parses each record and the kept fields are spliced before the
scores (~5 µs a record more).
"""

from __future__ import annotations

import io
import itertools
import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from streamscore.arrays import from_numpy
from streamscore.config import KeepColumns

DEFAULT_MAX_RECORD_BYTES = 1_000_000
SMALL_BATCH = 256  # up to this many records, orjson record by record beats polars' fixed cost

# Failure kinds; they name the problem in dead-letter headers and summaries.
TOMBSTONE = "tombstone"
OVERSIZED = "oversized"
NOT_JSON = "not_json"
NAN = "nan"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
NULL_FIELD = "null_field"
WRONG_TYPE = "wrong_type"
DUPLICATE_FIELD = "duplicate_field"
OUT_OF_RANGE = "out_of_range"

_INT64 = (-(2**63), 2**63 - 1)


class _Kind(Enum):
    """What a model field is decoded as (for the small-batch path: comparing polars types
    costs a microsecond each)."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    TEXT = "text"


@dataclass(frozen=True)
class DecodeFailure:
    """A record that could not be decoded: its position in the batch, kind and message."""

    index: int
    kind: str
    message: str


# Per row: the raw value (--keep all), a dict of the kept fields, or one frame of them.
Passthrough = list[bytes] | list[dict[str, Any]] | pl.DataFrame | None


@dataclass
class DecodedBatch:
    """The decodable records of one batch, as Arrow rows for the model, and the others.

    ``passthrough`` holds, per row, the kept fields: None when nothing is kept, the raw value
    when every field is kept (copied verbatim), else a dict of the kept fields, or all of
    them as one polars frame (one row per decoded row) where that is exact.
    """

    rows: pa.RecordBatch  # the model's fields, one row per decoded record
    index: np.ndarray  # int64: position in the input batch of each row
    passthrough: Passthrough
    failures: list[DecodeFailure] = field(default_factory=list)


def _polars_type(dtype: pa.DataType) -> pl.DataType:
    if pa.types.is_floating(dtype):
        return pl.Float64()
    if pa.types.is_integer(dtype):
        return pl.Int64()
    if pa.types.is_boolean(dtype):
        return pl.Boolean()
    return pl.String()


def _values_of(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """obj -> the values of ``names`` in order, as a tuple (KeyError when one is missing)."""
    if len(names) > 1:
        return operator.itemgetter(*names)
    if names:
        only = names[0]
        return lambda obj: (obj[only],)
    return lambda obj: ()


def _field_type(dtype: pl.DataType) -> _Kind:
    if isinstance(dtype, pl.Float64):
        return _Kind.FLOAT
    if isinstance(dtype, pl.Int64):
        return _Kind.INT
    if isinstance(dtype, pl.Boolean):
        return _Kind.BOOL
    return _Kind.TEXT


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _fits(value: Any, dtype: pl.DataType) -> str | None:
    """None when ``value`` decodes as ``dtype``; else what the field needs."""
    if isinstance(dtype, pl.Float64):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "a number"
    if isinstance(dtype, pl.Int64):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok and _INT64[0] <= value <= _INT64[1] else "an integer (64-bit)"
    if isinstance(dtype, pl.Boolean):
        return None if isinstance(value, bool) else "a boolean"
    ok = isinstance(value, str | int | float)  # polars reads numbers and booleans as text
    return None if ok else "a string"


class JsonDecoder:
    """Decodes batches of JSON object values into the fields a model needs plus passthrough.

    ``fields`` maps each field the model reads to the Arrow type it is decoded as (see
    :func:`streamscore.mapping.source_fields`); ``keep`` chooses the passthrough fields as
    ``--keep`` does for Parquet columns (default: every field that is not a model input).
    Passthrough values are copied as they are, never converted.
    """

    def __init__(
        self,
        fields: Mapping[str, pa.DataType],
        keep: KeepColumns | None = None,
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        small_batch: int = SMALL_BATCH,
    ) -> None:
        """Batches of up to ``small_batch`` records may be decoded record by record."""
        self.fields = {name: _polars_type(dtype) for name, dtype in fields.items()}
        numeric = (pl.Float64, pl.Int64, pl.Boolean)
        self.small_batch = small_batch if all(d in numeric for d in self.fields.values()) else 0
        self._field_types = [_field_type(dtype) for dtype in self.fields.values()]
        self._float_fields = [j for j, t in enumerate(self._field_types) if t is _Kind.FLOAT]
        self._other_fields = [j for j, t in enumerate(self._field_types) if t is not _Kind.FLOAT]
        # obj -> its model fields' values, in order (KeyError when one is missing)
        self._field_values = _values_of(list(self.fields))
        self.schema = pa.schema([(name, dtype) for name, dtype in fields.items()])
        self.keep = keep or KeepColumns()
        self.max_record_bytes = max_record_bytes
        self._empty = pa.RecordBatch.from_pylist([], schema=self.schema)
        self._known: tuple[str, ...] = ()  # the non-model fields of the last record seen
        self._known_set: set[str] = set()
        self._known_size = -1
        # A model field's name as a key, or a surrogate escape (see _suspects).
        names = "|".join(
            _rust_escape(json.dumps(name, ensure_ascii=False)[1:-1]) for name in self.fields
        )
        surrogate = r"\\u[dD][89a-fA-F]"
        keys = f'"(?:{names})"' if names else None
        self._suspect_pattern = re.compile(
            (f"{keys}\\s*:|{surrogate}" if keys else surrogate).encode()
        )
        # For polars (Rust's regex), per batch: the keys alone, with bytes semantics. Space
        # before the colon is allowed (it costs nothing measurable): a record matching fewer
        # times than it names fields would hide another's repeated field in the batch total.
        self._keys_rust = f"(?-u){keys}\\s*:" if keys else None

    def decode(self, values: Sequence[bytes | None]) -> DecodedBatch:
        """Decode one batch; records that cannot be decoded come back as failures."""
        failures: list[DecodeFailure] = []
        good: list[int] = []
        limit = self.max_record_bytes
        for i, value in enumerate(values):
            if value is None:
                failures.append(DecodeFailure(i, TOMBSTONE, "null value (tombstone)"))
            elif len(value) > limit:
                failures.append(
                    DecodeFailure(i, OVERSIZED, f"value of {len(value):,} bytes exceeds {limit:,}")
                )
            elif not value:
                failures.append(DecodeFailure(i, NOT_JSON, "empty value"))
            else:
                good.append(i)
        if 0 < len(good) <= self.small_batch:
            small = self._decode_small(values, good, failures)
            if small is not None:
                return small
        present = _present(values, good)
        joined = b"\n".join(present)
        # One polars call reads the model's fields and, when some are kept, the others too.
        with_kept = self.keep.mode in ("default", "list")
        frame = self._read(present, joined, with_kept) if good else None
        if frame is None and good and with_kept:
            frame = self._read(present, joined)
        parsed: list[dict[str, Any]] | None = None
        if frame is None and good:
            good, frame, parsed = self._screened(values, good, failures)
        passthrough: Passthrough = None
        if frame is not None and parsed is None:
            read = len(good)
            good, frame = self._drop_null_fields(values, good, frame, failures)
            good, frame = self._drop_structured_text(values, good, frame, failures)
            whole = joined if len(good) == read else None  # the joined text of `good`
            # A batch whose every record holds each field once, as the column-wise check
            # proves, names no model field twice: the search for repeated keys is skipped.
            if with_kept and frame.width > len(self.fields):
                passthrough = self._columnar_passthrough(_present(values, good), frame, whole)
            if passthrough is None or self.keep.mode != "default" or b"\\" in joined:
                good, frame = self._drop_suspects(values, good, frame, failures, whole)
                if passthrough is not None and frame.height != len(passthrough):
                    passthrough = None  # a repeated field spelled with an escape: per record
        failures.sort(key=lambda failure: failure.index)
        index = np.asarray(good, dtype=np.int64)
        if frame is None or not good:
            return DecodedBatch(self._empty, index, None, failures)
        rows = frame.select(list(self.fields)).to_arrow().combine_chunks().to_batches()[0]
        if passthrough is None:
            passthrough = self._passthrough(values, good, parsed)
        return DecodedBatch(rows, index, passthrough, failures)

    # Small batches: orjson, record by record.

    def _decode_small(
        self, values: Sequence[bytes | None], good: list[int], failures: list[DecodeFailure]
    ) -> DecodedBatch | None:
        """The batch decoded with orjson, or None where polars must decide."""
        fast = self._decode_small_clean(values, good)
        if fast is not None:
            return DecodedBatch(*fast, failures)
        found: list[DecodeFailure] = []
        passing: list[int] = []
        parsed: list[dict[str, Any]] = []
        for i in good:
            value = values[i]
            assert value is not None
            # The quote count below rules out a repeated key: no need to search for one.
            problem, obj = self._screen(value, duplicates=False)
            if problem is not None:
                found.append(DecodeFailure(i, *problem))
                continue
            # Two quotes per key and per string value, else a repeated key (duplicate_field is
            # polars' path to find), a nested value or an escaped quote: let polars read it.
            strings = sum(type(v) is str for v in obj.values())
            if value.count(b'"') != 2 * (len(obj) + strings):
                return None
            passing.append(i)
            parsed.append(obj)
        names = list(self.fields)
        table = [[obj[name] for name in names] for obj in parsed]
        columns = []
        for j, (name, dtype) in enumerate(self.fields.items()):
            column = [row[j] for row in table]
            if dtype == pl.Float64:
                if any(type(v) is int and not _INT64[0] <= v <= _INT64[1] for v in column):
                    return None
                array = pa.array(np.asarray(column, dtype=np.float64))
            else:
                array = pa.array(column, type=self.schema.field(name).type)
            columns.append(array)
        failures.extend(found)
        failures.sort(key=lambda failure: failure.index)
        index = np.asarray(passing, dtype=np.int64)
        if not passing:
            return DecodedBatch(self._empty, index, None, failures)
        rows = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        return DecodedBatch(rows, index, self._passthrough(values, passing, parsed), failures)

    def _decode_small_clean(
        self, values: Sequence[bytes | None], good: list[int]
    ) -> tuple[pa.RecordBatch, np.ndarray, Passthrough] | None:
        """A small batch without a failure, checked field by field (a type test per field
        and batch, not per value), or None when any record needs the checks of
        :meth:`_decode_small`, record by record.

        The model's number fields become one float64 array in a single NumPy call and are
        shared with Arrow column by column: a batch's cost barely depends on how many fields
        the model reads (it is a fixed cost per batch, which is what a live tail pays most).
        """
        parsed: list[dict[str, Any]] = []
        loads, str_type = orjson.loads, str
        for i in good:
            value = values[i]
            assert value is not None
            try:
                obj = loads(value)
            except orjson.JSONDecodeError:
                return None
            if type(obj) is not dict:
                return None
            # As in _decode_small: two quotes per key and string value, or polars decides.
            strings = list(map(type, obj.values())).count(str_type)
            if value.count(b'"') != 2 * (len(obj) + strings):
                return None
            parsed.append(obj)
        try:
            table = [self._field_values(obj) for obj in parsed]
        except KeyError:  # a field missing somewhere: record by record
            return None
        by_field = list(zip(*table, strict=True))
        columns: list[pa.Array | None] = [None] * len(by_field)
        floats = [by_field[j] for j in self._float_fields]
        if floats:
            kinds = set(map(type, itertools.chain.from_iterable(floats)))
            if not kinds <= {float, int}:
                return None  # a null, a boolean or text among numbers: record by record
            if int in kinds and not all(
                _INT64[0] <= v <= _INT64[1]
                for v in itertools.chain.from_iterable(floats)
                if type(v) is int
            ):
                return None
            # One array of every float field's values, field after field: each column is
            # a slice of it (cheaper than one Arrow array made per column).
            n = len(parsed)
            stacked = from_numpy(np.array(floats, dtype=np.float64).reshape(-1))
            for position, j in enumerate(self._float_fields):
                columns[j] = stacked.slice(position * n, n)
        for j in self._other_fields:
            column = by_field[j]
            dtype = self._field_types[j]
            kinds = set(map(type, column))
            if dtype is _Kind.INT and kinds <= {int}:
                if any(not _INT64[0] <= v <= _INT64[1] for v in column):
                    return None
            elif not (dtype is _Kind.BOOL and kinds <= {bool}):
                return None  # missing, null or of another type somewhere: record by record
            columns[j] = pa.array(column, type=self.schema.field(j).type)
        rows = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        index = np.asarray(good, dtype=np.int64)
        return rows, index, self._passthrough(values, good, parsed)

    def _read(
        self, values: list[bytes], joined: bytes | None = None, with_kept: bool = False
    ) -> pl.DataFrame | None:
        """``values`` in one polars call (``joined``: them joined by newlines, if at hand):
        the model's fields, typed as the model needs them, or None where polars refuses the
        batch; ``with_kept``: every other field too, typed as the batch's first rows show."""
        joined = b"\n".join(values) if joined is None else joined
        if joined.count(b"\n") != len(values) - 1:
            return None  # a value spans lines: screen it record by record
        try:
            if with_kept:
                frame = pl.read_ndjson(
                    io.BytesIO(joined),
                    schema_overrides=self.fields,
                    infer_schema_length=PASSTHROUGH_SAMPLE,
                )
            else:
                frame = pl.read_ndjson(io.BytesIO(joined), schema=self.fields)
        except Exception:  # polars raises ComputeError and friends for any bad line
            return None
        # Blank lines are skipped by polars; a short frame means rows would not line up.
        return frame if frame.height == len(values) else None

    # The slow path, for batches polars refused: orjson names each bad record's problem.

    def _screened(
        self, values: Sequence[bytes | None], good: list[int], failures: list[DecodeFailure]
    ) -> tuple[list[int], pl.DataFrame | None, list[dict[str, Any]]]:
        passing: list[int] = []
        cleaned: list[bytes] = []
        parsed: list[dict[str, Any]] = []
        for i in good:
            value = values[i]
            assert value is not None
            problem, obj = self._screen(value)
            if problem is not None:
                failures.append(DecodeFailure(i, *problem))
                continue
            passing.append(i)
            # Valid JSON holds raw newlines only as whitespace, so they may become spaces.
            cleaned.append(value.replace(b"\n", b" ").replace(b"\r", b" "))
            parsed.append(obj)
        if not passing:
            return [], None, []
        frame = self._read(cleaned)
        if frame is not None:
            return passing, frame, parsed
        # Every record passed screening, yet polars refuses one: find it, record by record.
        frames: list[pl.DataFrame] = []
        kept: list[int] = []
        kept_parsed: list[dict[str, Any]] = []
        for i, value, obj in zip(passing, cleaned, parsed, strict=True):
            try:
                frames.append(pl.read_ndjson(io.BytesIO(value), schema=self.fields))
            except Exception as exc:  # a value polars reads differently from orjson
                message = str(exc).strip().splitlines()[0][:200]
                failures.append(DecodeFailure(i, WRONG_TYPE, f"not decodable: {message}"))
                continue
            kept.append(i)
            kept_parsed.append(obj)
        if not kept:
            return [], None, []
        return kept, pl.concat(frames), kept_parsed

    def _screen(
        self, value: bytes, *, duplicates: bool = True
    ) -> tuple[tuple[str, str] | None, Any]:
        """The problem with one record, if any, and its parsed object. ``duplicates=False``
        skips the search for a model field named twice (the caller rules it out)."""
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return _lenient_json_problem(value) or (NOT_JSON, f"not valid JSON: {exc}"), None
        if not isinstance(obj, dict):
            return (NOT_OBJECT, f"a JSON {_json_kind(obj)}, not an object"), None
        for name, dtype in self.fields.items():
            if name not in obj:
                return (MISSING_FIELD, f"field '{name}' is missing"), None
            value_of = obj[name]
            if value_of is None:
                return (NULL_FIELD, f"field '{name}' is null"), None
            wanted = _fits(value_of, dtype)
            if wanted is not None:
                kind = _json_kind(value_of)
                return (WRONG_TYPE, f"field '{name}' is a {kind}; the model needs {wanted}"), None
        # A key spelled with an escape (\u0066 for f) escapes the pattern: parse those too.
        escaped = b"\\u" in value or b"\\/" in value
        if duplicates and (escaped or len(self._suspect_pattern.findall(value)) > len(self.fields)):
            duplicate = _duplicate_key(value, self.fields)
            if duplicate is not None:
                return (DUPLICATE_FIELD, f"field '{duplicate}' appears twice"), None
        return None, obj

    def _suspects(self, texts: list[bytes], joined: bytes | None = None) -> list[int]:
        """Positions in ``texts`` that name a model field more than once (maybe nested or in
        a string) or hold a ``\\u`` escape (maybe a lone surrogate): polars reads those, but
        maybe not as orjson and JSON readers downstream do, so they are screened one by one.

        One regex pass (in Rust) over the whole batch tells whether any names a field twice:
        every record names every model field at least once, so more matches means some.
        """
        if not texts:
            return []
        whole = b"\n".join(texts) if joined is None else joined
        suspects: set[int] = set()
        if b"\\" in whole and b"\\u" in whole:  # a one-byte search runs at memchr speed
            suspects.update(i for i, text in enumerate(texts) if b"\\u" in text)
        if self._keys_rust is not None:
            expected = len(self.fields)
            keys = pl.Series([whole.decode("utf-8", "replace")]).str.count_matches(self._keys_rust)
            # The total proves that every record names each field once only if none matches
            # fewer times: one with a key spelled with an escape (\u0066 for f) may.
            escaped = b"\\" in whole and (b"\\u" in whole or b"\\/" in whole)
            if escaped or keys.item() != expected * len(texts):
                strings = pl.Series([text.decode("utf-8", "replace") for text in texts])
                counts = strings.str.count_matches(self._keys_rust).to_numpy()
                suspects.update(int(i) for i in np.flatnonzero(counts != expected))
        return sorted(suspects)

    def _drop_suspects(
        self,
        values: Sequence[bytes | None],
        good: list[int],
        frame: pl.DataFrame,
        failures: list[DecodeFailure],
        joined: bytes | None = None,
    ) -> tuple[list[int], pl.DataFrame]:
        """Screen :meth:`_suspects`: polars scores a repeated field's first value while JSON
        readers downstream see the last (``duplicate_field``), and it reads a lone surrogate
        that orjson refuses (``not_json``), so a record's fate never depends on its batch."""
        suspects = self._suspects(_present(values, good), joined)
        if not suspects:
            return good, frame
        keep = np.ones(frame.height, dtype=bool)
        for row in suspects:
            value = values[good[row]]
            assert value is not None
            problem, _ = self._screen(value)
            if problem is not None:
                failures.append(DecodeFailure(good[row], *problem))
                keep[row] = False
        kept = [i for i, ok in zip(good, keep.tolist(), strict=True) if ok]
        return kept, frame.filter(pl.Series(keep))

    def _drop_null_fields(
        self,
        values: Sequence[bytes | None],
        good: list[int],
        frame: pl.DataFrame,
        failures: list[DecodeFailure],
    ) -> tuple[list[int], pl.DataFrame]:
        """Records decoded with a model field null or absent: find which, and why."""
        model = frame.select(list(self.fields))
        if not any(model.null_count().row(0)):
            return good, frame
        nulls = model.select(pl.any_horizontal(pl.all().is_null())).to_series()
        for row in np.flatnonzero(nulls.to_numpy()):
            value = values[good[row]]
            assert value is not None
            problem, _ = self._screen(value)
            kind, message = problem or (NULL_FIELD, "a model field is null")
            failures.append(DecodeFailure(good[row], kind, message))
        keep = ~nulls
        kept = [i for i, ok in zip(good, keep.to_list(), strict=True) if ok]
        return kept, frame.filter(keep)

    def _drop_structured_text(
        self,
        values: Sequence[bytes | None],
        good: list[int],
        frame: pl.DataFrame,
        failures: list[DecodeFailure],
    ) -> tuple[list[int], pl.DataFrame]:
        """polars reads a JSON object or array in a string field as its text; the record-by-
        record path calls it wrong_type. Screen such rows so a record's fate never depends on
        the batch it came in."""
        text_fields = [name for name, dtype in self.fields.items() if dtype == pl.String]
        if not text_fields or frame.height == 0:
            return good, frame
        looks_structured = pl.any_horizontal(
            pl.col(name).str.starts_with("{") | pl.col(name).str.starts_with("[")
            for name in text_fields
        )
        suspects = frame.select(looks_structured).to_series().fill_null(False)
        if not suspects.any():
            return good, frame
        keep = np.ones(frame.height, dtype=bool)
        for row in np.flatnonzero(suspects.to_numpy()):
            value = values[good[row]]
            assert value is not None
            problem, _ = self._screen(value)
            if problem is not None:
                failures.append(DecodeFailure(good[row], *problem))
                keep[row] = False
        kept = [i for i, ok in zip(good, keep.tolist(), strict=True) if ok]
        return kept, frame.filter(pl.Series(keep))

    def _passthrough(
        self,
        values: Sequence[bytes | None],
        good: list[int],
        parsed: list[dict[str, Any]] | None,
    ) -> Passthrough:
        mode = self.keep.mode
        if mode == "none":
            return None
        if mode == "all":
            return _present(values, good)
        if parsed is None:
            parsed = [orjson.loads(value) for value in _present(values, good)]
        if mode == "list":
            names = self.keep.names
            return [{name: obj.get(name) for name in names} for obj in parsed]
        return [self._non_model_fields(obj) for obj in parsed]

    def _columnar_passthrough(
        self, present: list[bytes], frame: pl.DataFrame, joined: bytes | None = None
    ) -> pl.DataFrame | None:
        """The kept fields of ``frame`` (read with them, see :meth:`_read`), or None unless
        every value is exactly representable.

        polars reads the batch with the types it infers from its first rows. It refuses a
        later integer or boolean of another type, but reads a number among strings as its
        text, keeps the first of duplicate keys and ignores fields the first rows lack. So
        each record's bytes are checked: every string column's key followed by a string
        once (``"key":"``), and, when every field the model does not read is kept, exactly
        two quotes per key and per string value (no field left out, none repeated). Any
        other batch (nested values, nulls, floats, a quote escaped in a string) returns None.

        With every field kept and no backslash in the batch (``joined``: ``present`` joined
        by newlines, if at hand), batch totals prove the same per record: each ``"key":"``
        occurs once per record on the whole, and the quotes add up to two per key and string
        value per record. (No record can hold more, since each already holds every key once
        and each counted string; so none holds fewer.) That proof also rules out a repeated
        key, model fields included.
        """
        if frame.height != len(present):
            return None
        if self.keep.mode == "list":
            names = list(self.keep.names)
            if not set(names) <= set(frame.columns):
                return None
            checked = names
        else:
            names = [name for name in frame.columns if name not in self.fields]
            checked = frame.columns
        if not names:  # a frame without columns has no rows either
            return None
        for name in names:
            column = frame[name]
            if column.dtype not in _EXACT_TYPES or column.null_count():
                return None
        strings = [name for name in checked if frame[name].dtype == pl.String]
        if self.keep.mode == "default":
            joined = b"\n".join(present) if joined is None else joined
            if b"\\" not in joined:
                n, quotes = len(present), 2 * (frame.width + len(strings))
                keys_once = all(joined.count(orjson.dumps(k) + b':"') == n for k in strings)
                exact = keys_once and joined.count(b'"') == quotes * n
                return frame.select(names) if exact else None
        for name in strings:
            key = orjson.dumps(name) + b':"'
            if any(value.count(key) != 1 for value in present):
                return None  # a number or boolean among strings (read as text), or repeated
        if self.keep.mode == "list":  # each kept key once: `"k":false,"k":"x"` passes above
            for name in names:
                key = orjson.dumps(name) + b":"
                if any(value.count(key) != 1 for value in present):
                    return None
        else:
            quotes = 2 * (frame.width + len(strings))
            if any(value.count(b'"') != quotes for value in present):
                return None
        return frame.select(names)

    def _non_model_fields(self, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` without the model's fields. Records of a topic mostly share their field
        names: when ``obj`` has exactly the fields of the last record, pick them directly."""
        known = self._known
        if len(obj) == self._known_size and self._known_set <= obj.keys():
            return {name: obj[name] for name in known}
        model = self.fields
        kept = {k: v for k, v in obj.items() if k not in model}
        # Decoded records hold every model field, so the size pins the field set down.
        self._known, self._known_set, self._known_size = tuple(kept), set(kept), len(obj)
        return kept


def _rust_escape(text: str) -> str:
    """``text`` as a literal in a regex that both Python's re and Rust's regex read."""
    return "".join(f"\\{c}" if c in r"\.+*?()|[]{}^$#&-~" else c for c in text)


def _lenient_json_problem(value: bytes) -> tuple[str, str] | None:
    """What is wrong with a value orjson refused but Python's json module reads, if it does."""
    constants: list[str] = []

    def constant(name: str) -> float:
        constants.append(name)
        return float(name)

    try:
        parsed = json.loads(value, parse_constant=constant)
    except ValueError:
        return None
    if constants:
        return NAN, f"{constants[0]} literal (not valid JSON)"
    if value.startswith(b"\xef\xbb\xbf"):
        return NOT_JSON, "starts with a byte order mark (not valid in JSON text)"
    if _has_infinity(parsed):
        return OUT_OF_RANGE, "a number is out of range for a 64-bit float"
    return NOT_JSON, "a string holds a lone surrogate (not valid Unicode)"


def _has_infinity(value: Any) -> bool:
    if isinstance(value, float):
        return value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(_has_infinity(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_infinity(item) for item in value)
    return False


def _duplicate_key(value: bytes, names: Mapping[str, Any]) -> str | None:
    """The first of ``names`` that a record's top-level object holds twice, if any."""
    last: list[str | None] = [None]

    def check(items: list[tuple[str, Any]]) -> dict[str, Any]:
        # The hook runs innermost object first, so its last call is for the top level.
        seen: set[str] = set()
        last[0] = None
        for key, _ in items:
            if key in seen and key in names:
                last[0] = key
                break
            seen.add(key)
        return dict(items)

    try:
        json.loads(value, object_pairs_hook=check)
    except ValueError:
        return None
    return last[0]


# Passthrough types polars reads and writes back exactly (floats may change form: 1 -> 1.0).
_EXACT_TYPES = (pl.String, pl.Int64, pl.Boolean)
PASSTHROUGH_SAMPLE = 100  # rows polars infers the passthrough types from


def take_passthrough(passthrough: Passthrough, rows: np.ndarray) -> Passthrough:
    """The passthrough of the rows at positions ``rows``."""
    if passthrough is None:
        return None
    if isinstance(passthrough, pl.DataFrame):
        return passthrough[rows.tolist()] if len(rows) else passthrough.clear()
    return [passthrough[i] for i in rows.tolist()]


def _present(values: Sequence[bytes | None], indices: list[int]) -> list[bytes]:
    return [value for i in indices if (value := values[i]) is not None]


def encode_values(
    passthrough: Passthrough, accepted: np.ndarray, scores: pa.RecordBatch
) -> list[bytes]:
    """One JSON object per scored row: its passthrough fields, then the score fields.

    ``accepted`` selects the rows of ``passthrough`` that ``scores`` belong to. A score field
    replaces a passthrough field of the same name.
    """
    small = None if isinstance(passthrough, pl.DataFrame) else _small_lines(scores)
    if small is not None:
        return _with_passthrough(passthrough, accepted, scores.schema.names, small)
    frame = pl.from_arrow(scores)
    assert isinstance(frame, pl.DataFrame)
    if isinstance(passthrough, pl.DataFrame):  # column-wise: one polars call writes it all
        same = [name for name in frame.columns if name in passthrough.columns]
        columns = passthrough.drop(same)
        if len(accepted) != columns.height or not _is_identity(accepted):
            columns = columns[accepted.tolist()] if len(accepted) else columns.clear()
        return _lines(pl.concat([columns, frame], how="horizontal") if columns.width else frame)
    return _with_passthrough(passthrough, accepted, frame.columns, _lines(frame))


def _with_passthrough(
    passthrough: Passthrough, accepted: np.ndarray, columns: list[str], lines: list[bytes]
) -> list[bytes]:
    """The score ``lines`` with each row's kept fields (a list or None) spliced in front."""
    if passthrough is None:
        return lines
    assert not isinstance(passthrough, pl.DataFrame)
    names = frozenset(columns)
    rows = accepted.tolist()
    quoted = [f'"{name}"'.encode() for name in columns]
    # Raw values are searched for a score field's name once per batch (in their
    # concatenation: bytes search beats a regex 2:1), and one by one only if it turns up.
    raw = b"\n".join(kept for kept in (passthrough[row] for row in rows) if isinstance(kept, bytes))
    suspect = any(name in raw for name in quoted)
    dumps, out = orjson.dumps, []
    for row, line in zip(rows, lines, strict=True):
        kept = passthrough[row]
        if isinstance(kept, dict):
            if not names.isdisjoint(kept):
                kept = {k: v for k, v in kept.items() if k not in names}
            kept = dumps(kept)
        elif suspect and any(name in kept for name in quoted):  # merge properly
            obj = orjson.loads(kept)
            kept = dumps({k: v for k, v in obj.items() if k not in names})
        out.append(_splice(kept, line))
    return out


def _is_identity(rows: np.ndarray) -> bool:
    return bool(len(rows) == 0 or (rows[0] == 0 and rows[-1] == len(rows) - 1))


def _splice(obj: bytes, scores: bytes) -> bytes:
    """Merge two JSON objects' texts: ``{"a":1}`` + ``{"s":2}`` -> ``{"a":1,"s":2}``."""
    body = obj.rstrip()[:-1].rstrip()
    return body + scores[1:] if body.endswith(b"{") else body + b"," + scores[1:]


# Score types orjson writes exactly as polars does: float32 in its shortest form (as numpy's
# float32 scalars serialize), float64 and integers alike, booleans, strings.
_ORJSON_SCORES = (pa.float32(), pa.float64(), pa.int64(), pa.int32(), pa.bool_(), pa.string())


def _small_lines(scores: pa.RecordBatch) -> list[bytes] | None:
    """The score rows of a small batch as JSON, written with orjson; None for a batch too
    large (polars' fixed cost per call, ~0.1 ms alone and several under load as its thread
    pools wake, is then less than orjson's per row) or with other types or nulls."""
    if not 0 < scores.num_rows <= SMALL_BATCH:
        return None
    columns: list[Any] = []
    for column in scores.columns:
        if column.type not in _ORJSON_SCORES or column.null_count:
            return None
        if column.type == pa.string():
            columns.append(column.to_pylist())
        else:
            columns.append(column.to_numpy(zero_copy_only=False))
    names = scores.schema.names
    dumps, option = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
    rows = zip(*columns, strict=True)
    return [dumps(dict(zip(names, row, strict=True)), option=option) for row in rows]


def _lines(frame: pl.DataFrame) -> list[bytes]:
    if frame.height == 0:
        return []
    # Strings are written with newlines escaped, so raw newlines only end records.
    lines = frame.write_ndjson().encode().split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines
