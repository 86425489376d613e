"""Pictures of a benchmark: ``--plot FILE.html`` (self-contained page), ``.png`` or ``.svg``.

Two charts, drawn with matplotlib (:mod:`streamscore.plotting`): the latency distribution of
every configuration (log-scale histograms with p50 and p99 marked, one row each) and
throughput (rows/s) against batch size, one line per other setting. The HTML page inlines
each chart as SVG beside the results table; PNG and SVG files hold both charts in one figure.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from streamscore import plotting
from streamscore.atomic import write_atomically
from streamscore.bench.report import BenchReport, BenchResult

P50_COLOR, P99_COLOR, BAR_COLOR = "#1e3a8a", "#dc2626", "#93c5fd"
ROW_HEIGHT_IN = 0.55


def _label(result: BenchResult, best: str | None) -> str:
    return result.key + ("  (best)" if result.key == best else "")


def _latency_rows(report: BenchReport) -> list[BenchResult]:
    return [r for r in report.results if r.histogram is not None and r.histogram.counts]


def draw_latency(container: Any, report: BenchReport) -> None:
    """One row per configuration: its latency histogram (share of calls), p50 and p99."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import PercentFormatter

    rows = _latency_rows(report)
    best = report.best
    axes = container.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    low, high = _occupied_range(rows)
    for ax, result in zip(axes, rows, strict=True):
        assert result.histogram is not None
        counts, bins = result.histogram.counts, result.histogram.edges_ms
        total = sum(counts) or 1
        shares = [c / total for c in counts]
        ax.stairs(shares, bins, fill=True, color=BAR_COLOR, linewidth=0)
        ax.axvline(result.latency_ms.p50, color=P50_COLOR, linewidth=1.8)
        ax.axvline(result.latency_ms.p99, color=P99_COLOR, linewidth=1.8)
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(0, max(shares) * 1.15 or 1)
        ax.set_yticks([max(shares)])
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.yaxis.tick_right()
        ax.tick_params(axis="y", labelsize=7.5, colors=plotting.MUTED, length=0)
        ax.set_ylabel(_label(result, best), rotation=0, ha="right", va="center", fontsize=8.5)
        ax.grid(axis="y", visible=False)
    plotting.log_axis(axes[-1].xaxis)
    axes[-1].set_xlabel("latency per call (ms, log scale)")
    container.suptitle("Latency distribution per configuration", x=0.01, ha="left", fontsize=11)
    container.legend(
        handles=[
            Patch(color=BAR_COLOR, label="share of calls (peak % at right)"),
            Line2D([], [], color=P50_COLOR, linewidth=1.8, label="p50"),
            Line2D([], [], color=P99_COLOR, linewidth=1.8, label="p99"),
        ],
        loc="outside upper right",
        ncols=3,
    )


def _occupied_range(rows: list[BenchResult]) -> tuple[float, float]:
    """From the lowest to the highest latency bin that holds calls, in any configuration."""
    lows, highs = [], []
    for result in rows:
        assert result.histogram is not None
        counts, edges = result.histogram.counts, result.histogram.edges_ms
        used = [i for i, count in enumerate(counts) if count]
        lows.append(edges[used[0]])
        highs.append(edges[used[-1] + 1])
    low, high = min(lows), max(highs)
    return (low / 1.2, high * 1.2) if high > low else (low / 2, high * 2)


def _series(report: BenchReport) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for r in report.results:
        c = r.configuration
        name = f"{c.provider} threads={c.threads} concurrency={c.concurrency}"
        if c.rate is not None:
            name += f" rate={c.rate:g}/{c.arrivals}"
        series.setdefault(name, []).append((c.batch_size, r.rows_per_s))
    for p in report.pipeline:
        setting = f"{p.provider} threads={p.threads}"
        series.setdefault(f"batch pipeline {setting}", []).append(
            (p.batch_size, p.pipeline_rows_per_s)
        )
        series.setdefault(f"bare session.run {setting}", []).append(
            (p.batch_size, p.bare_rows_per_s)
        )
    return {
        name: sorted(p for p in points if p[1] > 0)
        for name, points in series.items()
        if any(p[1] > 0 for p in points)
    }


def draw_throughput(container: Any, report: BenchReport) -> None:
    """Rows/s against batch size (both log scale), one line per other setting."""
    series = _series(report)
    ax = container.subplots()
    for i, (name, points) in enumerate(series.items()):
        batches = [b for b, _ in points]
        rates = [v for _, v in points]
        color = plotting.PALETTE[i % len(plotting.PALETTE)]
        ax.plot(batches, rates, marker="o", markersize=4, linewidth=1.8, color=color, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    batches = sorted({b for points in series.values() for b, _ in points})
    ax.set_xticks(batches, [f"{b:,}" for b in batches])
    ax.xaxis.set_minor_formatter("")
    ax.set_xlim(batches[0] / 1.5, batches[-1] * 1.5)
    plotting.log_axis(ax.yaxis)
    ax.set_xlabel("batch size (rows per call, log scale)")
    ax.set_ylabel("throughput (rows/s, log scale)")
    ax.set_title("Throughput against batch size", loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)


def _latency_height(report: BenchReport) -> float:
    return 1.3 + ROW_HEIGHT_IN * len(_latency_rows(report))


def _drawers(report: BenchReport) -> list[tuple[Any, float]]:
    """The charts this report has data for, with their heights in inches."""
    drawn: list[tuple[Any, float]] = []
    if _latency_rows(report):
        drawn.append((draw_latency, _latency_height(report)))
    if _series(report):
        drawn.append((draw_throughput, 3.6))
    return drawn


WIDTH_IN = 10.0


def figures(report: BenchReport) -> list[Any]:
    """One matplotlib figure per chart (for the HTML page)."""
    made = []
    for draw, height in _drawers(report):
        figure = plotting.new_figure(WIDTH_IN, height)
        with plotting.styled():
            draw(figure, report)
        made.append(figure)
    return made


def combined_figure(report: BenchReport) -> Any:
    """Both charts stacked in one figure (for PNG and SVG files)."""
    drawn = _drawers(report)
    heights = [h for _, h in drawn] or [1.0]
    figure = plotting.new_figure(WIDTH_IN, sum(heights) + 0.5)
    with plotting.styled():
        figure.suptitle(
            f"streamscore bench: {report.model.name} {report.model.version}",
            x=0.01,
            ha="left",
            fontsize=13,
        )
        if not drawn:
            figure.text(0.5, 0.5, "nothing was measured", ha="center")
            return figure
        parts = figure.subfigures(len(drawn), 1, height_ratios=heights, squeeze=False)[:, 0]
        for (draw, _), part in zip(drawn, parts, strict=True):
            draw(part, report)
    return figure


def _environment_lines(report: BenchReport) -> Iterable[str]:
    env, model = report.environment, report.model
    yield f"model {model.name} {model.version} · sha256 {model.sha256[:16]}… · {model.path}"
    yield (
        f"{env.cpu_model} · {env.cpu_cores_logical} logical cores · {env.os} · "
        f"ONNX Runtime {env.onnxruntime} · streamscore {env.streamscore}"
    )
    yield (
        f"providers listed: {', '.join(env.providers_listed)} · used: "
        f"{', '.join(env.providers_used) or 'none'} · inputs: {report.settings.inputs}"
    )
    for status in report.providers:
        if not status.available:
            yield f"{status.requested}: unavailable ({status.reason})"


def _results_table(report: BenchReport) -> str:
    if not report.results:
        return ""
    best = report.best
    # The same latency columns as the terminal table.
    header = (
        "configuration", "rows/s", "calls/s", "min ms", "p50 ms", "p90 ms", "p95 ms", "p99 ms",
        "max ms", "overhead", "stable",
    )  # fmt: skip
    rows = []
    for r in report.results:
        lat = r.latency_ms
        rows.append(
            [
                ("★ " if r.key == best else "") + r.key,
                f"{r.rows_per_s:,.0f}",
                f"{r.calls_per_s:,.0f}",
                *(f"{v:.3g}" for v in (lat.min, lat.p50, lat.p90, lat.p95, lat.p99, lat.max)),
                "-" if r.overhead is None else f"{r.overhead:.1%}",
                "yes" if r.stable else "no",
            ]
        )
    closed = any(not r.open_loop for r in report.results)
    star = "★ most rows/s" if closed else "★ lowest p99"
    return plotting.html_table(header, rows) + f"<p>{star}</p>"


def to_html(report: BenchReport) -> str:
    """A self-contained page: the results table and each chart as inline SVG, no script."""
    meta = "".join(f"<p>{html.escape(line)}</p>" for line in _environment_lines(report))
    charts = "".join(f"<figure>{plotting.svg_text(figure)}</figure>" for figure in figures(report))
    title = f"streamscore bench · {report.model.name} · {report.created_at}"
    body = (
        f"<h1>{html.escape(title)}</h1>\n{meta}\n{_results_table(report)}\n"
        f"{charts or '<p>nothing was measured</p>'}"
    )
    return plotting.html_page(f"streamscore bench: {report.model.name}", body)


def to_png(report: BenchReport) -> bytes:
    """Both charts stacked in one PNG image."""
    return plotting.png_bytes(combined_figure(report))


def to_svg(report: BenchReport) -> str:
    """Both charts stacked in one SVG image (the same figure as the PNG)."""
    return '<?xml version="1.0" encoding="utf-8"?>\n' + plotting.svg_text(combined_figure(report))


def write_plot(report: BenchReport, path: Path) -> None:
    """Write ``path`` as a self-contained HTML page (.html), a PNG (.png) or an SVG (.svg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".png":
        write_atomically(path, to_png(report))
    elif suffix == ".svg":
        write_atomically(path, to_svg(report))
    else:
        write_atomically(path, to_html(report))
