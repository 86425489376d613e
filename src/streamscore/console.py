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
from enum import Enum
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
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
from rich.text import Text

from streamscore.errors import UsageError
from streamscore.reporting import Reporter


class LogFormat(str, Enum):
    """``--log-format``: ``auto`` (rich on a terminal, JSON lines otherwise), ``json``, ``text``."""

    AUTO = "auto"
    JSON = "json"
    TEXT = "text"

    @classmethod
    def parse(cls, text: str) -> LogFormat:
        """The format named ``text``; a one-line UsageError otherwise."""
        try:
            return cls(text)
        except ValueError:
            raise UsageError(f"--log-format must be auto, json or text, not {text!r}") from None


_stdout = Console(highlight=False)
_stderr = Console(stderr=True, highlight=False)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def print_error(line: str) -> None:
    """One line on stderr, prefixed so it stands out in cron mail and CI logs."""
    if sys.stderr.isatty():
        # The message may quote paths or data: never read it as rich markup.
        _stderr.print(Text("error: ", style="bold red") + Text(line), soft_wrap=True)
    else:
        print(f"error: {line}", file=sys.stderr, flush=True)


def print_text(text: str) -> None:
    print(text, flush=True)


def print_renderable(renderable: Any) -> None:
    _stdout.print(renderable)


def print_wide(renderable: Any, *, stderr: bool = False) -> None:
    """Like print_renderable, but off a terminal up to 200 columns: CI logs do not wrap.

    ``stderr`` sends it there: human text when stdout carries JSON lines.
    """
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        (_stderr if stderr else _stdout).print(renderable)
    else:  # a Console never prints wider than its own width, so make a wider one
        Console(file=stream, highlight=False, width=200).print(renderable)


def print_note(text: str) -> None:
    """A human line that is not the command's output (warnings, "wrote FILE"): on stderr."""
    print(text, file=sys.stderr, flush=True)


def machine_readable(log_format: LogFormat) -> bool:
    """Whether stdout carries JSON lines only: ``json``, or ``auto`` off a terminal."""
    return log_format is LogFormat.JSON or (log_format is LogFormat.AUTO and not stdout_is_tty())


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

    def add_task(
        self, key: str, description: str, total: int | None, *, completed: int = 0
    ) -> None:
        self._totals[key] = total
        self._done.setdefault(key, completed)

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
        self._resumed_at: dict[str, float] = {}
        self._progress.start()

    def add_task(
        self, key: str, description: str, total: int | None, *, completed: int = 0
    ) -> None:
        self._tasks[key] = self._progress.add_task(
            description, total=total, completed=completed, rate=""
        )
        self._started[key] = time.monotonic()
        self._resumed_at[key] = completed

    def advance(self, key: str, amount: int) -> None:
        task = self._tasks[key]
        self._progress.advance(task, amount)
        elapsed = max(time.monotonic() - self._started[key], 1e-9)
        done = self._progress.tasks[task].completed - self._resumed_at[key]
        self._progress.update(task, rate=f"{done / elapsed:,.0f}/s")

    def event(self, payload: Mapping[str, Any]) -> None:
        line = format_event(payload)
        if line:
            self._progress.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def make_reporter(log_format: LogFormat) -> Reporter:
    """``auto`` means rich on a terminal and JSON lines otherwise."""
    if machine_readable(log_format):
        return JsonReporter()
    return RichReporter()


class LiveStatusReporter:
    """Reporter for ``tail`` on a terminal: a live status panel, events as lines above it.

    ``status`` events (see ``streamscore.metrics.TailStatus``) redraw the panel.
    """

    def __init__(self) -> None:
        self._live = Live(format_tail_status({}), console=_stdout, auto_refresh=False)
        self._live.start()

    def add_task(
        self, key: str, description: str, total: int | None, *, completed: int = 0
    ) -> None:
        pass

    def advance(self, key: str, amount: int) -> None:
        pass

    def event(self, payload: Mapping[str, Any]) -> None:
        if payload.get("event") == "status":
            self._live.update(format_tail_status(payload), refresh=True)
            return
        line = format_event(payload)
        if line:
            self._live.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self._live.stop()


def make_status_reporter(log_format: LogFormat) -> Reporter:
    """Like :func:`make_reporter`, with a live status panel instead of progress bars."""
    if machine_readable(log_format):
        return JsonReporter()
    return LiveStatusReporter()


def _ms(values: Mapping[str, Any]) -> str:
    return "  ".join(f"{k} {v:,.1f}" for k, v in values.items()) + " ms" if values else "-"


def format_tail_status(status: Mapping[str, Any]) -> Table:
    """The live panel of ``tail``: rate, totals, lag, latency percentiles, model versions."""
    table = Table(title="streamscore tail", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    versions = status.get("versions") or {}
    table.add_row("models", ", ".join(f"{r} {v}" for r, v in versions.items()) or "-")
    table.add_row("rate", f"{status.get('rate', 0):,.0f} records/s")
    table.add_row(
        "records",
        f"{status.get('records_in', 0):,} in, {status.get('records_out', 0):,} out, "
        f"{status.get('dead_lettered', 0):,} dead-lettered",
    )
    lag = status.get("lag") or {}
    worst = sorted(lag.items(), key=lambda item: -item[1])[:4]
    shown = ", ".join(f"{tp} {n:,}" for tp, n in worst) + (" …" if len(lag) > 4 else "")
    table.add_row("lag", f"{status.get('lag_total', 0):,}" + (f"  ({shown})" if lag else ""))
    table.add_row("end to end", _ms(status.get("end_to_end_ms") or {}))
    table.add_row("inference", _ms(status.get("inference_ms") or {}))
    shadow = status.get("shadow") or {}
    if shadow:
        table.add_row(
            "shadow",
            f"{shadow.get('compared', 0):,} compared, {shadow.get('label_flips', 0):,} label "
            f"flips, mean |diff| {shadow.get('mean_score_difference', 0):.4f}",
        )
    errors = status.get("errors") or {}
    if errors:
        table.add_row("errors", ", ".join(f"{k}={v:,}" for k, v in errors.items()))
    servers = status.get("model_servers") or {}
    if servers:  # a remote model: its server's circuit breaker
        table.add_row("model server", ", ".join(f"{s} {state}" for s, state in servers.items()))
    return table


def format_event(payload: Mapping[str, Any]) -> str:
    """A one-line, human reading of a pipeline event (empty for events not worth a line)."""
    kind = payload.get("event")
    if kind == "model_loaded":
        return (
            f"model {payload.get('model')} version {payload.get('version')} now serving "
            f"(was {payload.get('previous_version')})"
        )
    if kind == "model_rejected":
        return (
            f"model {payload.get('model')} version {payload.get('version')} rejected, "
            f"{payload.get('serving')} keeps serving: {payload.get('reason')}"
        )
    if kind in ("assigned", "revoked", "lost"):
        return f"partitions {kind}: {payload.get('partitions')}"
    if kind == "file":
        status = payload.get("status")
        extra = f" ({payload['error']})" if payload.get("error") else ""
        rows = f" {payload.get('rows_scored', 0):,} scored" if status == "ok" else ""
        rejected = payload.get("rows_rejected", 0)
        rej = f", {rejected:,} rejected" if rejected else ""
        return f"{status:>7}  {payload.get('input')}{rows}{rej}{extra}"
    if kind in ("warning", "error", "info"):
        port = payload.get("metrics_port")
        metrics = f" · metrics on http://127.0.0.1:{port}/metrics" if port is not None else ""
        return f"{kind}: {payload.get('message')}{metrics}"
    return ""


def _is_identifier(key: str) -> bool:
    """Ports, offsets, partitions and ids are names, not amounts: never "33,011"."""
    last = key.rsplit("_", 1)[-1]
    return last in ("port", "offset", "partition", "pid", "id")


def format_summary(summary: Mapping[str, Any], title: str) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if key == "event":
            continue
        if value is None:  # e.g. no summary error
            shown = "-"
        elif isinstance(value, bool):  # before int: True is an int to Python
            shown = "yes" if value else "no"
        elif isinstance(value, float):
            shown = f"{value:,.2f}"
        elif isinstance(value, int):
            shown = str(value) if _is_identifier(key) else f"{value:,}"
        elif isinstance(value, dict):
            shown = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            shown = "; ".join(str(item) for item in value) or "-"
        else:
            shown = str(value)
        table.add_row(key.replace("_", " "), Text(shown))
    return table


def print_summary(summary: Mapping[str, Any], *, title: str, log_format: LogFormat) -> None:
    """The final summary: a table on a terminal, one JSON line otherwise."""
    if machine_readable(log_format):
        json_line({"event": "summary", **summary})
    else:
        _stdout.print(format_summary(summary, title))


def format_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=Text(title), title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*[Text(str(cell)) for cell in row])
    return table


# --- bench ------------------------------------------------------------------------------------


def _num(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None or value != value else format(value, spec)


def _threads(value: Any) -> str:
    return "auto" if value == 0 else str(value)


_LATENCY = ("min", "p50", "p90", "p95", "p99", "max")


def format_bench_results(report: Mapping[str, Any]) -> Table:
    """``streamscore bench``: one row per configuration, the best one marked with ★."""
    results = report.get("results") or []
    model = report.get("model") or {}
    open_loop = any(r["configuration"].get("rate") is not None for r in results)
    copies = any(r.get("transfer_ms") for r in results)
    label = ":".join(part for part in (model.get("name"), model.get("version")) if part)
    settings = report.get("settings") or {}
    closed = any(r["configuration"].get("rate") is None for r in results)
    star = "★ most rows/s" if closed else "★ lowest p99"
    table = Table(
        title=f"streamscore bench  {label}  (inputs {settings.get('inputs', '?')})",
        title_justify="left",
        caption=f"{star} · {format_bench_environment(report)}",
        caption_justify="left",
    )
    headers = ["", "provider", "threads", "batch", "conc."]
    # Open loop: the calls served per second are the calls/s, beside the rate asked for.
    headers += ["rate/s", "served/s"] if open_loop else ["calls/s"]
    headers += ["rows/s"] + [f"{name} ms" for name in _LATENCY]
    headers += ["queue p99 ms"] if open_loop else []
    headers += ["h2d / compute / d2h ms"] if copies else []
    headers += ["overhead", "stable"]
    for header in headers:
        numeric = header not in ("", "provider", "stable", "h2d / compute / d2h ms")
        table.add_column(header, justify="right" if numeric else "left")
    best = report.get("best")
    for r in results:
        c, lat = r["configuration"], r["latency_ms"]
        row = [
            "★" if r["key"] == best else "",
            c["provider"]
            + ("" if r["provider_used"] == c["provider"] else f"→{r['provider_used']}"),
            "-" if c["provider"] == "remote" else _threads(c["threads"]),
            f"{c['batch_size']:,}",
            str(c["concurrency"]),
        ]
        if open_loop:
            row += [_num(c.get("rate"), ",.0f")]
        row += [_num(r["calls_per_s"], ",.0f")]
        row += [_num(r["rows_per_s"], ",.0f")]
        row += [_num(lat[k]) for k in _LATENCY]
        if open_loop:
            row += [_num((r.get("queue_ms") or {}).get("p99"))]
        if copies:
            t = r.get("transfer_ms")
            row += [f"{t['h2d']:.3g} / {t['compute']:.3g} / {t['d2h']:.3g}" if t else "-"]
        overhead = r.get("overhead")
        row += [_num(overhead, ".1%"), "yes" if r["stable"] else "[yellow]no[/]"]
        table.add_row(*row, style="bold" if r["key"] == best else None)
    return table


def format_bench_environment(report: Mapping[str, Any]) -> str:
    """One or more caption lines: machine, versions, providers (unavailable ones say why)."""
    env = report.get("environment") or {}
    listed = ",".join(env.get("providers_listed", []))
    used = ",".join(env.get("providers_used", [])) or "none"
    lines = [
        f"{env.get('cpu_model', '?')}, {env.get('cpu_cores_logical', '?')} cores · ONNX Runtime "
        f"{env.get('onnxruntime', '?')} · providers listed {listed}, used {used}"
    ]
    for status in report.get("providers") or []:
        if not status.get("available"):
            lines.append(f"{status['requested']}: unavailable ({status.get('reason')})")
    return "\n".join(lines)


def format_bench_pipeline(report: Mapping[str, Any]) -> Table:
    """``bench --pipeline batch``: the pipeline's rows/s beside bare session.run, and the ratio."""
    table = Table(
        title="streamscore batch vs bare session.run on the same rows",
        title_justify="left",
        caption=format_bench_environment(report),
        caption_justify="left",
    )
    for header in ("provider", "threads", "batch", "rows", "batch rows/s", "bare rows/s"):
        table.add_column(header, justify="left" if header == "provider" else "right")
    table.add_column("ratio", justify="right")
    for p in report.get("pipeline") or []:
        table.add_row(
            p["provider"],
            _threads(p["threads"]),
            f"{p['batch_size']:,}",
            f"{p['rows']:,}",
            f"{p['pipeline_rows_per_s']:,.0f}",
            f"{p['bare_rows_per_s']:,.0f}",
            f"{p['ratio']:.2f}",
        )
    return table


def format_bench_remote(report: Mapping[str, Any]) -> Table:
    """``bench MODEL URL``: each embedded configuration against the served model."""
    table = Table(
        title=f"embedded vs served ({report.get('served')}), same inputs, same run",
        title_justify="left",
        caption="ratio: served rows/s over embedded rows/s; remote share: part of the served "
        "p50 the embedded model does not pay, split into the client's serialization (encode "
        "+ decode, timed apart) and the rest (network and server framework)",
        caption_justify="left",
    )
    headers = ["embedded", "embedded rows/s", "served rows/s", "ratio", "p50 ms", "served p50"]
    for header in [*headers, "remote share", "serialization", "network+server"]:
        table.add_column(header, justify="left" if header == "embedded" else "right")
    for c in report.get("remote_comparison") or []:
        table.add_row(
            c["embedded_key"],
            _num(c["embedded_rows_per_s"], ",.0f"),
            _num(c["remote_rows_per_s"], ",.0f"),
            f"{c['ratio']:.3g}x",
            _num(c["embedded_p50_ms"]),
            _num(c["remote_p50_ms"]),
            f"{c['remote_overhead']:.0%}",
            f"{c.get('serialization_share', 0):.0%}",
            f"{c.get('network_share', 0):.0%}",
        )
    return table


def format_bench_comparison(comparison: Mapping[str, Any]) -> Table:
    """The baseline comparison: every compared metric, regressions in red."""
    limit = comparison.get("max_regression", 0)
    table = Table(
        title=f"against {comparison.get('baseline')} (allowed: {limit:.0%} worse)",
        title_justify="left",
    )
    for header in ("configuration", "metric", "baseline", "now", "change", ""):
        table.add_column(
            header, justify="right" if header in ("baseline", "now", "change") else "left"
        )
    for change in comparison.get("changes") or []:
        rows = change["metric"] == "rows_per_s"
        spec = ",.0f" if rows else ".3g"
        worse = change["worse_by"]
        shown = -worse if rows else worse  # the sign of the raw change
        table.add_row(
            change["key"],
            "rows/s" if rows else "p99 ms",
            format(change["baseline"], spec),
            format(change["current"], spec),
            f"{shown:+.1%}",
            "[bold red]REGRESSED[/]" if change["regressed"] else "ok",
        )
    return table


def format_bench_notes(report: Mapping[str, Any]) -> list[str]:
    """Warnings worth a line after the table, and configurations the baseline lacked."""
    notes = [
        f"warning: {r['key']}: {warning}"
        for r in report.get("results") or []
        for warning in r.get("warnings") or []
    ]
    comparison = report.get("comparison") or {}
    if comparison.get("only_now"):
        notes.append(f"not in the baseline: {', '.join(comparison['only_now'])}")
    if comparison.get("only_in_baseline"):
        notes.append(f"in the baseline only: {', '.join(comparison['only_in_baseline'])}")
    return notes


# --- compare ----------------------------------------------------------------------------------


def _side(name: str, side: Mapping[str, Any]) -> str:
    if side.get("model"):
        version = f" v{side['version']}" if side.get("version") else ""
        return f"{name} = {side['model']}{version}"
    return f"{name} = {side.get('source')}"


def format_compare_columns(report: Mapping[str, Any]) -> Table:
    """``streamscore compare``: one row per score column (the JSON report, as a table)."""
    rows = report.get("rows") or {}
    sample = report.get("sample") or {}
    counts = (
        f"matched {rows.get('matched', 0):,} · only A {rows.get('only_a', 0):,} · "
        f"only B {rows.get('only_b', 0):,}"
    )
    if rows.get("neither"):
        counts += f" · rejected by both {rows['neither']:,}"
    if rows.get("duplicates_a") or rows.get("duplicates_b"):
        counts += f" · repeated A {rows['duplicates_a']:,} / B {rows['duplicates_b']:,}"
    if not sample.get("exact", True):
        counts += f"\nquantiles, Spearman and PSI from a sample of {sample.get('rows', 0):,} rows"
    table = Table(
        title=Text(
            f"streamscore compare  {_side('A', report['a'])}  vs  {_side('B', report['b'])}"
        ),
        title_justify="left",
        caption=Text(counts),
        caption_justify="left",
    )
    threshold = (report.get("settings") or {}).get("threshold", 0.5)
    headers = ["column", "rows", "mean A", "mean B", "p50 A", "p50 B", "mean |A−B|",
               "max |A−B|", "Pearson", "Spearman", "PSI", f"flips @{threshold:g}"]  # fmt: skip
    for header in headers:
        table.add_column(header, justify="left" if header == "column" else "right")
    failed = {f["column"] for f in (report.get("gate") or {}).get("failures") or []}
    for c in report.get("columns") or []:
        flips = "-" if c["flips"] is None else f"{c['flips']:,} ({c['flip_rate']:.2%})"
        table.add_row(
            Text(c["name"]),
            f"{c['compared']:,}",
            _num(c["a"]["mean"], ".4g"),
            _num(c["b"]["mean"], ".4g"),
            _num(c["a"]["quantiles"]["p50"], ".4g"),
            _num(c["b"]["quantiles"]["p50"], ".4g"),
            _num(c["delta"]["mean_abs"]),
            _num(c["delta"]["max_abs"]),
            _num(c["pearson"], ".4f"),
            _num(c["spearman"], ".4f"),
            _num(c["psi"], ".4f"),
            flips,
            style="red" if c["name"] in failed else None,
        )
    return table


def format_compare_top(column: Mapping[str, Any]) -> Table | None:
    """The rows of one column that differ most, with their kept columns."""
    top = column.get("top") or []
    if not top:
        return None
    keep = list(top[0].get("keep") or {})
    title = f"{column['name']}: rows that differ most"
    table = Table(title=Text(title), title_justify="left", min_width=len(title))
    # The key says which row it is, so it is never cut; kept columns give way first.
    key_width = max(len(str(row.get("key"))) for row in top)
    table.add_column("key", no_wrap=True, min_width=min(key_width, 80))
    for header in ("A", "B", "A − B"):
        table.add_column(header, justify="right", no_wrap=True)
    for header in keep:
        table.add_column(header)
    for row in top:
        table.add_row(
            Text(str(row.get("key"))),
            _num(row["a"], ".4g"),
            _num(row["b"], ".4g"),
            _num(row["delta"], "+.4g"),
            *(Text(str(row["keep"].get(name))) for name in keep),
        )
    return table
