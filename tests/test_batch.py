"""``streamscore batch`` through its Python API: layout, passthrough, metadata, reruns, bad data.

Every test writes real Parquet files into tmp_path and reads the output tree back.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.data import (
    dense_table,
    read_output,
    streamscore_metadata,
    write_parquet,
)
from helpers.models import TrainedModel, build_repository
from helpers.runs import score
from streamscore import __version__
from streamscore.batch import REJECTED_DIR, SUMMARY_NAME, output_lock
from streamscore.config import OnError
from streamscore.errors import InputError, LockedError, UsageError
from streamscore.scoring import REASON_COLUMN

SCORES = ["label", "probabilities_0", "probabilities_1"]


def files_under(root: Path) -> list[str]:
    """Every file under ``root`` (hidden ones included), as sorted relative paths."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def with_bad_rows(table: pa.Table, column: str, bad: dict[int, object]) -> pa.Table:
    """``table`` with some values of a float column replaced (by nulls or strings)."""
    values: list[object] = list(table.column(column).to_pylist())
    for row, value in bad.items():
        values[row] = value
    as_text = any(isinstance(v, str) for v in bad.values())
    array = pa.array([None if v is None else str(v) for v in values] if as_text else values)
    return table.set_column(table.schema.get_field_index(column), column, array)


# ---------------------------------------------------------------- layout and columns


def test_hive_partitions_are_mirrored_one_output_per_input(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = tmp_path / "in"
    for i, relative in enumerate(
        [
            "date=2026-01-01/part-0.parquet",
            "date=2026-01-01/part-1.parquet",
            "date=2026-01-02/region=eu/part-0.parquet",
            "top.parquet",
        ]
    ):
        write_parquet(source / relative, dense_table(20, first_id=100 * i))
    (source / "date=2026-01-01" / "notes.txt").write_text("not parquet")
    write_parquet(source / "_staging" / "ignored.parquet", dense_table(5))
    write_parquet(source / ".hidden.parquet", dense_table(5))

    summary, events = score(source, tmp_path / "out", dense_model.path)

    assert files_under(tmp_path / "out") == [
        ".streamscore.lock",
        SUMMARY_NAME,
        "date=2026-01-01/part-0.parquet",
        "date=2026-01-01/part-1.parquet",
        "date=2026-01-02/region=eu/part-0.parquet",
        "top.parquet",
    ]
    assert (summary.files_ok, summary.rows_in, summary.rows_scored) == (4, 80, 80)
    assert sorted(e["input"] for e in events) == [
        "date=2026-01-01/part-0.parquet",
        "date=2026-01-01/part-1.parquet",
        "date=2026-01-02/region=eu/part-0.parquet",
        "top.parquet",
    ]
    ids = read_output(tmp_path / "out" / "date=2026-01-02/region=eu/part-0.parquet").column("id")
    assert ids.to_pylist() == list(range(200, 220))


def test_a_single_file_input_is_scored_into_out(tmp_path: Path, dense_model: TrainedModel) -> None:
    write_parquet(tmp_path / "one.parquet", dense_table(10))

    score(tmp_path / "one.parquet", tmp_path / "out", dense_model.path)

    assert read_output(tmp_path / "out" / "one.parquet").num_rows == 10


def test_output_inside_input_is_not_read_back(tmp_path: Path, dense_model: TrainedModel) -> None:
    write_parquet(tmp_path / "data" / "a.parquet", dense_table(10))

    score(tmp_path / "data", tmp_path / "data" / "scored", dense_model.path)
    summary, _ = score(tmp_path / "data", tmp_path / "data" / "scored", dense_model.path)

    assert (summary.files_ok, summary.files_skipped) == (0, 1)
    assert not (tmp_path / "data" / "scored" / "scored").exists()


def test_passthrough_default_keeps_every_column_that_is_not_a_model_input(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = dense_table(30)
    write_parquet(tmp_path / "in.parquet", source)

    score(tmp_path / "in.parquet", tmp_path / "out", dense_model.path)

    scored = read_output(tmp_path / "out" / "in.parquet")
    assert scored.column_names == ["id", "note", *SCORES]
    assert scored.select(["id", "note"]).equals(source.select(["id", "note"]))


@pytest.mark.parametrize(
    ("keep", "columns"),
    [
        ("note,id", ["note", "id"]),
        ("all", ["id", "f0", "f1", "f2", "f3", "note"]),
        ("none", []),
        ("default", ["id", "note"]),
    ],
)
def test_keep_chooses_passthrough_columns(
    tmp_path: Path, dense_model: TrainedModel, keep: str, columns: list[str]
) -> None:
    source = dense_table(30)
    write_parquet(tmp_path / "in.parquet", source)

    score(tmp_path / "in.parquet", tmp_path / "out", dense_model.path, keep=keep)

    scored = read_output(tmp_path / "out" / "in.parquet")
    assert scored.column_names == [*columns, *SCORES]
    assert scored.select(columns).equals(source.select(columns))


def test_keep_naming_a_missing_column_is_a_usage_error(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    write_parquet(tmp_path / "in.parquet", dense_table(5))

    with pytest.raises(UsageError, match="--keep names column.*nope"):
        score(tmp_path / "in.parquet", tmp_path / "out", dense_model.path, keep="id,nope")


def test_output_metadata_names_model_source_run_and_counts(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    repo = tmp_path / "repo"
    build_repository(repo, "fraud", [3])
    source = with_bad_rows(dense_table(40), "f0", {5: None})
    write_parquet(tmp_path / "in" / "date=2026-01-01" / "p.parquet", source)

    summary, _ = score(tmp_path / "in", tmp_path / "out", repo / "fraud")

    meta = streamscore_metadata(tmp_path / "out" / "date=2026-01-01" / "p.parquet")
    model_file = repo / "fraud" / "3" / "model.onnx"
    assert meta["model_name"] == "fraud"
    assert meta["model_version"] == "3"
    assert meta["model_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert meta["version"] == __version__
    assert meta["source_file"] == str(tmp_path / "in" / "date=2026-01-01" / "p.parquet")
    assert meta["run_id"] == summary.run_id
    assert (meta["rows_in"], meta["rows_scored"], meta["rows_rejected"]) == ("40", "39", "1")
    assert meta["provider"] == "cpu"
    assert summary.model_version == "3" and summary.model == "fraud"


# ---------------------------------------------------------------- reruns


def test_rerun_skips_files_that_are_already_scored(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    for day in ("01", "02"):
        write_parquet(tmp_path / "in" / f"date={day}" / "p.parquet", dense_table(20))
    first, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path)
    output = tmp_path / "out" / "date=01" / "p.parquet"
    before = output.stat().st_mtime_ns

    second, events = score(tmp_path / "in", tmp_path / "out", dense_model.path)

    assert (second.files_ok, second.files_skipped, second.rows_in) == (0, 2, 0)
    assert {e["status"] for e in events} == {"skipped"}
    assert output.stat().st_mtime_ns == before
    assert streamscore_metadata(output)["run_id"] == first.run_id


def test_new_model_version_rescores_everything(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    models = build_repository(repo, "fraud", [1])
    source = dense_table(50)
    write_parquet(tmp_path / "in" / "p.parquet", source)
    score(tmp_path / "in", tmp_path / "out", repo / "fraud")
    models.update(build_repository(repo, "fraud", [2]))

    summary, _ = score(tmp_path / "in", tmp_path / "out", repo / "fraud")

    assert (summary.files_ok, summary.files_skipped, summary.model_version) == (1, 0, "2")
    output = tmp_path / "out" / "p.parquet"
    assert streamscore_metadata(output)["model_version"] == "2"
    probabilities = read_output(output).column("probabilities_1").to_numpy()
    np.testing.assert_allclose(probabilities, models[2].predict_proba(source)[:, 1], atol=1e-5)
    assert not np.allclose(probabilities, models[1].predict_proba(source)[:, 1], atol=1e-3)


def test_force_rescores_current_files(tmp_path: Path, dense_model: TrainedModel) -> None:
    write_parquet(tmp_path / "in" / "p.parquet", dense_table(20))
    score(tmp_path / "in", tmp_path / "out", dense_model.path)

    summary, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path, force=True)

    assert (summary.files_ok, summary.files_skipped) == (1, 0)
    assert streamscore_metadata(tmp_path / "out" / "p.parquet")["run_id"] == summary.run_id


def test_changed_options_rescore(tmp_path: Path, dense_model: TrainedModel) -> None:
    write_parquet(tmp_path / "in" / "p.parquet", dense_table(20))
    score(tmp_path / "in", tmp_path / "out", dense_model.path)

    summary, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path, keep="none")

    assert summary.files_ok == 1
    assert read_output(tmp_path / "out" / "p.parquet").column_names == SCORES


def test_touched_or_replaced_inputs_are_rescored(tmp_path: Path, dense_model: TrainedModel) -> None:
    for name in ("a", "b", "c"):
        write_parquet(tmp_path / "in" / f"{name}.parquet", dense_table(20))
    score(tmp_path / "in", tmp_path / "out", dense_model.path)
    touched = tmp_path / "in" / "a.parquet"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    write_parquet(tmp_path / "in" / "b.parquet", dense_table(7, first_id=500))

    summary, events = score(tmp_path / "in", tmp_path / "out", dense_model.path)

    assert {e["input"]: e["status"] for e in events} == {
        "a.parquet": "ok",
        "b.parquet": "ok",
        "c.parquet": "skipped",
    }
    assert summary.rows_in == 27
    ids = read_output(tmp_path / "out" / "b.parquet").column("id").to_pylist()
    assert ids == list(range(500, 507))


# ---------------------------------------------------------------- bad rows


def bad_input(tmp_path: Path) -> pa.Table:
    """``in/date=01/p.parquet``: 200 rows; rows 3 and 150 are null, row 77 is text."""
    source = dense_table(200)
    source = with_bad_rows(source, "f2", {3: None, 150: None})
    source = with_bad_rows(source, "f1", {77: "abc", 10: "1.25"})
    write_parquet(tmp_path / "in" / "date=01" / "p.parquet", source)
    write_parquet(tmp_path / "in" / "date=02" / "p.parquet", dense_table(50, first_id=1000))
    return source


def test_bad_rows_are_quarantined_with_their_columns_and_a_reason(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = bad_input(tmp_path)

    summary, events = score(tmp_path / "in", tmp_path / "out", dense_model.path, batch_size=64)

    rejected = pq.read_table(tmp_path / "out" / REJECTED_DIR / "date=01" / "p.parquet")
    assert rejected.column_names == [*source.column_names, REASON_COLUMN]
    assert rejected.column("id").to_pylist() == [3, 77, 150]
    assert (
        rejected.drop_columns([REASON_COLUMN])
        .replace_schema_metadata(None)
        .equals(source.take([3, 77, 150]))
    )
    assert rejected.column(REASON_COLUMN).to_pylist() == [
        "null in column 'f2' (model input 'input')",
        "cannot cast 'abc' in column 'f1' (model input 'input') to float",
        "null in column 'f2' (model input 'input')",
    ]
    scored = read_output(tmp_path / "out" / "date=01" / "p.parquet")
    assert scored.num_rows == 197 and 3 not in scored.column("id").to_pylist()
    assert (summary.rows_in, summary.rows_scored, summary.rows_rejected) == (250, 247, 3)
    assert summary.rejected_reasons == {  # counted by kind: the bad value is masked
        "null in column 'f2' (model input 'input')": 2,
        "cannot cast … in column 'f1' (model input 'input') to float": 1,
    }
    assert [e["rows_rejected"] for e in events] == [3, 0]
    assert not (tmp_path / "out" / REJECTED_DIR / "date=02").exists()


def test_on_error_skip_drops_bad_rows_and_counts_them(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    bad_input(tmp_path)

    summary, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path, on_error=OnError.skip)

    assert (summary.rows_scored, summary.rows_rejected) == (247, 3)
    assert not (tmp_path / "out" / REJECTED_DIR).exists()
    assert read_output(tmp_path / "out" / "date=01" / "p.parquet").num_rows == 197


def test_on_error_fail_stops_naming_file_and_row(tmp_path: Path, dense_model: TrainedModel) -> None:
    source = with_bad_rows(dense_table(200), "f2", {150: None})
    write_parquet(tmp_path / "in" / "p.parquet", source)

    with pytest.raises(InputError) as caught:
        score(
            tmp_path / "in",
            tmp_path / "out",
            dense_model.path,
            on_error=OnError.fail,
            batch_size=64,
        )

    message = caught.value.one_line()
    assert str(tmp_path / "in" / "p.parquet") in message
    assert "row 150" in message and "null in column 'f2'" in message
    assert files_under(tmp_path / "out") == [".streamscore.lock"]


def test_fixed_inputs_leave_no_stale_rejects(tmp_path: Path, dense_model: TrainedModel) -> None:
    bad_input(tmp_path)
    score(tmp_path / "in", tmp_path / "out", dense_model.path)
    write_parquet(tmp_path / "in" / "date=01" / "p.parquet", dense_table(200))

    score(tmp_path / "in", tmp_path / "out", dense_model.path)

    assert not (tmp_path / "out" / REJECTED_DIR / "date=01" / "p.parquet").exists()


def test_rescoring_with_on_error_skip_removes_earlier_rejects(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    bad_input(tmp_path)
    score(tmp_path / "in", tmp_path / "out", dense_model.path)

    score(tmp_path / "in", tmp_path / "out", dense_model.path, on_error=OnError.skip)

    assert not (tmp_path / "out" / REJECTED_DIR / "date=01" / "p.parquet").exists()


def test_a_file_with_every_row_rejected_fails_keeps_its_rejects_and_is_retried(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    # Every row rejected is a schema problem far more often than bad luck: say so.
    source = with_bad_rows(dense_table(3), "f0", {0: None, 1: None, 2: None})
    write_parquet(tmp_path / "in" / "p.parquet", source)
    write_parquet(tmp_path / "in" / "q.parquet", dense_table(4))

    summary, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path)

    assert (summary.files_ok, summary.files_failed, summary.rows_rejected) == (1, 1, 3)
    assert summary.partial
    assert "all 3 rows were rejected" in summary.failures[0]
    assert not (tmp_path / "out" / "p.parquet").exists()
    assert pq.read_table(tmp_path / "out" / REJECTED_DIR / "p.parquet").num_rows == 3

    again, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path)
    assert (again.files_skipped, again.files_failed) == (1, 1)


def test_an_empty_input_file_gives_an_empty_output_with_the_same_columns(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    write_parquet(tmp_path / "in" / "empty.parquet", dense_table(0))
    write_parquet(tmp_path / "in" / "full.parquet", dense_table(5))

    summary, _ = score(
        tmp_path / "in", tmp_path / "out", dense_model.path, outputs=("probabilities_1",)
    )

    assert (summary.files_ok, summary.rows_in) == (2, 5)
    empty = read_output(tmp_path / "out" / "empty.parquet")
    full = read_output(tmp_path / "out" / "full.parquet")
    assert empty.num_rows == 0 and empty.schema == full.schema


# ---------------------------------------------------------------- unreadable inputs, lock


def test_corrupt_file_fails_alone_and_the_run_is_partial(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    write_parquet(tmp_path / "in" / "date=01" / "p.parquet", dense_table(20))
    (tmp_path / "in" / "date=02").mkdir()
    (tmp_path / "in" / "date=02" / "p.parquet").write_bytes(b"PAR1 this is not parquet")
    write_parquet(tmp_path / "in" / "date=03" / "p.parquet", dense_table(20))

    summary, events = score(tmp_path / "in", tmp_path / "out", dense_model.path)

    assert summary.partial
    assert (summary.files_ok, summary.files_failed) == (2, 1)
    assert [f.split(":")[0] for f in summary.failures] == ["date=02/p.parquet"]
    failed = next(e for e in events if e["status"] == "failed")
    assert failed["input"] == "date=02/p.parquet" and "cannot read" in failed["error"]
    assert (tmp_path / "out" / "date=01" / "p.parquet").is_file()
    assert (tmp_path / "out" / "date=03" / "p.parquet").is_file()
    assert not (tmp_path / "out" / "date=02").exists()


def test_a_single_corrupt_input_is_an_input_error(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    (tmp_path / "bad.parquet").write_bytes(os.urandom(2000))

    with pytest.raises(InputError, match="bad.parquet"):
        score(tmp_path / "bad.parquet", tmp_path / "out", dense_model.path)


def test_an_empty_input_folder_is_an_input_error(tmp_path: Path, dense_model: TrainedModel) -> None:
    (tmp_path / "in").mkdir()

    with pytest.raises(InputError, match="no .parquet files"):
        score(tmp_path / "in", tmp_path / "out", dense_model.path)


def test_a_concurrent_run_on_the_same_output_is_refused(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    write_parquet(tmp_path / "in" / "p.parquet", dense_table(5))

    with output_lock(tmp_path / "out", "someone-else"), pytest.raises(LockedError) as caught:
        score(tmp_path / "in", tmp_path / "out", dense_model.path)

    assert str(tmp_path / "out") in caught.value.message
    assert "someone-else" in caught.value.message
    assert not (tmp_path / "out" / "p.parquet").exists()
    summary, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path)  # lock released
    assert summary.files_ok == 1


def test_summary_is_written_beside_the_outputs(tmp_path: Path, dense_model: TrainedModel) -> None:
    write_parquet(tmp_path / "in" / "p.parquet", dense_table(5))

    summary, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path)

    written = json.loads((tmp_path / "out" / SUMMARY_NAME).read_text())
    assert written == json.loads(json.dumps(summary.as_dict()))
    assert written["files_ok"] == 1 and written["provider"] == "cpu"


def test_a_passthrough_column_named_like_a_score_column_is_refused(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = dense_table(5).append_column("label", pa.array([1, 0, 1, 0, 1]))
    write_parquet(tmp_path / "in" / "p.parquet", source)

    with pytest.raises(UsageError, match="input column.*label.*score column"):
        score(tmp_path / "in", tmp_path / "out", dense_model.path)
    summary, _ = score(
        tmp_path / "in",
        tmp_path / "out",
        dense_model.path,
        keep="id,label",
        outputs=("probabilities",),
    )
    assert summary.files_ok == 1
    assert read_output(tmp_path / "out" / "p.parquet").column_names == [
        "id", "label", "probabilities_0", "probabilities_1"
    ]  # fmt: skip


def test_an_output_directory_containing_the_input_is_refused(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = write_parquet(tmp_path / "data" / "x.parquet", dense_table(5))
    before = source.read_bytes()

    with pytest.raises(UsageError, match="contains the input"):
        score(source, tmp_path / "data", dense_model.path)
    with pytest.raises(UsageError, match="contains the input"):
        score(tmp_path / "data", tmp_path, dense_model.path)

    assert source.read_bytes() == before


def test_an_output_path_that_is_a_file_is_a_usage_error(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    write_parquet(tmp_path / "in" / "x.parquet", dense_table(5))
    (tmp_path / "out").write_text("not a directory")

    with pytest.raises(UsageError, match="not a directory"):
        score(tmp_path / "in", tmp_path / "out", dense_model.path)


def test_an_input_that_turned_corrupt_loses_its_stale_output(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    write_parquet(tmp_path / "in" / "a.parquet", dense_table(5))
    source = write_parquet(tmp_path / "in" / "b.parquet", dense_table(5))
    score(tmp_path / "in", tmp_path / "out", dense_model.path)
    assert (tmp_path / "out" / "b.parquet").exists()

    source.write_bytes(b"PAR1 truncated garbage")
    summary, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path)

    assert (summary.files_skipped, summary.files_failed) == (1, 1)
    assert not (tmp_path / "out" / "b.parquet").exists()


def test_outputs_whose_input_is_gone_are_reported_and_pruned_on_request(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    write_parquet(tmp_path / "in" / "a.parquet", dense_table(5))
    gone = write_parquet(tmp_path / "in" / "d=1" / "b.parquet", dense_table(5))
    score(tmp_path / "in", tmp_path / "out", dense_model.path)
    gone.unlink()

    kept, events = score(tmp_path / "in", tmp_path / "out", dense_model.path)
    assert kept.orphans == ["d=1/b.parquet"]
    assert any(e["event"] == "warning" and "--prune" in e["message"] for e in events)
    assert (tmp_path / "out" / "d=1" / "b.parquet").exists()

    pruned, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path, prune=True)
    assert pruned.orphans == ["d=1/b.parquet"]
    assert not (tmp_path / "out" / "d=1" / "b.parquet").exists()
    assert (tmp_path / "out" / "a.parquet").exists()


def test_reasons_are_counted_exactly_by_kind_with_values_masked(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    table = dense_table(300).cast(dense_table(300).schema.set(1, pa.field("f0", pa.string())))
    table = table.set_column(
        1, "f0", pa.array([f"x{i}" if i % 2 else "1.5" for i in range(300)], pa.string())
    )
    write_parquet(tmp_path / "in" / "p.parquet", table)

    summary, _ = score(tmp_path / "in", tmp_path / "out", dense_model.path, batch_size=64)

    assert summary.rows_rejected == 150
    assert summary.rejected_reasons == {
        "cannot cast … in column 'f0' (model input 'input') to float": 150
    }


def test_duplicate_keep_names_are_kept_once(tmp_path: Path, dense_model: TrainedModel) -> None:
    write_parquet(tmp_path / "in" / "p.parquet", dense_table(5))

    score(tmp_path / "in", tmp_path / "out", dense_model.path, keep="id,id,note")

    assert read_output(tmp_path / "out" / "p.parquet").column_names[:2] == ["id", "note"]
