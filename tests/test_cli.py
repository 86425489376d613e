"""The command line: exit codes, JSON lines when piped, one-line errors, help with examples.

Runs the Typer app in-process with CliRunner; its stdout is not a terminal, so
``streamscore batch`` prints one JSON line per file and a JSON summary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import Result

from helpers.data import dense_table, write_parquet
from helpers.models import TrainedModel
from helpers.runs import invoke
from streamscore import __version__
from streamscore.batch import SUMMARY_NAME, output_lock
from streamscore.cli import app


def json_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """Two hive partitions of 30 rows each."""
    for day in ("01", "02"):
        write_parquet(tmp_path / "in" / f"date={day}" / "p.parquet", dense_table(30))
    return tmp_path / "in"


def batch(inputs: Path, model: Path | str, *extra: str | Path) -> Result:
    out = inputs.parent / "out"
    return invoke("batch", inputs, "--model", model, "--out", out, "--provider", "cpu", *extra)


# ---------------------------------------------------------------- success and JSON lines


def test_version() -> None:
    result = invoke("--version")

    assert result.exit_code == 0
    assert result.stdout.strip() == f"streamscore {__version__}"


def test_batch_prints_json_lines_and_writes_the_run_summary(
    inputs: Path, dense_model: TrainedModel
) -> None:
    result = batch(inputs, dense_model.path)

    assert result.exit_code == 0, result.output
    lines = json_lines(result)
    assert [line["event"] for line in lines] == ["file", "file", "summary"]
    assert [(line["input"], line["status"]) for line in lines[:2]] == [
        ("date=01/p.parquet", "ok"),
        ("date=02/p.parquet", "ok"),
    ]
    summary = lines[-1]
    for key in (
        "rows_in", "rows_scored", "rows_rejected", "files_ok", "files_skipped", "files_failed",
        "seconds", "rows_per_second", "model_version", "provider",
    ):  # fmt: skip
        assert key in summary, key
    assert (summary["rows_in"], summary["files_ok"], summary["provider"]) == (60, 2, "cpu")
    written = json.loads((inputs.parent / "out" / SUMMARY_NAME).read_text())
    assert written == {k: v for k, v in summary.items() if k != "event"}


def test_log_format_json_is_the_same_as_piped_output(
    inputs: Path, dense_model: TrainedModel
) -> None:
    result = batch(inputs, dense_model.path, "--log-format", "json")

    assert result.exit_code == 0
    assert [line["event"] for line in json_lines(result)] == ["file", "file", "summary"]


def test_rerun_reports_skipped_files(inputs: Path, dense_model: TrainedModel) -> None:
    batch(inputs, dense_model.path)

    result = batch(inputs, dense_model.path)

    assert result.exit_code == 0
    assert [line["status"] for line in json_lines(result)[:2]] == ["skipped", "skipped"]


# ---------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--batch-size", "0"), "--batch-size"),
        (("--threads", "-1"), "--threads"),
        (("--log-format", "xml"), "--log-format"),
        (("--outputs", "nope"), "nope"),
        (("--keep", "id,nope"), "nope"),
        (("--provider", "quantum"), "quantum"),
    ],
)
def test_bad_option_values_exit_2_with_one_line(
    inputs: Path, dense_model: TrainedModel, extra: tuple[str, ...], fragment: str
) -> None:
    result = batch(inputs, dense_model.path, *extra)

    assert result.exit_code == 2
    assert_one_line_error(result, fragment)


@pytest.mark.parametrize(
    "extra", [("--batch-size", "many"), ("--no-such-option",), ("--on-error", "explode")]
)
def test_unparseable_command_lines_exit_2(
    inputs: Path, dense_model: TrainedModel, extra: tuple[str, ...]
) -> None:
    result = batch(inputs, dense_model.path, *extra)

    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_missing_required_option_exits_2(inputs: Path) -> None:
    result = invoke("batch", inputs, "--out", inputs.parent / "out")

    assert result.exit_code == 2
    assert "--model" in result.output


def test_a_corrupt_file_among_good_ones_exits_3(inputs: Path, dense_model: TrainedModel) -> None:
    (inputs / "date=03").mkdir()
    (inputs / "date=03" / "p.parquet").write_bytes(b"garbage, not parquet")

    result = batch(inputs, dense_model.path)

    assert result.exit_code == 3
    lines = json_lines(result)
    assert sorted((line.get("input"), line.get("status")) for line in lines[:-1]) == [
        ("date=01/p.parquet", "ok"),
        ("date=02/p.parquet", "ok"),
        ("date=03/p.parquet", "failed"),
    ]
    summary = lines[-1]
    assert (summary["files_ok"], summary["files_failed"]) == (2, 1)
    assert summary["failures"][0].startswith("date=03/p.parquet: cannot read")
    assert_one_line_error(result, "1 of 3 input files failed", SUMMARY_NAME)
    written = json.loads((inputs.parent / "out" / SUMMARY_NAME).read_text())
    assert written["failures"] == summary["failures"]


def test_a_single_corrupt_input_exits_4(tmp_path: Path, dense_model: TrainedModel) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1" + bytes(200) + b"PAR1")

    result = invoke("batch", tmp_path / "bad.parquet", "-m", dense_model.path, "-o", tmp_path / "o")

    assert result.exit_code == 4
    assert_one_line_error(result, "bad.parquet")


@pytest.mark.parametrize(
    ("model", "extra", "fragments"),
    [
        ("dense", (), ("column 'f1'", "model input 'input'", "missing")),
        ("unnamed", (), ("model input 'input'", "feature_names", "--features")),
        ("unnamed", ("--features", "f0,f2"), ("takes 4 features but 2",)),
    ],
    ids=["missing-column", "no-feature-names", "features-width"],
)
def test_mapping_problems_exit_4_with_one_line(
    tmp_path: Path,
    dense_model: TrainedModel,
    unnamed_model: TrainedModel,
    model: str,
    extra: tuple[str, ...],
    fragments: tuple[str, ...],
) -> None:
    write_parquet(tmp_path / "in.parquet", dense_table(5).drop_columns(["f1"]))
    path = dense_model.path if model == "dense" else unnamed_model.path

    result = invoke("batch", tmp_path / "in.parquet", "-m", path, "-o", tmp_path / "o", *extra)

    assert result.exit_code == 4
    assert_one_line_error(result, *fragments)


def test_a_missing_input_exits_4(tmp_path: Path, dense_model: TrainedModel) -> None:
    result = invoke("batch", tmp_path / "nowhere", "-m", dense_model.path, "-o", tmp_path / "o")

    assert result.exit_code == 4
    assert_one_line_error(result, "nowhere")


def test_on_error_fail_exits_4_naming_file_and_row(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    source = dense_table(100)
    f0 = source.column("f0").to_pylist()
    f0[42] = None
    write_parquet(tmp_path / "in" / "p.parquet", source.set_column(1, "f0", [f0]))

    result = invoke(
        "batch", tmp_path / "in", "-m", dense_model.path, "-o", tmp_path / "o",
        "--on-error", "fail", "--batch-size", "16",
    )  # fmt: skip

    assert result.exit_code == 4
    assert_one_line_error(result, "p.parquet", "row 42", "null in column 'f0'")


@pytest.mark.parametrize("model", ["missing.onnx", "garbage.onnx", "empty_repo"])
def test_model_problems_exit_5(inputs: Path, tmp_path: Path, model: str) -> None:
    (tmp_path / "garbage.onnx").write_bytes(b"not an onnx model at all")
    (tmp_path / "empty_repo").mkdir()

    result = batch(inputs, tmp_path / model)

    assert result.exit_code == 5
    assert_one_line_error(result, model)
    assert not (inputs.parent / "out").exists()


def test_a_locked_output_exits_7(inputs: Path, dense_model: TrainedModel) -> None:
    with output_lock(inputs.parent / "out", "nightly-run"):
        result = batch(inputs, dense_model.path)

    assert result.exit_code == 7
    assert_one_line_error(result, "another streamscore run", "nightly-run")
    assert not (inputs.parent / "out" / "date=01").exists()


# ---------------------------------------------------------------- help


def command_paths() -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command registered on the app, groups included, as (path, click command)."""

    def walk(path: tuple[str, ...], command: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, command
        for name, child in sorted(getattr(command, "commands", {}).items()):
            yield from walk((*path, name), child)

    yield from walk((), typer.main.get_command(app))


COMMANDS = list(command_paths())


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "streamscore" for p, _ in COMMANDS]
)
def test_every_command_has_help_and_every_leaf_command_an_example(
    path: tuple[str, ...], command: Any
) -> None:
    result = invoke(*path, "--help")

    assert result.exit_code == 0, result.output
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    if not hasattr(command, "commands"):
        assert "Example" in result.stdout, f"{' '.join(path)} --help shows no example"


def test_the_app_has_the_batch_and_models_commands() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}

    assert {"batch", "models inspect", "models list"} <= names


def test_python_dash_m_streamscore_works() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamscore", "--help"], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert "batch" in done.stdout and "models" in done.stdout


def test_log_format_text_prints_a_readable_summary(inputs: Path, dense_model: TrainedModel) -> None:
    result = batch(inputs, dense_model.path, "--log-format", "text")

    assert result.exit_code == 0, result.output
    assert "streamscore batch" in result.stdout and "rows scored" in result.stdout
    assert not result.stdout.lstrip().startswith("{")


def test_start_up_does_not_load_the_heavy_libraries() -> None:
    # `streamscore --help` and `--version` should answer at once: onnxruntime, the Kafka
    # client, the columnar libraries and matplotlib are imported only when a command runs;
    # mlflow only when a models:/ or runs:/ MODEL is used.
    heavy = (
        "onnxruntime",
        "confluent_kafka",
        "pyarrow",
        "polars",
        "matplotlib",
        "mlflow",
        "ray",
        "httpx",
        "grpc",
        "google.protobuf",
    )
    code = (
        "import sys, streamscore.cli.app; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def test_sigterm_stops_a_command_like_ctrl_c_with_one_line_and_exit_143() -> None:
    import signal

    model = Path(__file__).resolve().parent.parent / "sample_data" / "models" / "fraud"
    bench = subprocess.Popen(
        [sys.executable, "-m", "streamscore", "bench", str(model), "--batch-sizes", "1,64",
         "--max-duration", "30", "--warmup", "0.05", "--window", "0.2", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert bench.stdout is not None
    bench.stdout.readline()  # the first configuration is measured: bench is in full swing
    bench.send_signal(signal.SIGTERM)
    _, stderr = bench.communicate(timeout=60)
    assert bench.returncode == 143, stderr  # was -15: killed without a word
    assert stderr.strip().splitlines()[-1] == "error: terminated"
