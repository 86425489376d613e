"""What a new user reads: help text, hints in errors, and numbers in summaries (issue 8 §5)."""

from __future__ import annotations

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from helpers.models import TrainedModel
from helpers.runs import invoke
from streamscore import console
from streamscore.cli import app
from streamscore.errors import MappingError
from streamscore.mapping import plan_inputs
from streamscore.model import resolve_model
from streamscore.model.session import load_model


def leaf_commands(commands: typer.Typer = app, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command a user can run, new ones included, as argument lists."""
    found = [[*path, info.name or ""] for info in commands.registered_commands]
    for group in commands.registered_groups:
        if group.typer_instance is not None:
            found += leaf_commands(group.typer_instance, (*path, group.name or ""))
    return found


LEAF_COMMANDS = leaf_commands()

RUNNING_COMMANDS = [["batch"], ["replay"], ["tail"], ["bench"], ["compare"]]


@pytest.mark.parametrize("command", LEAF_COMMANDS, ids=" ".join)
def test_help_names_arguments_in_capitals_and_shows_no_bool_type(command: list[str]) -> None:
    assert len(LEAF_COMMANDS) >= 6
    result = invoke(*command, "--help")

    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
    assert "{" not in result.stdout.split("\n\n")[0] + result.stdout.splitlines()[1]
    usage = next(line for line in result.stdout.splitlines() if "Usage:" in line)
    assert usage.split()[-1].isupper(), usage


@pytest.mark.parametrize(
    ("command", "last"),
    [("batch", "143"), ("replay", "143"), ("tail", "130/143"), ("bench", "10"), ("compare", "9")],
)
def test_help_paragraphs_flow_instead_of_keeping_docstring_line_breaks(
    command: str, last: str
) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})

    # On a wide terminal the exit codes take one line, not the docstring's two or three.
    exits = next(line for line in result.stdout.splitlines() if line.strip().startswith("Exit"))
    assert " 2 " in exits and f" {last} " in exits, exits


@pytest.mark.parametrize("command", [[], ["models"]], ids=["streamscore", "models"])
def test_group_help_shows_no_bool_type(command: list[str]) -> None:
    result = invoke(*command, "--help")

    assert result.exit_code == 0
    assert "--help" in result.stdout
    assert "<bool>" not in result.stdout


@pytest.mark.parametrize("command", RUNNING_COMMANDS, ids=" ".join)
def test_every_running_command_lists_its_exit_codes(command: list[str]) -> None:
    result = invoke(*command, "--help")

    assert "Exit" in result.stdout
    # bench and compare have nothing to resume after Ctrl-C
    assert "130" in result.stdout or command in (["bench"], ["compare"])


def _signature(model: TrainedModel) -> object:
    return load_model(resolve_model(model.path), provider="cpu").signature


def test_a_per_column_model_is_not_told_about_features(column_model: TrainedModel) -> None:
    columns = {"amount": pa.float64(), "score": pa.float64(), "count": pa.int64()}
    columns["category"] = pa.list_(pa.string())

    with pytest.raises(MappingError) as caught:
        plan_inputs(_signature(column_model), columns)  # type: ignore[arg-type]

    assert "--features" not in caught.value.one_line()
    assert "cast the column" in caught.value.one_line()


def test_a_2d_model_is_told_about_features(dense_model: TrainedModel) -> None:
    columns = {"f0": pa.float64(), "f1": pa.list_(pa.float64()), "f2": pa.float64()}
    columns["f3"] = pa.float64()

    with pytest.raises(MappingError) as caught:
        plan_inputs(_signature(dense_model), columns)  # type: ignore[arg-type]

    assert "--features" in caught.value.one_line()


def test_a_long_available_list_says_it_goes_on(dense_model: TrainedModel) -> None:
    columns = {f"c{i:02d}": pa.float64() for i in range(20)}

    with pytest.raises(MappingError) as caught:
        plan_inputs(_signature(dense_model), columns)  # type: ignore[arg-type]

    hint = caught.value.hint or ""
    assert hint.startswith("available: c00, c01") and "c11" in hint and "c12" not in hint
    assert hint.endswith("… (20 columns)")


def test_a_short_available_list_is_complete(dense_model: TrainedModel) -> None:
    with pytest.raises(MappingError) as caught:
        plan_inputs(_signature(dense_model), {"a": pa.float64(), "b": pa.float64()})  # type: ignore[arg-type]

    assert caught.value.hint == "available: a, b"


def test_ports_offsets_and_ids_are_never_thousands_separated() -> None:
    summary = {
        "metrics_port": 33011,
        "records_read": 12345,
        "end_offset": 1234567,
        "pid": 40123,
        "run_id": 20261128,
    }
    shown = {
        str(row): str(value)
        for row, value in zip(
            console.format_summary(summary, "t").columns[0].cells,
            console.format_summary(summary, "t").columns[1].cells,
            strict=True,
        )
    }

    assert shown["metrics port"] == "33011"
    assert shown["end offset"] == "1234567"
    assert shown["pid"] == "40123"
    assert shown["run id"] == "20261128"
    assert shown["records read"] == "12,345"  # counts keep their separators


def test_the_tail_start_line_shows_the_metrics_address() -> None:
    line = console.format_event(
        {"event": "info", "phase": "started", "message": "tail: scoring", "metrics_port": 33011}
    )

    assert "http://127.0.0.1:33011/metrics" in line
    assert "33,011" not in line


def test_a_missing_value_in_a_summary_shows_as_a_dash_not_none() -> None:
    table = console.format_summary({"files_ok": 1, "summary_error": None}, "t")

    assert [str(cell) for cell in table.columns[1].cells] == ["1", "-"]
