"""Pictures of a benchmark: ``--plot FILE.html`` (self-contained SVG) or ``FILE.png``.

Two charts: the latency distribution of every configuration (log-scale histograms with
p50 and p99 marked) and throughput (rows/s) against batch size, one line per setting.
Charts are laid out once as plain shapes, then written as inline SVG in an HTML page that
opens without a server or network, or rasterized by :mod:`.raster` into a PNG.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from streamscore.bench.raster import Canvas, text_width
from streamscore.bench.report import BenchReport, BenchResult

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563")
INK, MUTED, GRID, BAR, P50, P99 = "#111827", "#6b7280", "#e5e7eb", "#93c5fd", "#1e3a8a", "#dc2626"
CHAR_W = 6.5  # average width of an 11 px sans-serif character, for layout


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    tip: str = ""


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    color: str
    width: int = 1
    tip: str = ""


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    r: float
    color: str
    tip: str = ""


@dataclass(frozen=True)
class Label:
    x: float
    y: float  # baseline
    text: str
    color: str = INK
    size: int = 11
    anchor: str = "start"  # start | middle | end


Shape = Rect | Line | Dot | Label


@dataclass
class Chart:
    width: float
    height: float
    title: str
    shapes: list[Shape] = field(default_factory=list)


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks between low and high (positive), at most about a dozen."""
    ticks: list[float] = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for step in (1, 2, 5):
            value = step * 10.0**exponent
            if low <= value <= high:
                ticks.append(value)
    if len(ticks) > 12:
        ticks = [t for t in ticks if f"{t:.0e}".startswith("1")]
    return ticks


def _fmt(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


class _LogAxis:
    """Maps values to pixels on a log scale; a degenerate range is widened."""

    def __init__(self, low: float, high: float, start: float, length: float) -> None:
        low, high = max(low, 1e-9), max(high, 1e-9)
        if high <= low * 1.01:
            low, high = low / 2, high * 2
        self.low, self.high = low, high
        self.start, self.length = start, length
        self._span = math.log10(high) - math.log10(low)

    def __call__(self, value: float) -> float:
        clamped = min(max(value, self.low), self.high)
        return self.start + (math.log10(clamped) - math.log10(self.low)) / self._span * self.length


def _label(result: BenchResult, best: str | None) -> str:
    return result.key + ("  (best)" if result.key == best else "")


def latency_chart(report: BenchReport) -> Chart | None:
    """One row per configuration: its latency histogram, with p50 and p99 lines."""
    rows = [r for r in report.results if r.histogram is not None and r.histogram.counts]
    if not rows:
        return None
    best = report.best
    left = 24 + CHAR_W * max(len(_label(r, best)) for r in rows)
    plot_w, row_h, top = 560.0, 30.0, 46.0
    chart = Chart(left + plot_w + 30, top + row_h * len(rows) + 44, "Latency per configuration")
    edges = [e for r in rows if r.histogram for e in r.histogram.edges_ms]
    x = _LogAxis(min(edges), max(edges), left, plot_w)
    add = chart.shapes.append
    add(Label(12, 22, "Latency distribution per configuration (ms, log scale)", size=14))
    add(Label(12, 38, "bars: share of calls; dark line: p50; red line: p99", MUTED))
    bottom = top + row_h * len(rows)
    for tick in _log_ticks(x.low, x.high):
        add(Line(x(tick), top, x(tick), bottom, GRID))
        add(Label(x(tick), bottom + 16, _fmt(tick), MUTED, anchor="middle"))
    for i, result in enumerate(rows):
        assert result.histogram is not None
        y0 = top + i * row_h
        base = y0 + row_h - 5
        add(Label(left - 10, base - 6, _label(result, best), anchor="end"))
        add(Line(left, base, left + plot_w, base, GRID))
        counts, hist_edges = result.histogram.counts, result.histogram.edges_ms
        peak = max(counts) or 1
        for count, lo, hi in zip(counts, hist_edges, hist_edges[1:], strict=False):
            if count:
                h = (row_h - 9) * count / peak
                tip = f"{result.key}: {count:,} calls between {lo:.3g} and {hi:.3g} ms"
                add(Rect(x(lo), base - h, max(x(hi) - x(lo) - 0.5, 1.0), h, BAR, tip))
        lat = result.latency_ms
        add(
            Line(
                x(lat.p50), y0 + 3, x(lat.p50), base, P50, 2, f"{result.key}: p50 {lat.p50:.4g} ms"
            )
        )
        add(
            Line(
                x(lat.p99), y0 + 3, x(lat.p99), base, P99, 2, f"{result.key}: p99 {lat.p99:.4g} ms"
            )
        )
    add(Label(left + plot_w / 2, bottom + 34, "latency (ms)", MUTED, anchor="middle"))
    return chart


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
    return {name: sorted(points) for name, points in series.items()}


def throughput_chart(report: BenchReport) -> Chart | None:
    """Rows/s against batch size (both log scale), one line per other setting."""
    series = _series(report)
    points = [p for line in series.values() for p in line if p[1] > 0]
    if not points:
        return None
    left, top, plot_w, plot_h = 70.0, 46.0, 520.0, 260.0
    legend_w = 40 + CHAR_W * max(len(name) for name in series)
    chart = Chart(left + plot_w + legend_w + 20, top + plot_h + 50, "Throughput")
    add = chart.shapes.append
    add(Label(12, 22, "Throughput against batch size (rows/s, log scales)", size=14))
    batches = [b for b, _ in points]
    rates = [v for _, v in points]
    x = _LogAxis(min(batches) / 1.3, max(batches) * 1.3, left, plot_w)
    y_up = _LogAxis(min(rates) / 1.5, max(rates) * 1.5, 0, plot_h)

    def y(value: float) -> float:
        return top + plot_h - y_up(value)

    for tick in _log_ticks(y_up.low, y_up.high):
        add(Line(left, y(tick), left + plot_w, y(tick), GRID))
        add(Label(left - 8, y(tick) + 4, _fmt(tick), MUTED, anchor="end"))
    for batch in sorted(set(batches)):
        add(Line(x(batch), top, x(batch), top + plot_h, GRID))
        add(Label(x(batch), top + plot_h + 16, f"{batch:,}", MUTED, anchor="middle"))
    add(
        Label(
            left + plot_w / 2,
            top + plot_h + 36,
            "batch size (rows per call)",
            MUTED,
            anchor="middle",
        )
    )
    for i, (name, line) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        shown = [(b, v) for b, v in line if v > 0]
        for (b1, v1), (b2, v2) in zip(shown, shown[1:], strict=False):
            add(Line(x(b1), y(v1), x(b2), y(v2), color, 2))
        for b, v in shown:
            add(Dot(x(b), y(v), 3.5, color, f"{name}, batch {b}: {v:,.0f} rows/s"))
        ly = top + 8 + i * 18
        add(Rect(left + plot_w + 20, ly - 8, 12, 8, color))
        add(Label(left + plot_w + 38, ly, name))
    return chart


def charts(report: BenchReport) -> list[Chart]:
    return [c for c in (latency_chart(report), throughput_chart(report)) if c is not None]


# --- SVG and HTML -------------------------------------------------------------------------


def _tip(text: str) -> str:
    return f"<title>{html.escape(text)}</title>" if text else ""


def _svg_shape(shape: Shape) -> str:
    if isinstance(shape, Rect):
        return (
            f'<rect x="{shape.x:.1f}" y="{shape.y:.1f}" width="{shape.w:.1f}" '
            f'height="{shape.h:.1f}" fill="{shape.fill}">{_tip(shape.tip)}</rect>'
        )
    if isinstance(shape, Line):
        return (
            f'<line x1="{shape.x1:.1f}" y1="{shape.y1:.1f}" x2="{shape.x2:.1f}" '
            f'y2="{shape.y2:.1f}" stroke="{shape.color}" stroke-width="{shape.width}">'
            f"{_tip(shape.tip)}</line>"
        )
    if isinstance(shape, Dot):
        return (
            f'<circle cx="{shape.x:.1f}" cy="{shape.y:.1f}" r="{shape.r:.1f}" '
            f'fill="{shape.color}">{_tip(shape.tip)}</circle>'
        )
    return (
        f'<text x="{shape.x:.1f}" y="{shape.y:.1f}" fill="{shape.color}" '
        f'font-size="{shape.size}" text-anchor="{shape.anchor}">{html.escape(shape.text)}</text>'
    )


def to_svg(chart: Chart) -> str:
    body = "\n".join(_svg_shape(shape) for shape in chart.shapes)
    return (
        f'<svg width="{chart.width:.0f}" '
        f'height="{chart.height:.0f}" viewBox="0 0 {chart.width:.0f} {chart.height:.0f}" '
        f'font-family="system-ui, sans-serif" role="img" aria-label="{html.escape(chart.title)}">'
        f"\n{body}\n</svg>"
    )


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
    head = "".join(
        f"<th>{h}</th>"
        for h in ("configuration", "rows/s", "calls/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
                  "overhead", "stable")
    )  # fmt: skip
    rows = []
    best = report.best
    for r in report.results:
        lat = r.latency_ms
        cells = [
            ("★ " if r.key == best else "") + html.escape(r.key),
            f"{r.rows_per_s:,.0f}",
            f"{r.calls_per_s:,.0f}",
            *(f"{v:.3g}" for v in (lat.p50, lat.p90, lat.p99, lat.max)),
            "-" if r.overhead is None else f"{r.overhead:.1%}",
            "yes" if r.stable else "no",
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def to_html(report: BenchReport) -> str:
    """A self-contained page: inline SVG and CSS, no script, no external resource."""
    meta = "".join(f"<p>{html.escape(line)}</p>" for line in _environment_lines(report))
    figures = "".join(f"<figure>{to_svg(chart)}</figure>" for chart in charts(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>streamscore bench: {html.escape(report.model.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: {INK}; }}
p {{ margin: 2px 0; color: {MUTED}; font-size: 13px; }}
figure {{ margin: 24px 0; overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 16px; }}
td, th {{ padding: 3px 10px; border-bottom: 1px solid {GRID}; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style></head><body>
<h1>streamscore bench · {html.escape(report.model.name)} · {html.escape(report.created_at)}</h1>
{meta}
{_results_table(report)}
{figures or "<p>nothing was measured</p>"}
</body></html>
"""


# --- PNG ----------------------------------------------------------------------------------


def _draw(canvas: Canvas, shape: Shape, dy: float) -> None:
    if isinstance(shape, Rect):
        canvas.fill_rect(shape.x, shape.y + dy, shape.w, shape.h, shape.fill)
    elif isinstance(shape, Line):
        canvas.line(shape.x1, shape.y1 + dy, shape.x2, shape.y2 + dy, shape.color, shape.width)
    elif isinstance(shape, Dot):
        canvas.dot(shape.x, shape.y + dy, shape.r, shape.color)
    else:
        scale = 2 if shape.size >= 14 else 1
        canvas.text(shape.x, shape.y + dy, shape.text, shape.color, scale, shape.anchor)


def to_png(report: BenchReport) -> bytes:
    """Both charts stacked in one PNG image."""
    drawn = charts(report)
    header = f"STREAMSCORE BENCH: {report.model.name} {report.model.version}"
    width = max([c.width for c in drawn] + [text_width(header, 2) + 24.0])
    canvas = Canvas(round(width), round(40 + sum(c.height for c in drawn)))
    canvas.text(12, 28, header, INK, 2)
    offset = 40.0
    for chart in drawn:
        for shape in chart.shapes:
            _draw(canvas, shape, offset)
        offset += chart.height
    return canvas.to_png()


def write_plot(report: BenchReport, path: Path) -> None:
    """Write ``path`` as a self-contained HTML page (.html) or a PNG image (.png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        path.write_bytes(to_png(report))
    else:
        path.write_text(to_html(report), encoding="utf-8")
