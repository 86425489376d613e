"""Values that used to reach the model wrong, or be judged by the batch they came in (issue 8 §2).

Each value must get one verdict wherever it arrives: out-of-range integers are rejected, a
float32 bound is one rule for every conversion path, and a JSON record's problems are named
by their real kind.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from helpers.models import TrainedModel
from streamscore.config import KeepColumns
from streamscore.kafka.codec import DUPLICATE_FIELD, NAN, NOT_JSON, OUT_OF_RANGE, JsonDecoder
from streamscore.mapping import build_feeds, plan_inputs
from streamscore.model import resolve_model
from streamscore.model.session import load_model

FLOAT32_MAX_TEXT = 3.4028235e38  # how float32's largest value is usually printed


def _plan(model: TrainedModel, batch: pa.RecordBatch) -> Any:
    signature = load_model(resolve_model(model.path), provider="cpu").signature
    return plan_inputs(signature, {f.name: f.type for f in batch.schema})


def _column_batch(count: pa.Array) -> pa.RecordBatch:
    n = len(count)
    return pa.RecordBatch.from_pydict(
        {
            "amount": pa.array([10.0] * n),
            "score": pa.array([0.5] * n),
            "count": count,
            "category": pa.array(["fuel"] * n),
        }
    )


@pytest.mark.parametrize(
    "count",
    [
        pa.array([1.0, 2.0**63, 3.0]),
        pa.array([1.0, -(2.0**64), 3.0]),
        pa.array([Decimal(1), Decimal(2**63), Decimal(3)], pa.decimal128(20, 0)),
    ],
    ids=["float-2^63", "float-minus-2^64", "decimal-2^63"],
)
def test_two_to_the_63_into_an_int64_input_is_out_of_range(
    column_model: TrainedModel, count: pa.Array
) -> None:
    batch = _column_batch(count)

    feeds = build_feeds(_plan(column_model, batch), batch)

    assert feeds.rejected.tolist() == [1]
    assert "not a valid int64" in feeds.reasons[0]
    assert feeds.arrays["count"].ravel().tolist() == [1, 3]


def test_largest_int64_float_below_2_63_is_accepted(column_model: TrainedModel) -> None:
    below = float(np.nextafter(2.0**63, 0))
    batch = _column_batch(pa.array([below, -(2.0**63)]))

    feeds = build_feeds(_plan(column_model, batch), batch)

    assert feeds.rejected.tolist() == []
    assert feeds.arrays["count"].ravel().tolist() == [int(below), -(2**63)]


@pytest.mark.parametrize(
    ("value", "rejected"),
    # Values that round to float32's largest value are that value; beyond, out of range.
    [(FLOAT32_MAX_TEXT, False), (-FLOAT32_MAX_TEXT, False), (3.40282357e38, True), (1e39, True)],
)
def test_float32_bound_does_not_depend_on_a_null_in_the_batch(
    dense_model: TrainedModel, value: float, rejected: bool
) -> None:
    other = pa.array([0.0, 1.0, 2.0])
    verdicts = []
    for f1 in (pa.array([0.0, value, 2.0]), pa.array([None, value, 2.0], pa.float64())):
        batch = pa.RecordBatch.from_pydict({"f0": other, "f1": f1, "f2": other, "f3": other})
        feeds = build_feeds(_plan(dense_model, batch), batch)
        verdicts.append(1 in feeds.rejected.tolist())
    assert verdicts == [rejected, rejected]


# ---------------------------------------------------------------- JSON records


def _decoder() -> JsonDecoder:
    return JsonDecoder({"f0": pa.float64(), "f1": pa.float64()}, KeepColumns.parse(None))


GOOD = b'{"f0": 1.0, "f1": 2.0, "id": 1}'


@pytest.mark.parametrize(
    "record",
    [
        b'{"f0": 0.5, "f1": 2.0, "f0": 99999}',
        b'{"f0" : 0.5, "f1": 2.0, "f0":\n 1}',
    ],
    ids=["compact", "spaced"],
)
@pytest.mark.parametrize(
    "company", [[], [GOOD], [GOOD, b"not json"]], ids=["alone", "fast", "slow"]
)
def test_a_repeated_model_field_is_dead_lettered(record: bytes, company: list[bytes]) -> None:
    decoded = _decoder().decode([record, *company])

    assert [(f.index, f.kind) for f in decoded.failures][:1] == [(0, DUPLICATE_FIELD)]
    assert "appears twice" in decoded.failures[0].message
    assert 0 not in decoded.index.tolist()
    assert len(decoded.index) == (1 if company else 0)


@pytest.mark.parametrize(
    "neighbour",
    [b'{"f0" : 1.0,"f1":2.0}', b'{"\\u0066\\u0030":1.0,"f1":2.0}', b'{"f0":1.0,"f1" :2.0}'],
    ids=["spaced-key", "escaped-key", "spaced-other-key"],
)
def test_a_repeated_field_is_found_beside_a_record_whose_keys_match_less(
    neighbour: bytes,
) -> None:
    # The repeated key's extra match must not be balanced out by a neighbour's missing one.
    repeated = b'{"f0":0.5,"f1":2.0,"f0":99999}'

    decoded = _decoder().decode([repeated, neighbour])

    assert [(f.index, f.kind) for f in decoded.failures] == [(0, DUPLICATE_FIELD)]
    assert decoded.index.tolist() == [1]


def test_a_field_repeated_once_plainly_and_once_escaped_is_found() -> None:
    decoded = _decoder().decode([b'{"\\u0066\\u0030":0.5,"f1":2.0,"f0":9}', GOOD])

    assert [(f.index, f.kind) for f in decoded.failures] == [(0, DUPLICATE_FIELD)]


def test_a_field_name_inside_a_string_value_is_no_duplicate() -> None:
    decoded = _decoder().decode([b'{"f0": 1.0, "f1": 2.0, "note": "\\"f0\\" twice"}', GOOD])

    assert decoded.failures == []
    assert decoded.index.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("record", "kind", "words"),
    [
        (b'{"f0": 1e400, "f1": 2.0}', OUT_OF_RANGE, "out of range"),
        (b'\xef\xbb\xbf{"f0": 1.0, "f1": 2.0}', NOT_JSON, "byte order mark"),
        (b'{"f0": 1.0, "f1": 2.0, "s": "\\ud800"}', NOT_JSON, "surrogate"),
        (b'{"f0": NaN, "f1": 2.0}', NAN, "NaN"),
        (b'{"f0": -Infinity, "f1": 2.0}', NAN, "Infinity"),
    ],
    ids=["1e400", "bom", "lone-surrogate", "nan", "infinity"],
)
def test_what_python_json_accepts_but_json_does_not_gets_its_own_kind(
    record: bytes, kind: str, words: str
) -> None:
    for batch in ([record], [record, GOOD]):
        decoded = _decoder().decode(batch)
        assert [(f.index, f.kind) for f in decoded.failures] == [(0, kind)]
        assert words in decoded.failures[0].message


def test_field_names_with_regex_characters_are_checked_literally() -> None:
    decoder = JsonDecoder({"a b-c.d": pa.float64(), "é(x)": pa.float64()})
    once = '{"a b-c.d": 1, "é(x)": 2}'.encode()
    twice = '{"a b-c.d": 1, "é(x)": 2, "é(x)": 3}'.encode()
    near = '{"a b-c.d": 1, "é(x)": 2, "aXb-c.d": 3}'.encode()

    decoded = decoder.decode([once, twice, near])

    assert [(f.index, f.kind) for f in decoded.failures] == [(1, DUPLICATE_FIELD)]
    assert decoded.index.tolist() == [0, 2]


def test_a_repeated_passthrough_field_is_passed_as_it_is() -> None:
    # Only model fields are checked: the model never reads the others.
    record = b'{"f0": 1.0, "f1": 2.0, "id": 1, "id": 2, "meta": {"f0": 3}}'

    decoded = _decoder().decode([record, GOOD])

    assert decoded.failures == []
