"""What ``streamscore bench`` shows a new user: the table, stdout/stderr, and output paths.

Checked against a real (tiny) run: every number sits under its heading, stdout stays
machine-readable when it is not a terminal, and an unwritable --json/--plot path is refused
before anything is measured (issue 8 §3, §5).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.table import Table

from helpers.runs import invoke
from streamscore import console
from streamscore.bench import BenchOptions, run_bench

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
MLP = str(SAMPLE / "models" / "fraud_mlp")
QUICK = {"warmup_s": 0.02, "window_s": 0.05, "max_duration_s": 0.15}
QUICK_CLI = ["--warmup", "0.02", "--window", "0.05", "--max-duration", "0.15"]


def columns_of(table: Table) -> dict[str, list[str]]:
    return {str(column.header): [str(cell) for cell in column.cells] for column in table.columns}


@pytest.fixture(scope="module")
def open_loop_report() -> dict[str, Any]:
    options = BenchOptions(MLP, batch_sizes=(1, 8), rates=(200.0,), **QUICK)  # type: ignore[arg-type]
    return run_bench(options).to_dict()


def test_open_loop_table_puts_every_number_under_its_heading(
    open_loop_report: dict[str, Any],
) -> None:
    shown = columns_of(console.format_bench_results(open_loop_report))
    results = open_loop_report["results"]

    assert all(len(cells) == len(results) for cells in shown.values())
    assert all(cell != "" for name, cells in shown.items() if name for cell in cells), shown
    assert shown["rate/s"] == ["200"] * len(results)
    assert shown["served/s"] == [f"{r['calls_per_s']:,.0f}" for r in results]
    assert shown["rows/s"] == [f"{r['rows_per_s']:,.0f}" for r in results]
    assert "calls/s" not in shown  # served/s is the calls per second of an open loop
    assert shown["stable"] == [("yes" if r["stable"] else "[yellow]no[/]") for r in results]


def test_table_has_every_latency_column_the_readme_lists(
    open_loop_report: dict[str, Any],
) -> None:
    shown = columns_of(console.format_bench_results(open_loop_report))
    latency = open_loop_report["results"][0]["latency_ms"]

    for name in ("min", "p50", "p90", "p95", "p99", "max"):
        assert shown[f"{name} ms"][0] == format(latency[name], ".3g")
    readme = (SAMPLE.parent / "README.md").read_text()
    assert "latency min/p50/p90/p95/p99/max" in readme


def test_the_star_says_what_it_means(open_loop_report: dict[str, Any]) -> None:
    table = console.format_bench_results(open_loop_report)
    assert "★ lowest p99" in str(table.caption)
    readme = (SAMPLE.parent / "README.md").read_text()
    assert "under `--rate`, the one with the lowest p99" in readme


@pytest.mark.parametrize("log_format", ["json", "auto"])
def test_stdout_holds_only_json_lines_when_not_a_terminal(log_format: str) -> None:
    result = invoke(
        "bench", MLP, "--batch-sizes", "1", "--providers", "cpu,cuda", *QUICK_CLI,
        "--log-format", log_format,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1]["event"] == "summary"
    assert lines[-1]["schema"] == "streamscore.bench" and len(lines[-1]["results"]) == 1
    assert "streamscore bench" in result.stderr  # the human table goes to stderr


def test_text_log_format_prints_the_table_on_stdout() -> None:
    result = invoke("bench", MLP, "--batch-sizes", "1", *QUICK_CLI, "--log-format", "text")

    assert result.exit_code == 0, result.output
    assert "p95 ms" in result.stdout


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_an_unwritable_output_path_is_refused_before_measuring(
    tmp_path: Path, option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def measured(*_: object) -> None:
        raise AssertionError("measured before checking the output path")

    monkeypatch.setattr("streamscore.bench.sweep._run", measured)
    target = tmp_path / ("taken.json" if option == "--json" else "taken.html")
    target.mkdir()  # a folder where the file should go: root cannot write it either

    result = invoke("bench", MLP, "--batch-sizes", "1", *QUICK_CLI, option, target)

    assert result.exit_code == 10, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: cannot write") and str(target) in result.stderr
