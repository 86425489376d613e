"""Input mapping: which columns feed which model input, safe casts, and rows set aside.

Planning errors (missing column, impossible type, wrong --features) come before any bulk
reading and name the column and the model input. Conversion never fails on a bad value:
the row is rejected with a reason. Hypothesis checks the conversion's invariants.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.data import dense_table, write_parquet
from helpers.models import TrainedModel
from helpers.runs import score
from streamscore import mapping
from streamscore.errors import InputError, MappingError
from streamscore.mapping import InputPlan, build_feeds, plan_inputs
from streamscore.model import ModelSignature, resolve_model
from streamscore.model.session import load_model

FEATURES = ["f0", "f1", "f2", "f3"]


def signature(model: TrainedModel) -> ModelSignature:
    return load_model(resolve_model(model.path), provider="cpu").signature


def plan_for(model: TrainedModel, table: pa.Table | pa.RecordBatch, **kw: Any) -> InputPlan:
    return plan_inputs(signature(model), {f.name: f.type for f in table.schema}, **kw)


def batch_of(**columns: pa.Array) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(columns)


def dense_batch(f1: pa.Array, rows: int | None = None) -> pa.RecordBatch:
    """A batch for the 4-feature dense model whose f1 column is ``f1``."""
    n = len(f1) if rows is None else rows
    other = pa.array(np.arange(n, dtype=np.float64))
    return batch_of(f0=other, f1=f1, f2=other, f3=other)


def column_batch(**override: pa.Array) -> pa.RecordBatch:
    """A 3-row batch for the per-column model, with some columns replaced."""
    columns: dict[str, pa.Array] = {
        "amount": pa.array([10.0, 20.0, 30.0]),
        "score": pa.array([0.5, -0.5, 0.0]),
        "count": pa.array([1, 2, 3]),
        "category": pa.array(["grocery", "travel", "fuel"]),
    }
    columns.update(override)
    return pa.RecordBatch.from_pydict(columns)


# ---------------------------------------------------------------- planning


def test_2d_input_is_fed_from_feature_names_metadata(dense_model: TrainedModel) -> None:
    plan = plan_for(dense_model, dense_table(3))

    assert plan.columns == tuple(FEATURES)
    assert [(f.input.name, f.matrix) for f in plan.feeds] == [("input", True)]


def test_per_column_model_feeds_each_input_from_its_column(column_model: TrainedModel) -> None:
    plan = plan_for(column_model, column_batch())

    assert [(f.input.name, f.columns, f.matrix) for f in plan.feeds] == [
        ("amount", ("amount",), False),
        ("score", ("score",), False),
        ("count", ("count",), False),
        ("category", ("category",), False),
    ]


def test_missing_column_names_the_column_and_the_model_input(dense_model: TrainedModel) -> None:
    with pytest.raises(MappingError) as caught:
        plan_for(dense_model, dense_table(3).drop_columns(["f2"]))

    assert "column 'f2'" in caught.value.message
    assert "model input 'input'" in caught.value.message
    assert "\n" not in caught.value.one_line()


def test_missing_per_column_input_is_named(column_model: TrainedModel) -> None:
    batch = column_batch().drop_columns(["category"])

    with pytest.raises(MappingError, match="column 'category' needed by model input 'category'"):
        plan_for(column_model, batch)


@pytest.mark.parametrize(
    "impossible",
    [
        pa.array([0, 1, 2], pa.timestamp("ms", tz="UTC")),
        pa.array([[1.0], [2.0], []], pa.list_(pa.float64())),
        pa.array([b"a", b"b", b"c"], pa.binary()),
    ],
    ids=["timestamp", "list", "binary"],
)
def test_impossible_type_for_a_float_input_is_a_mapping_error(
    dense_model: TrainedModel, impossible: pa.Array
) -> None:
    with pytest.raises(MappingError) as caught:
        plan_for(dense_model, dense_batch(impossible))

    message = caught.value.message
    assert "column 'f1'" in message and "model input 'input'" in message
    assert str(impossible.type) in message


def test_numbers_cannot_feed_a_string_input(column_model: TrainedModel) -> None:
    with pytest.raises(MappingError, match="column 'category'.*model input 'category'"):
        plan_for(column_model, column_batch(category=pa.array([1, 2, 3])))


def test_features_must_match_the_input_width(unnamed_model: TrainedModel) -> None:
    with pytest.raises(MappingError, match="takes 4 features but 3 column names were given"):
        plan_for(unnamed_model, dense_table(3), features=["f0", "f1", "f2"])


def test_features_choose_the_order(unnamed_model: TrainedModel) -> None:
    plan = plan_for(unnamed_model, dense_table(3), features=["f3", "f2", "f1", "f0"])

    assert plan.columns == ("f3", "f2", "f1", "f0")


def test_features_naming_a_missing_column_is_a_mapping_error(
    unnamed_model: TrainedModel,
) -> None:
    with pytest.raises(MappingError, match="column 'amount' needed by model input 'input'"):
        plan_for(unnamed_model, dense_table(3), features=["f0", "f1", "f2", "amount"])


def test_2d_input_without_feature_names_asks_for_features(unnamed_model: TrainedModel) -> None:
    with pytest.raises(MappingError) as caught:
        plan_for(unnamed_model, dense_table(3))

    assert "feature_names" in caught.value.message
    assert caught.value.hint is not None and "--features" in caught.value.hint


def test_a_mapping_error_stops_the_run_before_scoring(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    write_parquet(tmp_path / "in.parquet", dense_table(10).drop_columns(["f3"]))

    with pytest.raises(InputError, match="column 'f3' needed by model input 'input'"):
        score(tmp_path / "in.parquet", tmp_path / "out", dense_model.path)
    assert not (tmp_path / "out" / "in.parquet").exists()


# ---------------------------------------------------------------- conversion


@pytest.mark.parametrize(
    "column",
    [
        pa.array([1, -2, 3], pa.int32()),
        pa.array([1, 2, 3], pa.uint8()),
        pa.array([1.5, -2.25, 3.0], pa.float32()),
        pa.array([Decimal("1.50"), Decimal("-2.25"), Decimal("3.00")], pa.decimal128(6, 2)),
        pa.array([True, False, True]),
    ],
    ids=["int32", "uint8", "float32", "decimal", "bool"],
)
def test_safe_numeric_casts_into_a_float_input(dense_model: TrainedModel, column: pa.Array) -> None:
    batch = dense_batch(column)

    feeds = build_feeds(plan_for(dense_model, batch), batch)

    assert feeds.rejected.tolist() == []
    expected = np.array([float(v) for v in column.to_pylist()], dtype=np.float32)
    np.testing.assert_array_equal(feeds.arrays["input"][:, 1], expected)
    assert feeds.arrays["input"].dtype == np.float32


@pytest.mark.parametrize("int_type", [pa.int8(), pa.int32(), pa.int64(), pa.uint16()])
def test_integer_columns_feed_an_int64_input(
    column_model: TrainedModel, int_type: pa.DataType
) -> None:
    batch = column_batch(count=pa.array([7, 0, 42], int_type))

    feeds = build_feeds(plan_for(column_model, batch), batch)

    assert feeds.arrays["count"].dtype == np.int64
    assert feeds.arrays["count"].ravel().tolist() == [7, 0, 42]
    assert feeds.arrays["count"].shape == (3, 1)


def test_fractional_float_into_int64_input_is_rejected(column_model: TrainedModel) -> None:
    batch = column_batch(count=pa.array([1.0, 1.5, 3.0]))

    feeds = build_feeds(plan_for(column_model, batch), batch)

    assert feeds.accepted.tolist() == [0, 2]
    assert feeds.arrays["count"].ravel().tolist() == [1, 3]
    assert feeds.rejected.tolist() == [1]
    assert feeds.reasons == [
        "value 1.5 in column 'count' (model input 'count') is not a valid int64"
    ]


def test_unsigned_values_beyond_int64_are_rejected(column_model: TrainedModel) -> None:
    batch = column_batch(count=pa.array([1, 2**63 + 5, 3], pa.uint64()))

    feeds = build_feeds(plan_for(column_model, batch), batch)

    assert feeds.rejected.tolist() == [1]
    assert "out of range for int64" in feeds.reasons[0]


def test_float64_beyond_float32_range_is_rejected(dense_model: TrainedModel) -> None:
    batch = dense_batch(pa.array([1.0, 1e300, -1e300, float("inf")]))

    feeds = build_feeds(plan_for(dense_model, batch), batch)

    assert feeds.rejected.tolist() == [1, 2]
    assert all("column 'f1'" in reason for reason in feeds.reasons)
    assert feeds.arrays["input"][:, 1].tolist() == [1.0, float("inf")]


def test_digit_strings_are_parsed_per_row_and_bad_ones_rejected(
    dense_model: TrainedModel,
) -> None:
    batch = dense_batch(pa.array(["1.5", " 2 ", "abc", None, "-3e2"]))

    feeds = build_feeds(plan_for(dense_model, batch), batch)

    assert feeds.accepted.tolist() == [0, 1, 4]
    assert feeds.arrays["input"][:, 1].tolist() == [1.5, 2.0, -300.0]
    assert feeds.rejected.tolist() == [2, 3]
    assert feeds.reasons == [
        "cannot cast 'abc' in column 'f1' (model input 'input') to float",
        "null in column 'f1' (model input 'input')",
    ]


def test_digit_strings_into_int64_input(column_model: TrainedModel) -> None:
    batch = column_batch(count=pa.array(["4", "4.5", "x"]))

    feeds = build_feeds(plan_for(column_model, batch), batch)

    assert feeds.accepted.tolist() == [0]
    assert feeds.arrays["count"].ravel().tolist() == [4]
    assert [r.split(" in ")[0] for r in feeds.reasons] == ["cannot cast '4.5'", "cannot cast 'x'"]


@pytest.mark.parametrize(
    ("column", "override"),
    [
        ("amount", pa.array([1.0, None, 3.0])),
        ("count", pa.array([1, None, 3])),
        ("category", pa.array(["fuel", None, "travel"])),
    ],
)
def test_nulls_are_rejected_naming_the_column(
    column_model: TrainedModel, column: str, override: pa.Array
) -> None:
    batch = column_batch(**{column: override})

    feeds = build_feeds(plan_for(column_model, batch), batch)

    assert feeds.accepted.tolist() == [0, 2]
    assert feeds.rejected.tolist() == [1]
    assert feeds.reasons == [f"null in column '{column}' (model input '{column}')"]
    assert all(len(values) == 2 for values in feeds.arrays.values())


def test_nullable_bool_column_rejects_nulls(dense_model: TrainedModel) -> None:
    batch = dense_batch(pa.array([True, None, False]))

    feeds = build_feeds(plan_for(dense_model, batch), batch)

    assert feeds.rejected.tolist() == [1]
    assert feeds.arrays["input"][:, 1].tolist() == [1.0, 0.0]


def test_string_input_accepts_dictionary_and_large_strings(column_model: TrainedModel) -> None:
    for category in (
        pa.array(["fuel", "travel", "fuel"]).dictionary_encode(),
        pa.array(["fuel", "travel", "fuel"], pa.large_string()),
    ):
        batch = column_batch(category=category)
        feeds = build_feeds(plan_for(column_model, batch), batch)
        assert feeds.arrays["category"].ravel().tolist() == ["fuel", "travel", "fuel"]


def test_nan_passes_through_unless_rejected(dense_model: TrainedModel) -> None:
    batch = dense_batch(pa.array([1.0, float("nan"), 2.0]))
    plan = plan_for(dense_model, batch)

    passed = build_feeds(plan, batch)
    rejected = build_feeds(plan, batch, reject_nan=True)

    assert passed.rejected.tolist() == [] and np.isnan(passed.arrays["input"][1, 1])
    assert rejected.rejected.tolist() == [1]
    assert rejected.reasons == ["NaN in column 'f1' (model input 'input')"]


def test_first_reason_per_row_wins_and_rows_are_rejected_once(
    dense_model: TrainedModel,
) -> None:
    other = pa.array([1.0, None, 3.0])
    batch = batch_of(f0=other, f1=pa.array([None, None, 1.0]), f2=other, f3=other)

    feeds = build_feeds(plan_for(dense_model, batch), batch)

    assert feeds.rejected.tolist() == [0, 1]
    assert feeds.reasons == [
        "null in column 'f1' (model input 'input')",
        "null in column 'f0' (model input 'input')",
    ]


def test_empty_batch_gives_empty_feeds(dense_model: TrainedModel) -> None:
    batch = dense_batch(pa.array([], pa.float64()))

    feeds = build_feeds(plan_for(dense_model, batch), batch)

    assert feeds.accepted.tolist() == [] and feeds.arrays["input"].shape == (0, 4)


# ---------------------------------------------------------------- properties

NUMERIC_TYPES = [
    pa.int8(),
    pa.int16(),
    pa.int32(),
    pa.int64(),
    pa.uint8(),
    pa.uint32(),
    pa.float32(),
    pa.float64(),
    pa.bool_(),
]


def _values(dtype: pa.DataType) -> st.SearchStrategy[Any]:
    if pa.types.is_boolean(dtype):
        return st.booleans()
    if pa.types.is_floating(dtype):
        special = st.sampled_from([float("nan"), float("inf"), float("-inf")])
        if dtype == pa.float32():
            return st.floats(width=32) | special
        # Within float32's range: larger values are rejected (tested above).
        return st.floats(min_value=-3e38, max_value=3e38) | special
    if pa.types.is_unsigned_integer(dtype):
        return st.integers(0, 2**dtype.bit_width - 1)
    return st.integers(-(2 ** (dtype.bit_width - 1)), 2 ** (dtype.bit_width - 1) - 1)


@st.composite
def nullable_columns(draw: st.DrawFn, rows: int) -> pa.Array:
    dtype = draw(st.sampled_from(NUMERIC_TYPES))
    values = draw(st.lists(st.none() | _values(dtype), min_size=rows, max_size=rows))
    return pa.array(values, type=dtype)


@st.composite
def dense_batches(draw: st.DrawFn) -> pa.RecordBatch:
    rows = draw(st.integers(0, 40))
    return batch_of(**{name: draw(nullable_columns(rows)) for name in FEATURES})


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=dense_batches(), reject_nan=st.booleans())
def test_conversion_partitions_rows_and_keeps_values(
    dense_model: TrainedModel, batch: pa.RecordBatch, reject_nan: bool
) -> None:
    feeds = build_feeds(plan_for(dense_model, batch), batch, reject_nan=reject_nan)

    n = batch.num_rows
    accepted, rejected = feeds.accepted.tolist(), feeds.rejected.tolist()
    assert sorted(accepted + rejected) == list(range(n))  # a partition of the rows...
    assert accepted == sorted(accepted) and rejected == sorted(rejected)  # ...in row order
    assert len(feeds.reasons) == len(rejected)
    rows = batch.to_pylist()
    for row, reason in zip(rejected, feeds.reasons, strict=True):
        named = reason.split("'")[1]  # every reason names the offending column first
        value = rows[row][named]
        assert value is None or (reject_nan and _is_nan(value)), (reason, rows[row])
    for row in accepted:  # accepted rows have no nulls (and no NaN when rejected)
        assert all(v is not None and not (reject_nan and _is_nan(v)) for v in rows[row].values())
    matrix = feeds.arrays["input"]
    assert matrix.shape == (len(accepted), len(FEATURES)) and matrix.dtype == np.float32
    expected = np.array(
        [[float(rows[r][name]) for name in FEATURES] for r in accepted], dtype=np.float32
    ).reshape(len(accepted), len(FEATURES))
    np.testing.assert_array_equal(matrix, expected)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.none()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(alphabet="0123456789.-e x", max_size=6),
        max_size=30,
    )
)
def test_int64_input_takes_exact_integers_only(
    column_model: TrainedModel, values: list[Any]
) -> None:
    """Whatever arrives as text, accepted rows carry exactly the integer the text spelled."""
    text = pa.array([None if v is None else str(v) for v in values], pa.string())
    n = len(text)
    batch = column_batch(
        amount=pa.array([1.0] * n),
        score=pa.array([0.0] * n),
        count=text,
        category=pa.array(["fuel"] * n),
    )

    feeds = build_feeds(plan_for(column_model, batch), batch)

    assert sorted(feeds.accepted.tolist() + feeds.rejected.tolist()) == list(range(n))
    strings = text.to_pylist()
    for row, fed in zip(feeds.accepted.tolist(), feeds.arrays["count"].ravel(), strict=True):
        assert int(strings[row].strip()) == fed
    for row, reason in zip(feeds.rejected.tolist(), feeds.reasons, strict=True):
        assert "column 'count'" in reason
        if strings[row] is None:
            assert reason.startswith("null in")
        else:
            assert reason.startswith(f"cannot cast {strings[row]!r}")


def test_features_for_a_model_with_several_inputs_is_an_error(
    column_model: TrainedModel,
) -> None:
    with pytest.raises(MappingError, match="one 2-D input"):
        plan_for(column_model, column_batch(), features=["amount"])


def test_an_all_null_column_feeding_a_string_input_rejects_its_rows(
    column_model: TrainedModel,
) -> None:
    batch = column_batch(category=pa.nulls(3))
    feeds = build_feeds(plan_for(column_model, batch), batch)

    assert feeds.rejected.tolist() == [0, 1, 2]
    assert all("null in column 'category'" in reason for reason in feeds.reasons)


@st.composite
def float_batches(draw: st.DrawFn) -> pa.RecordBatch:
    """Float columns of one type in any order: large, infinite and NaN values included."""
    dtype = draw(st.sampled_from([pa.float32(), pa.float64()]))
    rows = draw(st.integers(1, 40))
    values = st.floats(width=32 if dtype == pa.float32() else 64) | st.sampled_from([1e300])
    order = draw(st.permutations(FEATURES))
    columns = {
        name: pa.array(draw(st.lists(values, min_size=rows, max_size=rows)), type=dtype)
        for name in order
    }
    return pa.RecordBatch.from_pydict(columns)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=float_batches())
def test_a_small_batch_stacked_at_once_feeds_what_column_by_column_feeds(
    dense_model: TrainedModel, batch: pa.RecordBatch
) -> None:
    """Small batches (a live tail's) are stacked in one Arrow call: same values, same rejects."""
    plan = plan_for(dense_model, batch)

    at_once = build_feeds(plan, batch)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(mapping, "SMALL_MATRIX_ROWS", 0)
        by_column = build_feeds(plan, batch)

    assert at_once.accepted.tolist() == by_column.accepted.tolist()
    assert at_once.reasons == by_column.reasons
    assert at_once.arrays["input"].dtype == by_column.arrays["input"].dtype == np.float32
    np.testing.assert_array_equal(at_once.arrays["input"], by_column.arrays["input"])
