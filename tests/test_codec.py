"""JSON record values <-> Arrow rows: micro-batch decoding, per-record failures, output values.

Pure: no broker. The decoder must give every good record its row, name each bad record's
problem, and never let one bad record cost its neighbours their scores.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.config import KeepColumns
from streamscore.kafka.codec import (
    MISSING_FIELD,
    NAN,
    NOT_JSON,
    NOT_OBJECT,
    NULL_FIELD,
    OVERSIZED,
    TOMBSTONE,
    WRONG_TYPE,
    JsonDecoder,
    encode_values,
)

FIELDS = {"a": pa.float64(), "b": pa.float64()}


def record(a: float = 1.5, b: float = -2.0, **extra: Any) -> bytes:
    return orjson.dumps({"id": 7, "a": a, "b": b, **extra})


def scores(n: int) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "label": pa.array(np.arange(n) % 2, pa.int64()),
            "p": pa.array(np.linspace(0, 1, n), pa.float32()),
        }
    )


def test_a_clean_batch_decodes_the_model_fields_in_record_order() -> None:
    decoded = JsonDecoder(FIELDS).decode([record(1, 2), record(3.25, -4)])

    assert decoded.failures == []
    assert decoded.index.tolist() == [0, 1]
    assert decoded.rows.schema.names == ["a", "b"]
    assert decoded.rows.to_pydict() == {"a": [1.0, 3.25], "b": [2.0, -4.0]}


MALFORMED = {
    "not JSON": (b"{not json", NOT_JSON, "not valid JSON"),
    "empty": (b"", NOT_JSON, "empty value"),
    "array": (b"[1, 2]", NOT_OBJECT, "array"),
    "number": (b"42", NOT_OBJECT, "number"),
    "missing field": (orjson.dumps({"a": 1}), MISSING_FIELD, "'b' is missing"),
    "null field": (orjson.dumps({"a": 1, "b": None}), NULL_FIELD, "'b' is null"),
    "string for a number": (orjson.dumps({"a": "1.5", "b": 2}), WRONG_TYPE, "'a' is a string"),
    "boolean for a number": (orjson.dumps({"a": True, "b": 2}), WRONG_TYPE, "'a' is a boolean"),
    "object for a number": (b'{"a": {"x": 1}, "b": 2}', WRONG_TYPE, "'a' is a object"),
    "NaN literal": (b'{"a": NaN, "b": 2}', NAN, "NaN"),
    "tombstone": (None, TOMBSTONE, "tombstone"),
    "oversized": (record(extra="x" * 500), OVERSIZED, "exceeds 300"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_record_is_reported_and_its_neighbours_decode(case: str) -> None:
    bad, kind, fragment = MALFORMED[case]
    decoder = JsonDecoder(FIELDS, max_record_bytes=300)

    decoded = decoder.decode([record(1), bad, record(3)])

    assert decoded.index.tolist() == [0, 2]
    assert decoded.rows.column("a").to_pylist() == [1.0, 3.0]
    assert [(f.index, f.kind) for f in decoded.failures] == [(1, kind)]
    assert fragment in decoded.failures[0].message


def test_a_batch_of_only_bad_records_decodes_to_no_rows_with_the_model_schema() -> None:
    decoded = JsonDecoder(FIELDS).decode([b"nope", None])

    assert decoded.rows.num_rows == 0
    assert decoded.rows.schema.names == ["a", "b"]
    assert [f.kind for f in decoded.failures] == [NOT_JSON, TOMBSTONE]


def test_pretty_printed_json_spanning_lines_decodes() -> None:
    pretty = json.dumps({"a": 1.0, "b": 2.0, "note": "x"}, indent=2).encode()

    decoded = JsonDecoder(FIELDS, KeepColumns("all")).decode([record(), pretty])

    assert decoded.failures == []
    assert decoded.rows.column("b").to_pylist() == [-2.0, 2.0]
    out = encode_values(decoded.passthrough, decoded.index, scores(2))
    assert orjson.loads(out[1]) == {"a": 1.0, "b": 2.0, "note": "x", "label": 1, "p": 1.0}


def test_integer_and_string_inputs_take_json_integers_and_strings() -> None:
    decoder = JsonDecoder({"n": pa.int64(), "s": pa.string()})

    decoded = decoder.decode(
        [b'{"n": 3, "s": "x"}', b'{"n": 2.5, "s": "y"}', b'{"n": 1, "s": ["z"]}']
    )

    assert decoded.rows.to_pydict() == {"n": [3], "s": ["x"]}
    assert [(f.index, f.kind) for f in decoded.failures] == [(1, WRONG_TYPE), (2, WRONG_TYPE)]


def test_an_object_in_a_string_field_fails_alike_in_any_batch() -> None:
    # polars alone would read {"x": 1} as the text '{"x":1}' when its neighbours are clean.
    decoder = JsonDecoder({"s": pa.string()})
    clean = [b'{"s": "a"}', b'{"s": {"x": 1}}', b'{"s": "{not an object"}']
    with_bad_neighbour = [*clean, b"not json"]

    for values in (clean, with_bad_neighbour):
        decoded = decoder.decode(values)
        assert decoded.rows.column("s").to_pylist() == ["a", "{not an object"]
        assert [(f.index, f.kind) for f in decoded.failures][:1] == [(1, WRONG_TYPE)]


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        (None, {"id": 7, "note": "n", "label": 0, "p": 0.0}),
        ("none", {"label": 0, "p": 0.0}),
        ("note,absent", {"note": "n", "absent": None, "label": 0, "p": 0.0}),
        ("all", {"id": 7, "a": 1.5, "b": -2.0, "note": "n", "label": 0, "p": 0.0}),
    ],
)
def test_keep_chooses_the_passthrough_fields_like_for_parquet_columns(
    keep: str | None, expected: dict[str, Any]
) -> None:
    decoded = JsonDecoder(FIELDS, KeepColumns.parse(keep)).decode([record(note="n")])

    (value,) = encode_values(decoded.passthrough, decoded.index, scores(1))

    assert orjson.loads(value) == expected


@pytest.mark.parametrize("keep", [None, "all"])
def test_a_score_field_replaces_a_passthrough_field_of_the_same_name(keep: str | None) -> None:
    decoded = JsonDecoder(FIELDS, KeepColumns.parse(keep)).decode([record(label="old")])

    (value,) = encode_values(decoded.passthrough, decoded.index, scores(1))

    assert orjson.loads(value)["label"] == 0
    assert value.count(b'"label"') == 1


def test_passthrough_values_are_copied_verbatim() -> None:
    odd = {"a": 1, "b": 2, "big": 2**62 + 1, "nested": {"x": [1, "two", None]}, "u": "é\n\u2028"}

    decoded = JsonDecoder(FIELDS).decode([orjson.dumps(odd)])
    (value,) = encode_values(decoded.passthrough, decoded.index, scores(1))

    assert orjson.loads(value) == {
        "big": 2**62 + 1,
        "nested": {"x": [1, "two", None]},
        "u": "é\n\u2028",
        "label": 0,
        "p": 0.0,
    }


def test_only_the_accepted_rows_are_encoded() -> None:
    decoded = JsonDecoder(FIELDS).decode([record(id=1), record(id=2), record(id=3)])

    values = encode_values(decoded.passthrough, np.array([0, 2]), scores(2))

    assert [orjson.loads(v)["id"] for v in values] == [1, 3]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1))
def test_float32_scores_read_back_bit_identical(values: list[float]) -> None:
    array = pa.array(np.array(values, dtype=np.float32))
    batch = pa.record_batch({"p": array})

    encoded = encode_values(None, np.arange(len(values)), batch)

    back = np.array([orjson.loads(v)["p"] for v in encoded], dtype=np.float32)
    assert back.tobytes() == array.to_numpy().tobytes()


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
good_records = st.fixed_dictionaries(
    {
        "a": st.floats(allow_nan=False, allow_infinity=False),
        "b": st.integers(min_value=-(2**53), max_value=2**53),
    },
    optional={"note": json_scalars, "tags": st.lists(json_scalars, max_size=3)},
)
bad_values = st.sampled_from(
    [None, b"", b"{", b"[]", b"null", b'{"a": 1}', b'{"a": "x", "b": 1}', b'{"a": NaN, "b": 1}']
)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(good_records, bad_values), max_size=30))
def test_every_good_record_decodes_whatever_surrounds_it(items: list[Any]) -> None:
    values = [orjson.dumps(item) if isinstance(item, dict) else item for item in items]
    good = [i for i, item in enumerate(items) if isinstance(item, dict)]

    decoded = JsonDecoder(FIELDS, KeepColumns("all")).decode(values)

    assert decoded.index.tolist() == good
    assert sorted([f.index for f in decoded.failures] + good) == list(range(len(items)))
    assert decoded.rows.column("a").to_pylist() == [items[i]["a"] for i in good]
    assert decoded.rows.column("b").to_pylist() == [float(items[i]["b"]) for i in good]
    out = encode_values(decoded.passthrough, np.arange(len(good)), scores(len(good)))
    for i, value in zip(good, out, strict=True):
        assert {k: v for k, v in orjson.loads(value).items() if k not in ("label", "p")} == (
            items[i]
        )


# Passthrough read column-wise must give exactly what the per-record path gives: the same
# fields and values (last of duplicate keys, integers stay integers, strings stay strings).
passthrough_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=2**63, max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from(["7", "true", 'q"uote', "{}", "[1]"]),
    st.lists(st.integers(0, 3), max_size=2),
    st.fixed_dictionaries({"x": st.integers(0, 3)}),
)
model_fields = {"a": st.floats(-1e6, 1e6), "b": st.integers(-1000, 1000)}
plain_fields = st.fixed_dictionaries(  # what the column-wise path takes, mostly
    {**model_fields, "id": st.integers(-(2**63), 2**63 - 1), "note": st.text(max_size=6)},
    optional={"on": st.booleans()},
)
wild_fields = st.fixed_dictionaries(
    model_fields,
    optional={"id": passthrough_values, "note": passthrough_values, "on": st.booleans()},
)
batch_records = st.lists(
    st.tuples(
        st.one_of(plain_fields, wild_fields),
        st.sampled_from(["compact"] * 12 + ["spaced", "duplicate", "reordered"]),
    ),
    min_size=1,
    max_size=12,
)


def raw_record(fields: dict[str, Any], form: str) -> bytes:
    if form == "spaced":
        return json.dumps(fields).encode()  # ", " and ": " separators, \u escapes
    if form == "reordered":
        return orjson.dumps(dict(reversed(list(fields.items()))))
    raw = orjson.dumps(fields)
    if form == "duplicate":  # a repeated key: the last value counts, as orjson reads it
        return raw[:-1] + b',"note":"second"}'
    return raw


@settings(max_examples=150, deadline=None)
@given(batch_records, st.sampled_from([None, "id,note", "note"]))
def test_passthrough_fields_are_the_same_whichever_path_reads_them(
    items: list[tuple[dict[str, Any], str]], keep: str | None
) -> None:
    values = [raw_record(fields, form) for fields, form in items]
    mode = KeepColumns.parse(keep)

    decoded = JsonDecoder(FIELDS, mode, small_batch=0).decode(values)
    out = encode_values(decoded.passthrough, np.arange(len(values)), scores(len(values)))

    assert decoded.failures == []
    for raw, value in zip(values, out, strict=True):
        source = orjson.loads(raw)
        if mode.mode == "list":
            expected = {name: source.get(name) for name in mode.names}
        else:
            expected = {k: v for k, v in source.items() if k not in FIELDS}
        found = orjson.loads(value)
        assert {k: found[k] for k in found if k not in ("label", "p")} == expected
        kept = {k: found[k] for k in expected}
        assert {k: type(v) for k, v in kept.items()} == {k: type(v) for k, v in expected.items()}


def test_plain_passthrough_fields_are_read_column_wise() -> None:
    values = [record(note=f"n{i}", ok=i % 2 == 0) for i in range(5)]

    decoded = JsonDecoder(FIELDS, small_batch=0).decode(values)
    out = encode_values(decoded.passthrough, np.array([1, 3]), scores(2))

    assert decoded.passthrough is not None and not isinstance(decoded.passthrough, list)
    assert [orjson.loads(v) for v in out] == [
        {"id": 7, "note": "n1", "ok": False, "label": 0, "p": 0.0},
        {"id": 7, "note": "n3", "ok": False, "label": 1, "p": 1.0},
    ]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(st.tuples(st.one_of(plain_fields, wild_fields), st.just("compact")),
             st.tuples(good_records, st.sampled_from(["compact", "spaced", "duplicate"])),
             bad_values), max_size=20),
    st.sampled_from([None, "all", "none", "note"]),
)  # fmt: skip
def test_a_small_batch_decodes_exactly_as_a_large_one(items: list[Any], keep: str | None) -> None:
    values = [raw_record(*item) if isinstance(item, tuple) else item for item in items]
    mode = KeepColumns.parse(keep)

    small = JsonDecoder(FIELDS, mode).decode(values)  # record by record where it can
    large = JsonDecoder(FIELDS, mode, small_batch=0).decode(values)  # polars

    assert small.index.tolist() == large.index.tolist()
    assert small.rows.to_pydict() == large.rows.to_pydict()
    assert small.rows.schema == large.rows.schema
    assert small.failures == large.failures
    n = len(small.index)
    found = encode_values(small.passthrough, np.arange(n), scores(n))
    expected = encode_values(large.passthrough, np.arange(n), scores(n))
    assert [orjson.loads(v) for v in found] == [orjson.loads(v) for v in expected]


def test_a_kept_field_repeated_after_a_non_string_value_passes_its_last_value() -> None:
    # Found by the property above: `"note":false,"note":"second"` holds `"note":"` once.
    values = [
        orjson.dumps({"a": 0.0, "b": 0, "id": 0, "note": ""}),
        b'{"a":0.0,"b":0,"note":false,"note":"second"}',
    ]
    decoded = JsonDecoder(FIELDS, KeepColumns.parse("note"), small_batch=0).decode(values)
    out = encode_values(decoded.passthrough, np.arange(2), scores(2))

    assert [orjson.loads(value)["note"] for value in out] == ["", "second"]


def with_repeat(fields: dict[str, Any], form: str) -> bytes:
    """A compact record, or one naming a model field twice: plainly, or with a string kept
    field turned into a number so that its quotes balance the repeated key's."""
    raw = orjson.dumps(fields)
    if form == "repeat":
        return raw[:-1] + b',"a":99.5}'
    if form == "balanced" and isinstance(fields.get("note"), str):
        return orjson.dumps({**fields, "note": 7})[:-1] + b',"b":5}'
    return raw


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.fixed_dictionaries(  # no escapes, no field missing: the column-wise path
                    {**model_fields, "id": st.integers(0, 9), "note": st.text("ab :,", max_size=4)}
                ),
                plain_fields,
            ),
            st.sampled_from(["compact"] * 6 + ["repeat", "balanced"]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_a_repeated_model_field_is_found_when_every_field_is_kept(
    items: list[tuple[dict[str, Any], str]],
) -> None:
    # With every field kept the column-wise check stands in for the search for repeated
    # keys: it must find each record that names a model field twice, in any company.
    values = [with_repeat(fields, form) for fields, form in items]
    decoder = JsonDecoder(FIELDS, small_batch=0)

    decoded = decoder.decode(values)

    expected = {i: problem[0] for i, v in enumerate(values) if (problem := decoder._screen(v)[0])}
    assert {f.index: f.kind for f in decoded.failures} == expected
    good = [i for i in range(len(values)) if i not in expected]
    out = encode_values(decoded.passthrough, np.arange(len(good)), scores(len(good)))
    for i, value in zip(good, out, strict=True):
        source = {k: v for k, v in orjson.loads(values[i]).items() if k not in FIELDS}
        assert {k: v for k, v in orjson.loads(value).items() if k not in ("label", "p")} == source


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(width=32, allow_nan=False),
            st.floats(allow_nan=False),
            st.integers(-(2**63), 2**63 - 1),
            st.booleans(),
            st.text(max_size=5),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_a_small_batch_of_scores_is_written_byte_for_byte_as_polars_writes_a_large_one(
    rows: list[tuple[float, float, int, bool, str]],
) -> None:
    p32, p64, label, flag, text = (list(column) for column in zip(*rows, strict=True))
    scores = pa.record_batch(
        {
            "p": pa.array(p32, pa.float32()),
            "d": pa.array(p64, pa.float64()),
            "label": pa.array(label, pa.int64()),
            "flag": pa.array(flag, pa.bool_()),
            "name": pa.array(text, pa.string()),
        }
    )
    accepted = np.arange(len(rows))

    small = encode_values(None, accepted, scores)  # orjson, row by row
    frame = pl.from_arrow(scores)
    assert isinstance(frame, pl.DataFrame)
    large = frame.write_ndjson().encode().splitlines()  # polars, as for a large batch

    assert small == large


MIXED_FIELDS = {"a": pa.float64(), "n": pa.int64(), "on": pa.bool_(), "b": pa.float64()}
mixed_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**64), 2**64),
    st.booleans(),
    st.none(),
    st.just("1.5"),
)


@st.composite
def mixed_records(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-typed records; now and then a field missing or of another type."""
    record = {
        "a": draw(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)),
        "n": draw(st.integers(-(2**63), 2**63 - 1)),
        "on": draw(st.booleans()),
        "b": draw(st.floats(allow_nan=False, allow_infinity=False)),
        "id": draw(st.integers(0, 10)),
    }
    if draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from(list(MIXED_FIELDS)))
        if draw(st.booleans()):
            del record[name]
        else:
            record[name] = draw(mixed_values)
    return record


@settings(max_examples=150, deadline=None)
@given(st.lists(mixed_records(), min_size=1, max_size=12))
def test_a_small_batch_of_number_integer_and_boolean_fields_decodes_as_a_large_one(
    items: list[dict[str, Any]],
) -> None:
    """The small-batch path stacks every number field at once and checks the others field
    by field: what it decodes, and what it refuses, is what polars' path does."""
    values = [orjson.dumps(item) for item in items]

    small = JsonDecoder(MIXED_FIELDS).decode(values)
    large = JsonDecoder(MIXED_FIELDS, small_batch=0).decode(values)

    assert small.index.tolist() == large.index.tolist()
    assert small.rows.schema == large.rows.schema
    assert small.rows.to_pydict() == large.rows.to_pydict()
    assert small.failures == large.failures
    n = len(small.index)
    found = encode_values(small.passthrough, np.arange(n), scores(n))
    expected = encode_values(large.passthrough, np.arange(n), scores(n))
    assert [orjson.loads(v) for v in found] == [orjson.loads(v) for v in expected]
