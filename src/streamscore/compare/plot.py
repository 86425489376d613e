"""``compare --report FILE.html``: one self-contained page a reviewer can read.

Per score column, one figure (matplotlib, inlined as SVG): the two score distributions
overlaid, A against B as a scatter (a random subset of the sample), and the histogram of
A−B; then the 2×2 label table and the rows that differ most. The page has no script and
loads nothing, so it opens from disk and can be attached to a CI run.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from streamscore import plotting
from streamscore.atomic import write_atomically
from streamscore.compare.report import ColumnResult, CompareReport, Side

SCATTER_POINTS = 4000
BINS = 50


def side_label(name: str, side: Side) -> str:
    """``A fraud v1`` or ``A topic scores-v1``."""
    if side.model:
        return f"{name} {side.model}" + (f" v{side.version}" if side.version else "")
    return f"{name} {side.source}"


def column_figure(report: CompareReport, column: ColumnResult) -> Any:
    """Distributions overlaid, A vs B scatter, and the A−B histogram of one column."""
    from matplotlib.ticker import FuncFormatter

    a, b = report.samples.get(column.name, (np.empty(0), np.empty(0)))
    label_a, label_b = side_label("A", report.a), side_label("B", report.b)
    figure = plotting.new_figure(12.0, 3.9)
    with plotting.styled():
        dist, scatter, delta = figure.subplots(1, 3, width_ratios=[1.25, 1, 1.1])
        figure.suptitle(
            f"{column.name}: {column.compared:,} matched rows"
            + ("" if report.sample["exact"] else f" (pictures from a sample of {len(a):,})"),
            x=0.01,
            ha="left",
            fontsize=12,
        )
        if len(a) == 0:
            for ax in (dist, scatter, delta):
                ax.text(0.5, 0.5, "no matched rows", ha="center", transform=ax.transAxes)
            return figure
        low = float(min(a.min(), b.min()))
        high = float(max(a.max(), b.max()))
        edges = np.linspace(low, high if high > low else low + 1, BINS + 1)
        weights = np.full(len(a), 1 / len(a))
        dist.hist(a, edges, weights=weights, histtype="stepfilled", alpha=0.35,
                  color=plotting.A_COLOR, label=label_a)  # fmt: skip
        dist.hist(b, edges, weights=weights, histtype="stepfilled", alpha=0.35,
                  color=plotting.B_COLOR, label=label_b)  # fmt: skip
        dist.hist(a, edges, weights=weights, histtype="step", color=plotting.A_COLOR)
        dist.hist(b, edges, weights=weights, histtype="step", color=plotting.B_COLOR)
        dist.set_yscale("log")
        dist.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v * 100:g}%"))
        dist.set_xlabel(f"{column.name} (score)")
        dist.set_ylabel("share of rows (log scale)")
        dist.set_title("Score distributions", loc="left")
        dist.legend(loc="best")

        shown = np.random.default_rng(0).permutation(len(a))[:SCATTER_POINTS]
        scatter.scatter(a[shown], b[shown], s=5, alpha=0.35, color=plotting.NEUTRAL,
                        linewidths=0, rasterized=True)  # fmt: skip
        scatter.plot([low, high], [low, high], color=plotting.MUTED, linewidth=1, linestyle="--",
                     label="A = B")  # fmt: skip
        if column.classifier:
            scatter.axvline(column.threshold, color="#dc2626", linewidth=0.8, alpha=0.7)
            scatter.axhline(column.threshold, color="#dc2626", linewidth=0.8, alpha=0.7,
                            label=f"threshold {column.threshold:g}")  # fmt: skip
        scatter.set_xlabel(f"{label_a} (score)")
        scatter.set_ylabel(f"{label_b} (score)")
        scatter.set_title(f"A against B ({len(shown):,} rows shown)", loc="left")
        scatter.legend(loc="best")

        diffs = a - b
        span = float(np.abs(diffs).max()) or 1e-9
        delta.hist(diffs, np.linspace(-span, span, BINS + 1), color=plotting.NEUTRAL)
        delta.set_yscale("log")
        delta.set_xlabel(f"A − B ({column.name}, score units)")
        delta.set_ylabel(("rows" if report.sample["exact"] else "rows in sample") + " (log scale)")
        delta.set_title(f"Difference, max |A − B| = {column.delta.max_abs:.3g}", loc="left")
        delta.axvline(0, color=plotting.MUTED, linewidth=0.8)
    return figure


def _fmt(value: float | None, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _summary_table(report: CompareReport) -> str:
    header = ("column", "rows", "mean A", "mean B", "p50 A", "p50 B", "mean |A−B|", "max |A−B|",
              "Pearson", "Spearman", "PSI", "flips", "flip rate")  # fmt: skip
    rows = [
        (
            c.name,
            f"{c.compared:,}",
            _fmt(c.a.mean),
            _fmt(c.b.mean),
            _fmt(c.a.quantiles.get("p50")),
            _fmt(c.b.quantiles.get("p50")),
            _fmt(c.delta.mean_abs, ".3g"),
            _fmt(c.delta.max_abs, ".3g"),
            _fmt(c.pearson),
            _fmt(c.spearman),
            _fmt(c.psi, ".4f"),
            "-" if c.flips is None else f"{c.flips:,}",
            "-" if c.flip_rate is None else f"{c.flip_rate:.3%}",
        )
        for c in report.columns
    ]
    return plotting.html_table(header, rows)


def _rows_table(report: CompareReport) -> str:
    r = report.rows
    header = ("matched", "only A", "only B", "neither (both rejected)", "repeated in A",
              "repeated in B")  # fmt: skip
    return plotting.html_table(
        header,
        [
            [
                f"{v:,}"
                for v in (r.matched, r.only_a, r.only_b, r.neither, r.duplicates_a, r.duplicates_b)
            ]
        ],  # fmt: skip
    )


def _label_table(column: ColumnResult) -> str:
    if column.table is None:
        return "<p>not a classifier column (values outside [0, 1]): no label flips</p>"
    t, thr = column.table, column.threshold
    return plotting.html_table(
        (f"labels at {thr:g}", f"B < {thr:g}", f"B ≥ {thr:g}"),
        [(f"A < {thr:g}", f"{t[0][0]:,}", f"{t[0][1]:,}"),
         (f"A ≥ {thr:g}", f"{t[1][0]:,}", f"{t[1][1]:,}")],
    )  # fmt: skip


def _top_table(column: ColumnResult) -> str:
    if not column.top:
        return ""
    keep = list(column.top[0]["keep"])
    header = ("key", "A", "B", "A − B", *keep)
    rows = [
        (row["key"], _fmt(row["a"]), _fmt(row["b"]), _fmt(row["delta"]),
         *(row["keep"].get(k) for k in keep))
        for row in column.top
    ]  # fmt: skip
    title = html.escape(f"{column.name}: rows that differ most")
    return f"<h3>{title}</h3>{plotting.html_table(header, rows)}"


def _gate(report: CompareReport) -> str:
    gate = report.gate
    if gate.max_flip_rate is None and gate.max_psi is None:
        return ""
    if not gate.failures:
        return "<p><strong>gate passed</strong></p>"
    items = "".join(
        f"<li>{html.escape(f.column)}: flip rate {f.value:.3%} &gt; {f.limit:.3%}</li>"
        if f.metric == "flip_rate"
        else f"<li>{html.escape(f.column)}: PSI {f.value:.4f} &gt; {f.limit:g}</li>"
        if f.metric == "psi"
        else "<li>no row was scored by both sides</li>"
        for f in gate.failures
    )
    return f"<p><strong>gate failed</strong></p><ul>{items}</ul>"


def to_html(report: CompareReport) -> str:
    """The whole report as one self-contained HTML page."""
    a, b = side_label("A", report.a), side_label("B", report.b)
    sample = report.sample
    note = (
        "every matched row is in the statistics"
        if sample["exact"]
        else f"quantiles, Spearman, PSI and pictures use a uniform sample of {sample['rows']:,} "
        "matched rows; counts, means, Pearson, max |A−B| and flips use every row"
    )
    parts = [
        f"<h1>streamscore compare · {html.escape(report.created_at)}</h1>",
        f"<p>{html.escape(a)}: {html.escape(report.a.source)}</p>",
        f"<p>{html.escape(b)}: {html.escape(report.b.source)}</p>",
        f"<p>mode {report.mode} · threshold {report.settings['threshold']:g} · "
        f"{html.escape(note)}</p>",
        _gate(report),
        "<h2>Rows</h2>",
        _rows_table(report),
        "<h2>Score columns</h2>",
        _summary_table(report),
    ]
    for column in report.columns:
        figure = plotting.svg_text(column_figure(report, column))
        parts += [
            f"<h2>{html.escape(column.name)}</h2>",
            f"<figure>{figure}</figure>",
            _label_table(column),
            _top_table(column),
        ]
    return plotting.html_page("streamscore compare", "\n".join(parts))


def write_report(report: CompareReport, path: Path) -> None:
    """Write the HTML report atomically (a temporary file renamed into place)."""
    write_atomically(path, to_html(report))
