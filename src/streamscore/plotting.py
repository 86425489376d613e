"""Charts drawn with matplotlib, shared by ``bench --plot`` and ``compare --report``.

matplotlib is the optional ``plot`` extra and is imported here only, when a chart is drawn,
so CLI start-up never pays for it and works without it (:func:`require_matplotlib` gives the
one-line error). Figures are built with the Agg canvas (no display, no global pyplot state);
one figure gives both the PNG and the SVG, and :func:`svg_text` returns SVG ready to be
inlined into an HTML page that opens from disk with no script and no external resource.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from streamscore.errors import UsageError

EXTRA = "plot"
PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563")
A_COLOR, B_COLOR, NEUTRAL = "#2563eb", "#d97706", "#4b5563"
INK, MUTED, GRID = "#111827", "#6b7280", "#e5e7eb"
PNG_DPI = 110

_STYLE: Any = {  # rcParams; Any: matplotlib types the keys as one long Literal
    "font.size": 9.5,
    "axes.titlesize": 11,
    "axes.labelsize": 9.5,
    "axes.edgecolor": "#9ca3af",
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "svg.fonttype": "path",  # glyphs as paths: the page looks the same without the fonts
}


def require_matplotlib(option: str) -> None:
    """Raise UsageError naming the ``plot`` extra when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(
            f"{option} needs matplotlib, which is not installed",
            hint=f"pip install 'streamscore[{EXTRA}]'",
        ) from None


def new_figure(width_in: float, height_in: float) -> Any:
    """An empty matplotlib Figure on an Agg canvas, laid out by constrained layout."""
    require_matplotlib("drawing charts")
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with rc_context(_STYLE):
        figure = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def styled() -> Any:
    """A context manager applying streamscore's chart style while axes are drawn."""
    from matplotlib import rc_context

    return rc_context(_STYLE)


def png_bytes(figure: Any) -> bytes:
    """The figure as a PNG image."""
    buffer = io.BytesIO()
    with styled():
        figure.savefig(buffer, format="png", dpi=PNG_DPI, facecolor="white")
    return buffer.getvalue()


def svg_text(figure: Any) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), to inline into HTML."""
    buffer = io.StringIO()
    with styled():
        figure.savefig(buffer, format="svg", facecolor="white", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def log_axis(axis: Any) -> None:
    """Plain numbers (1, 10, 2k, 5M) on a log-scaled axis instead of powers of ten.

    Ticks are labelled at 1, 2 and 5 times powers of ten; on an axis that spans less than
    a decade (say 75k to 290k rows/s) at 3, 4, 6 and 8 times as well, so the values
    plotted are not left between two labels.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator

    def minor(value: float, _pos: int | None) -> str:
        low, high = sorted(axis.get_view_interval())
        if low <= 0 or high / low >= 10:
            return ""
        leading = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        return short_number(value) if leading in (3, 4, 6, 8) else ""

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: short_number(value)))
    axis.set_minor_formatter(FuncFormatter(minor))


def short_number(value: float) -> str:
    """1500 -> ``1.5k``, 2e6 -> ``2M``, 0.05 -> ``0.05``."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def html_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """An HTML table; cells are escaped text."""
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(title: str, body: str) -> str:
    """A self-contained page: inline CSS, no script, no external resource."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: {INK}; max-width: 1400px; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 18px; margin-top: 32px; }}
h3 {{ font-size: 14px; margin: 20px 0 0; }}
p {{ margin: 2px 0; color: {MUTED}; font-size: 13px; }}
figure {{ margin: 16px 0; overflow-x: auto; }}
figure svg {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 12px; }}
td, th {{ padding: 3px 10px; border-bottom: 1px solid {GRID}; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style></head><body>
{body}
</body></html>
"""
