"""Charts as inline SVG, and the self-contained HTML page that holds them.

One small module for every page shardnet writes (the load report, the chaos
reports, the dashboard): pygal draws the SVG; this module fixes the look and adds
event markers (view changes, node restarts) as dashed vertical lines. Pages load
nothing from the network: no script, no font, no stylesheet outside the file.

    svg = line_chart("TPS", [Series("offered", [(0, 500), (1, 520)])],
                     markers=[Marker(12.5, "shard0-node0 down")], y_title="tx/s")
    html = html_page("shardnet load", [Section("Throughput", svg)])
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pygal
from pygal.style import Style

Point = tuple[float, float | None]

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf")
MARKER_COLOUR = "#999999"


def _style(colours: Sequence[str]) -> Style:
    return Style(
        background="#ffffff", plot_background="#ffffff", foreground="#333333",
        foreground_strong="#111111", foreground_subtle="#bbbbbb", opacity="1",
        colors=tuple(colours), font_family="DejaVu Sans, Helvetica, Arial, sans-serif",
        title_font_size=15, label_font_size=11, major_label_font_size=11,
        legend_font_size=11)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: Sequence[Point]


@dataclass(frozen=True, slots=True)
class Marker:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    body_html: str  # an SVG from line_chart, a table, a paragraph


def line_chart(title: str, series: Sequence[Series], *, x_title: str = "time (s)",
               y_title: str = "", markers: Sequence[Marker] = (), width: int = 920,
               height: int = 320) -> str:
    """An XY line chart as an inline ``<svg>`` element. ``None`` values break a line;
    markers are dashed vertical lines over the whole height (one legend entry)."""
    values = [y for s in series for _, y in s.points if y is not None]
    top = max(values, default=1.0) or 1.0
    colours = [COLOURS[i % len(COLOURS)] for i in range(len(series))]
    chart = pygal.XY(
        style=_style([*colours, MARKER_COLOUR]), width=width, height=height, title=title,
        x_title=x_title, y_title=y_title, js=[], show_dots=False, allow_interruptions=True,
        legend_at_bottom=True,
        truncate_legend=40, range=(0, top * 1.05), include_x_axis=True,
        show_x_guides=False, margin=12, explicit_size=True,
        print_values=False, stroke_style={"width": 1.6},
    )
    for one in series:
        chart.add(one.name, [(float(x), None if y is None else float(y))
                             for x, y in one.points])
    if markers:
        lines: list[Point] = []
        for marker in markers:
            if lines:
                lines.append((marker.x, None))
            lines += [(marker.x, 0.0), (marker.x, top * 1.05)]
        chart.add("events", lines, stroke_style={"width": 1, "dasharray": "4,3"},
                  show_dots=False)
    svg: str = chart.render(is_unicode=True, disable_xml_declaration=True)
    # pygal inlines its config for its tooltip script, which we do not load: drop it.
    return _SCRIPT.sub("", svg)


_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL)


def table_html(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


PAGE_CSS = """
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 980px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.subtitle { color: #666; margin-bottom: 16px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.ok { color: #2ca02c; font-weight: bold; } .bad { color: #d62728; font-weight: bold; }
svg.pygal-chart { display: block; margin: 8px 0; }
"""


def html_page(title: str, sections: Sequence[Section], *, subtitle: str = "") -> str:
    """A complete HTML document: inline CSS and SVG, nothing fetched."""
    parts = [f"<h2>{html.escape(s.title)}</h2>\n{s.body_html}" for s in sections]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{PAGE_CSS}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n<div class=\"subtitle\">{html.escape(subtitle)}</div>\n"
        + "\n".join(parts) + "\n</body></html>\n"
    )
