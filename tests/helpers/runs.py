"""Run ``streamscore batch`` from tests: through the Python API or the Typer CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from streamscore.batch import BatchSummary, run_batch
from streamscore.cli import app
from streamscore.config import BatchOptions, KeepColumns, OnError, Parallelism, ScoringOptions
from streamscore.reporting import RecordingReporter


def batch_options(
    input: Path,
    output: Path,
    model: Path | str,
    *,
    on_error: OnError = OnError.quarantine,
    force: bool = False,
    prune: bool = False,
    keep: str | None = None,
    row_group_rows: int | None = None,
    read_rows: int | None = None,
    parallelism: Parallelism = Parallelism.calls,
    **scoring: Any,
) -> BatchOptions:
    """BatchOptions as the CLI would build them; ``scoring`` goes to ScoringOptions."""
    sizes = {"row_group_rows": row_group_rows, "read_rows": read_rows}
    return BatchOptions(
        input=input,
        output=output,
        scoring=ScoringOptions(
            model=str(model), keep=KeepColumns.parse(keep), provider="cpu", **scoring
        ),
        on_error=on_error,
        force=force,
        prune=prune,
        parallelism=parallelism,
        **{name: value for name, value in sizes.items() if value is not None},
    )


def score(
    input: Path, output: Path, model: Path | str, **kwargs: Any
) -> tuple[BatchSummary, list[dict[str, Any]]]:
    """Run a batch through the Python API; returns the summary and the per-file events."""
    reporter = RecordingReporter()
    summary = run_batch(batch_options(input, output, model, **kwargs), reporter)
    return summary, reporter.events


def invoke(*args: str | Path) -> Result:
    """Run the ``streamscore`` CLI in-process (stdout is not a TTY, so output is JSON lines)."""
    return CliRunner().invoke(app, [str(a) for a in args])
