"""Everything the user sees: the only module that imports rich.

Pipelines report through the small :class:`Reporter` protocol of ``streamscore.reporting``;
this module implements it twice: rich progress bars on a terminal, JSON lines otherwise.
``format_*`` functions are pure and return renderables or strings.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from streamscore.reporting import Reporter

_stdout = Console(highlight=False)
_stderr = Console(stderr=True, highlight=False)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def print_error(line: str) -> None:
    """One line on stderr, prefixed so it stands out in cron mail and CI logs."""
    if sys.stderr.isatty():
        _stderr.print(f"[bold red]error:[/] {line}", markup=True, soft_wrap=True)
    else:
        print(f"error: {line}", file=sys.stderr, flush=True)


def print_text(text: str) -> None:
    print(text, flush=True)


def print_renderable(renderable: Any) -> None:
    _stdout.print(renderable)


def json_line(payload: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """One JSON object on one line, flushed at once (log shippers read line by line)."""
    out = stream or sys.stdout
    out.write(json.dumps(payload, default=str, separators=(",", ":")) + "\n")
    out.flush()


class JsonReporter:
    """Reporter for pipes, cron and CI: events as JSON lines, progress lines at most every N s."""

    def __init__(self, *, progress_interval: float = 10.0) -> None:
        self.progress_interval = progress_interval
        self._totals: dict[str, int | None] = {}
        self._done: dict[str, int] = {}
        self._last = time.monotonic()

    def add_task(self, key: str, description: str, total: int | None) -> None:
        self._totals[key] = total
        self._done.setdefault(key, 0)

    def advance(self, key: str, amount: int) -> None:
        self._done[key] = self._done.get(key, 0) + amount
        now = time.monotonic()
        if now - self._last >= self.progress_interval:
            self._last = now
            json_line({"event": "progress", "done": dict(self._done)})

    def event(self, payload: Mapping[str, Any]) -> None:
        json_line(payload)

    def close(self) -> None:
        pass


class RichReporter:
    """Reporter for a terminal: one progress bar per task, events as short lines above."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=_stdout,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}
        self._progress.start()

    def add_task(self, key: str, description: str, total: int | None) -> None:
        self._tasks[key] = self._progress.add_task(description, total=total, rate="")
        self._started[key] = time.monotonic()

    def advance(self, key: str, amount: int) -> None:
        task = self._tasks[key]
        self._progress.advance(task, amount)
        elapsed = max(time.monotonic() - self._started[key], 1e-9)
        done = self._progress.tasks[task].completed
        self._progress.update(task, rate=f"{done / elapsed:,.0f}/s")

    def event(self, payload: Mapping[str, Any]) -> None:
        line = format_event(payload)
        if line:
            self._progress.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def make_reporter(log_format: str) -> Reporter:
    """``auto`` means rich on a terminal and JSON lines otherwise."""
    if log_format == "json" or (log_format == "auto" and not stdout_is_tty()):
        return JsonReporter()
    return RichReporter()


def format_event(payload: Mapping[str, Any]) -> str:
    """A one-line, human reading of a pipeline event (empty for events not worth a line)."""
    kind = payload.get("event")
    if kind == "file":
        status = payload.get("status")
        extra = f" ({payload['error']})" if payload.get("error") else ""
        rows = f" {payload.get('rows_scored', 0):,} scored" if status == "ok" else ""
        rejected = payload.get("rows_rejected", 0)
        rej = f", {rejected:,} rejected" if rejected else ""
        return f"{status:>7}  {payload.get('input')}{rows}{rej}{extra}"
    if kind in ("warning", "error", "info"):
        return f"{kind}: {payload.get('message')}"
    return ""


def format_summary(summary: Mapping[str, Any], title: str) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if key == "event":
            continue
        if isinstance(value, float):
            shown = f"{value:,.2f}"
        elif isinstance(value, int):
            shown = f"{value:,}"
        elif isinstance(value, dict):
            shown = ", ".join(f"{k}={v}" for k, v in value.items())
        else:
            shown = str(value)
        table.add_row(key.replace("_", " "), shown)
    return table


def print_summary(summary: Mapping[str, Any], *, title: str, log_format: str) -> None:
    """The final summary: a table on a terminal, one JSON line otherwise."""
    if log_format == "json" or (log_format == "auto" and not stdout_is_tty()):
        json_line({"event": "summary", **summary})
    else:
        _stdout.print(format_summary(summary, title))


def format_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    return table
