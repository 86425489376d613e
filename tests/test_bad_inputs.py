"""Bad input and hostile environments end in one line and a documented exit code (issue 8 §3).

In ``batch`` a problem with one input file fails only that file (the run exits 3 and the
others are scored); problems with OUT itself stop the run with their own exit code. Full and
read-only file systems are real mounts (a tiny tmpfs; the tests run as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import Result

from helpers.data import column_table, dense_table, write_parquet
from helpers.models import TrainedModel
from helpers.runs import invoke
from streamscore.batch import SUMMARY_NAME
from streamscore.errors import ModelError
from streamscore.model import list_models, resolve_model
from streamscore.sinks.parquet import TEMP_MARKER


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert "Traceback" not in result.output, result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr


def run_batch(source: Path, out: Path, model: Path, *extra: str) -> Result:
    return invoke("batch", source, "--model", model, "--out", out, "--provider", "cpu", *extra)


def statuses(result: Result) -> dict[str, str]:
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return {line["input"]: line["status"] for line in lines if line.get("event") == "file"}


def one_good_file(tmp_path: Path) -> Path:
    source = tmp_path / "in"
    write_parquet(source / "good.parquet", dense_table(20))
    return source


def _fails_alone(tmp_path: Path, model: Path, bad: str, *fragments: str) -> None:
    source = tmp_path / "in"
    result = run_batch(source, tmp_path / "out", model)

    assert result.exit_code == 3, result.output
    assert statuses(result) == {"good.parquet": "ok", bad: "failed"}
    assert_one_line_error(result, "1 of 2 input files failed")
    summary = json.loads((tmp_path / "out" / SUMMARY_NAME).read_text())
    assert all(fragment in summary["failures"][0] for fragment in fragments), summary
    assert not list((tmp_path / "out").rglob(f"*{TEMP_MARKER}*"))


# ---------------------------------------------------------------- bad input files


def test_duplicate_column_names_fail_only_that_file(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = one_good_file(tmp_path)
    table = dense_table(10)
    twice = pa.Table.from_arrays([*table.columns, table.column("f1")], [*table.column_names, "f1"])
    write_parquet(source / "dup.parquet", twice)

    _fails_alone(tmp_path, dense_model.path, "dup.parquet", "dup.parquet", "'f1'", "twice")


def test_duplicate_passthrough_column_names_fail_only_that_file(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = one_good_file(tmp_path)
    table = dense_table(10)
    twice = pa.Table.from_arrays(
        [*table.columns, table.column("note")], [*table.column_names, "note"]
    )
    write_parquet(source / "dup.parquet", twice)

    _fails_alone(tmp_path, dense_model.path, "dup.parquet", "'note'")


def test_invalid_utf8_in_a_string_column_fails_only_that_file(
    tmp_path: Path, column_model: TrainedModel
) -> None:
    source = tmp_path / "in"
    write_parquet(source / "good.parquet", column_table(10))
    table = column_table(10)
    categories = pa.array([b"fuel"] * 9 + [b"\xff\xfe bad"], pa.binary()).view(pa.string())
    table = table.set_column(table.schema.get_field_index("category"), "category", categories)
    write_parquet(source / "latin1.parquet", table)

    _fails_alone(
        tmp_path, column_model.path, "latin1.parquet", "latin1.parquet", "'category'", "UTF-8"
    )


def test_invalid_utf8_in_a_passthrough_column_fails_only_that_file(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    # Copied through unchecked, it made an output that Parquet readers refuse.
    source = one_good_file(tmp_path)
    table = dense_table(10)
    notes = pa.array([b"ok"] * 9 + [b"\xff\xfe bad"], pa.binary()).view(pa.string())
    table = table.set_column(table.schema.get_field_index("note"), "note", notes)
    write_parquet(source / "latin1.parquet", table)

    _fails_alone(tmp_path, dense_model.path, "latin1.parquet", "latin1.parquet", "'note'", "UTF-8")


def test_with_on_error_fail_the_one_line_error_names_the_file(
    tmp_path: Path, column_model: TrainedModel
) -> None:
    source = tmp_path / "in"
    table = column_table(10)
    categories = pa.array([b"\xff\xfe bad"] * 10, pa.binary()).view(pa.string())
    table = table.set_column(table.schema.get_field_index("category"), "category", categories)
    write_parquet(source / "day=3" / "latin1.parquet", table)

    result = run_batch(source, tmp_path / "out", column_model.path, "--on-error", "fail")

    assert result.exit_code == 4
    assert_one_line_error(result, "day=3/latin1.parquet: ", "UTF-8")


def test_when_every_file_fails_the_one_line_error_names_the_first(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = tmp_path / "in"
    table = dense_table(10)
    twice = pa.Table.from_arrays([*table.columns, table.column("f1")], [*table.column_names, "f1"])
    write_parquet(source / "a.parquet", twice)
    write_parquet(source / "b.parquet", twice)

    result = run_batch(source, tmp_path / "out", dense_model.path)

    assert result.exit_code == 4
    assert_one_line_error(result, "a.parquet: column 'f1' appears twice", "1 more file")


def test_an_input_column_named_reject_reason_fails_only_that_file(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = one_good_file(tmp_path)
    table = dense_table(10).append_column("_reject_reason", pa.array(["x"] * 10))
    write_parquet(source / "clash.parquet", table)

    _fails_alone(tmp_path, dense_model.path, "clash.parquet", "'_reject_reason'")


def test_a_fifo_named_parquet_is_not_read(tmp_path: Path, dense_model: TrainedModel) -> None:
    source = one_good_file(tmp_path)
    os.mkfifo(source / "x.parquet")
    outcome: list[Result] = []
    runner = threading.Thread(
        target=lambda: outcome.append(run_batch(source, tmp_path / "out", dense_model.path)),
        daemon=True,
    )
    runner.start()
    runner.join(timeout=60)
    if runner.is_alive():  # unblock the hung reader so the test process can end
        with contextlib.suppress(OSError):
            fd = os.open(source / "x.parquet", os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        pytest.fail("batch hung on a FIFO")

    assert outcome[0].exit_code == 0, outcome[0].output
    assert statuses(outcome[0]) == {"good.parquet": "ok"}


def test_a_fifo_given_as_input_is_an_input_error(tmp_path: Path, dense_model: TrainedModel) -> None:
    os.mkfifo(tmp_path / "x.parquet")

    result = run_batch(tmp_path / "x.parquet", tmp_path / "out", dense_model.path)

    assert result.exit_code == 4
    assert_one_line_error(result, "x.parquet", "not a regular file")


# ---------------------------------------------------------------- model paths


def test_a_model_path_component_over_255_characters_is_a_model_error(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = one_good_file(tmp_path)

    result = run_batch(source, tmp_path / "out", tmp_path / ("m" * 300) / "model.onnx")

    assert result.exit_code == 5
    assert_one_line_error(result, "model")


@pytest.mark.parametrize("folder", ["09", "\u00b2", "\u0663"])
def test_only_ascii_decimal_version_folders_are_versions(
    tmp_path: Path, dense_model: TrainedModel, folder: str
) -> None:
    (tmp_path / "repo" / "fraud" / folder).mkdir(parents=True)
    (tmp_path / "repo" / "fraud" / folder / "model.onnx").write_bytes(dense_model.path.read_bytes())
    (tmp_path / "repo" / "fraud" / "3").mkdir()
    (tmp_path / "repo" / "fraud" / "3" / "model.onnx").write_bytes(dense_model.path.read_bytes())

    latest = resolve_model(tmp_path / "repo" / "fraud")
    listed = [(ref.name, ref.version, ref.path.exists()) for ref in list_models(tmp_path / "repo")]
    given = resolve_model(tmp_path / "repo" / "fraud" / folder)

    if folder == "09":  # a decimal name, kept as written: 9 > 3
        assert (latest.version, latest.path.parent.name) == ("09", "09")
        assert listed == [("fraud", "3", True), ("fraud", "09", True)]
        assert (given.name, given.version) == ("fraud", "09")
    else:  # not a version at all
        assert latest.version == "3"
        assert listed == [("fraud", "3", True)]
        assert (given.name, given.version) == (folder, "")


def test_resolve_model_never_raises_os_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model"):
        resolve_model(tmp_path / ("x" * 300))


# ---------------------------------------------------------------- OUT on odd file systems


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    """An empty folder to mount on; unmounted again at teardown."""
    point = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    point.mkdir()
    yield point
    subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here (needs root): {done.stderr.strip()}")


def test_out_on_a_full_disk_fails_the_file_cleanly_and_writes_the_summary(
    tmp_path: Path, mount_point: Path, dense_model: TrainedModel
) -> None:
    source = tmp_path / "in"
    write_parquet(source / "a-small.parquet", dense_table(10))
    # Random floats do not compress: this one cannot fit in the file system.
    write_parquet(source / "b-big.parquet", dense_table(200_000, n_features=4))
    mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point))

    result = run_batch(source, mount_point, dense_model.path, "--keep", "all")

    assert result.exit_code == 3, result.output
    assert statuses(result) == {"a-small.parquet": "ok", "b-big.parquet": "failed"}
    assert_one_line_error(result, "1 of 2 input files failed")
    summary = json.loads((mount_point / SUMMARY_NAME).read_text())
    assert "No space left on device" in summary["failures"][0]
    assert sorted(p.name for p in mount_point.rglob("*")) == [
        ".streamscore.lock",
        SUMMARY_NAME,
        "a-small.parquet",
    ]


def test_a_full_disk_for_the_lock_file_is_one_line(
    tmp_path: Path, mount_point: Path, dense_model: TrainedModel
) -> None:
    source = one_good_file(tmp_path)
    mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point))
    with contextlib.suppress(OSError), (mount_point / "filler").open("wb") as filler:
        filler.write(bytes(1 << 20))

    result = run_batch(source, mount_point / "out", dense_model.path)

    assert result.exit_code == 10, result.output
    assert_one_line_error(result, "cannot write", "No space left on device")


def test_a_read_only_out_is_one_line(
    tmp_path: Path, mount_point: Path, dense_model: TrainedModel
) -> None:
    source = one_good_file(tmp_path)
    mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point))
    (mount_point / "out").mkdir()
    mount("-o", "remount,ro", str(mount_point))

    result = run_batch(source, mount_point / "out", dense_model.path)

    assert result.exit_code == 10, result.output
    assert_one_line_error(result, "cannot write", "Read-only file system")


def test_a_summary_that_cannot_replace_its_file_leaves_no_temporary_file(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = one_good_file(tmp_path)
    out = tmp_path / "out"
    (out / SUMMARY_NAME / "in-the-way").mkdir(parents=True)  # the rename over it fails

    result = run_batch(source, out, dense_model.path)

    assert result.exit_code == 10, result.output
    assert_one_line_error(result, "cannot write", SUMMARY_NAME)
    assert not list(out.glob(f".{SUMMARY_NAME}*")), "the summary's temporary file was left"


def test_a_summary_file_that_cannot_be_written_still_shows_the_summary(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = one_good_file(tmp_path)
    out = tmp_path / "out"
    (out / f".{SUMMARY_NAME}.tmp").mkdir(parents=True)  # where the summary is written first

    result = run_batch(source, out, dense_model.path)

    assert result.exit_code == 10, result.output
    assert statuses(result) == {"good.parquet": "ok"}
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["event"] == "summary" and summary["files_ok"] == 1
    assert_one_line_error(result, "cannot write", SUMMARY_NAME)
    assert (out / "good.parquet").is_file()
