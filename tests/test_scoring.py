"""Scores: streamscore gives scikit-learn's probabilities, whatever the model's shape.

Every test scores real Parquet files with ``run_batch`` and reads the output files back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.data import column_table, dense_table, read_output, write_parquet
from helpers.models import TrainedModel
from helpers.runs import score
from streamscore.errors import UsageError
from streamscore.scoring import REASON_COLUMN

ATOL = 1e-5


def probabilities(table: pa.Table, prefix: str = "probabilities") -> np.ndarray:
    return np.column_stack([table.column(f"{prefix}_{i}").to_numpy() for i in (0, 1)])


def test_dense_model_scores_equal_predict_proba(tmp_path: Path, dense_model: TrainedModel) -> None:
    source = dense_table(1000)
    write_parquet(tmp_path / "in" / "part-0.parquet", source)

    summary, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path, batch_size=128)

    scored = read_output(tmp_path / "out" / "part-0.parquet")
    assert summary.rows_scored == scored.num_rows == 1000
    assert scored.column("id").to_pylist() == source.column("id").to_pylist()
    expected = dense_model.predict_proba(source)
    np.testing.assert_allclose(probabilities(scored), expected, atol=ATOL)
    assert scored.column("label").to_pylist() == expected.argmax(axis=1).tolist()


def test_hgb_model_scores_equal_predict_proba(tmp_path: Path, hgb_model: TrainedModel) -> None:
    source = dense_table(700, seed=5)
    write_parquet(tmp_path / "in.parquet", source)

    score(tmp_path / "in.parquet", tmp_path / "out", hgb_model.path)

    scored = read_output(tmp_path / "out" / "in.parquet")
    np.testing.assert_allclose(probabilities(scored), hgb_model.predict_proba(source), atol=ATOL)


def test_per_column_pipeline_with_string_column_equals_predict_proba(
    tmp_path: Path, column_model: TrainedModel
) -> None:
    source = column_table(900)
    write_parquet(tmp_path / "in" / "rows.parquet", source)

    summary, _ = score(tmp_path / "in", tmp_path / "out", column_model.path, batch_size=100)

    scored = read_output(tmp_path / "out" / "rows.parquet")
    assert summary.rows_scored == 900 and summary.rows_rejected == 0
    assert scored.column("id").to_pylist() == list(range(900))
    np.testing.assert_allclose(probabilities(scored), column_model.predict_proba(source), atol=ATOL)


def test_features_option_picks_and_orders_columns(
    tmp_path: Path, unnamed_model: TrainedModel
) -> None:
    source = dense_table(300).rename_columns(["id", "d", "c", "b", "a", "note"])
    write_parquet(tmp_path / "in.parquet", source)

    score(
        tmp_path / "in.parquet", tmp_path / "out", unnamed_model.path, features=("a", "b", "c", "d")
    )

    scored = read_output(tmp_path / "out" / "in.parquet")
    as_model_sees_it = source.select(["a", "b", "c", "d"]).rename_columns(["f0", "f1", "f2", "f3"])
    np.testing.assert_allclose(
        probabilities(scored), unnamed_model.predict_proba(as_model_sees_it), atol=ATOL
    )


def test_zipmap_output_becomes_one_column_per_class(
    tmp_path: Path, zipmap_model: TrainedModel
) -> None:
    source = dense_table(400)
    write_parquet(tmp_path / "in.parquet", source)

    score(tmp_path / "in.parquet", tmp_path / "out", zipmap_model.path)

    scored = read_output(tmp_path / "out" / "in.parquet")
    score_columns = [c for c in scored.column_names if c.startswith("output_")]
    assert score_columns == ["output_label", "output_probability_0", "output_probability_1"]
    np.testing.assert_allclose(
        probabilities(scored, "output_probability"),
        zipmap_model.predict_proba(source),
        atol=ATOL,
    )


@pytest.mark.parametrize(
    ("selection", "columns"),
    [
        (("probabilities",), ["probabilities_0", "probabilities_1"]),
        (("probabilities_1",), ["probabilities_1"]),
        (("label", "probabilities_0"), ["label", "probabilities_0"]),
    ],
)
def test_outputs_selects_whole_outputs_or_single_columns(
    tmp_path: Path, dense_model: TrainedModel, selection: tuple[str, ...], columns: list[str]
) -> None:
    source = dense_table(50)
    write_parquet(tmp_path / "in.parquet", source)

    score(
        tmp_path / "in.parquet", tmp_path / "out", dense_model.path, outputs=selection, keep="none"
    )

    scored = read_output(tmp_path / "out" / "in.parquet")
    assert scored.column_names == columns
    expected = dense_model.predict_proba(source)
    for name in columns:
        if name.startswith("probabilities_"):
            index = int(name.rsplit("_", 1)[1])
            np.testing.assert_allclose(
                scored.column(name).to_numpy(), expected[:, index], atol=ATOL
            )


@pytest.mark.parametrize("selection", [("nope",), ("probabilities_7",), ("label_0",)])
def test_outputs_naming_an_unknown_output_or_column_is_a_usage_error(
    tmp_path: Path, dense_model: TrainedModel, selection: tuple[str, ...]
) -> None:
    write_parquet(tmp_path / "in.parquet", dense_table(20))

    with pytest.raises(UsageError, match="--outputs"):
        score(tmp_path / "in.parquet", tmp_path / "out", dense_model.path, outputs=selection)
    assert not list((tmp_path / "out").rglob("*.parquet"))  # caught before scoring anything


def nan_table() -> pa.Table:
    source = dense_table(6)
    f1 = source.column("f1").to_pylist()
    f1[2] = float("nan")
    f1[4] = float("nan")
    return source.set_column(2, "f1", pa.array(f1, pa.float64()))


def test_nan_reaches_a_model_that_handles_it(tmp_path: Path, hgb_model: TrainedModel) -> None:
    source = nan_table()
    write_parquet(tmp_path / "in.parquet", source)

    summary, _ = score(tmp_path / "in.parquet", tmp_path / "out", hgb_model.path)

    assert summary.rows_scored == 6 and summary.rows_rejected == 0
    scored = read_output(tmp_path / "out" / "in.parquet")
    np.testing.assert_allclose(probabilities(scored), hgb_model.predict_proba(source), atol=ATOL)


def test_reject_nan_sets_nan_rows_aside(tmp_path: Path, hgb_model: TrainedModel) -> None:
    write_parquet(tmp_path / "in.parquet", nan_table())

    summary, _ = score(tmp_path / "in.parquet", tmp_path / "out", hgb_model.path, reject_nan=True)

    assert (summary.rows_scored, summary.rows_rejected) == (4, 2)
    rejected = pq.read_table(tmp_path / "out" / "_rejected" / "in.parquet")
    assert rejected.column("id").to_pylist() == [2, 4]
    assert set(rejected.column(REASON_COLUMN).to_pylist()) == {
        "NaN in column 'f1' (model input 'input')"
    }


def test_rows_the_model_scores_as_nan_are_rejected(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    write_parquet(tmp_path / "in.parquet", nan_table())

    summary, _ = score(tmp_path / "in.parquet", tmp_path / "out", dense_model.path)

    assert (summary.rows_scored, summary.rows_rejected) == (4, 2)
    scored = read_output(tmp_path / "out" / "in.parquet")
    assert scored.column("id").to_pylist() == [0, 1, 3, 5]
    assert not np.isnan(probabilities(scored)).any()
    rejected = pq.read_table(tmp_path / "out" / "_rejected" / "in.parquet")
    assert rejected.column("id").to_pylist() == [2, 4]
    assert all("model returned NaN" in r for r in rejected.column(REASON_COLUMN).to_pylist())


def test_other_numeric_and_text_columns_are_cast_on_the_way_in(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = dense_table(200)
    as_float = source.select(["f0", "f1", "f2", "f3"])
    mixed = pa.table(
        {
            "f0": pa.array(np.round(as_float.column("f0").to_numpy() * 1000)).cast(pa.int32()),
            "f1": as_float.column("f1").cast(pa.float32()),
            "f2": as_float.column("f2").cast(pa.decimal128(12, 3)),
            "f3": pa.array([repr(v) for v in as_float.column("f3").to_pylist()]),
        }
    )
    write_parquet(tmp_path / "in.parquet", mixed)

    summary, _ = score(tmp_path / "in.parquet", tmp_path / "out", dense_model.path)

    assert (summary.rows_scored, summary.rows_rejected) == (200, 0)
    scored = read_output(tmp_path / "out" / "in.parquet")
    expected = dense_model.predict_proba(
        mixed.cast(pa.schema([(n, pa.float64()) for n in mixed.column_names]))
    )
    np.testing.assert_allclose(probabilities(scored), expected, atol=ATOL)


def test_integer_columns_of_any_width_feed_an_int64_input(
    tmp_path: Path, column_model: TrainedModel
) -> None:
    source = column_table(300)
    source = source.set_column(3, "count", source.column("count").cast(pa.int16()))
    write_parquet(tmp_path / "in.parquet", source)

    score(tmp_path / "in.parquet", tmp_path / "out", column_model.path)

    scored = read_output(tmp_path / "out" / "in.parquet")
    np.testing.assert_allclose(probabilities(scored), column_model.predict_proba(source), atol=ATOL)
