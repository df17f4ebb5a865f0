"""The dashboard's charts, drawn on the server as inline SVG by ``scripts/cli/charts.py``
(pygal; the load and chaos reports use the same), one line per shard."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from scripts.cli.charts import Point, Series, line_chart
from scripts.dashboard.aggregator import ShardPoint
from scripts.dashboard.series import downsample

CHART_POINTS = 120  # per line: pygal draws 600 points five times slower, no clearer
SPAN_MIN_S = 60.0  # a young dashboard's charts still span a minute (clean axis labels)
WIDTH, HEIGHT = 470, 250

Field = Callable[[ShardPoint], float | int | None]

# (title, y axis, [(line label, field)]): one line per shard and field.
CHARTS: tuple[tuple[str, str, tuple[tuple[str, Field], ...]], ...] = (
    ("height", "blocks", (("", lambda p: p.height),)),
    ("committed tx/s", "tx/s", (("", lambda p: p.tps),)),
    ("commit latency (mempool to commit)", "ms", (
        ("mean", lambda p: p.latency_mean_ms), ("p99", lambda p: p.latency_p99_ms))),
    ("view changes (started, most of a node)", "view changes", (
        ("", lambda p: p.view_changes),)),
    ("mempool (fullest node)", "txs", (("", lambda p: p.mempool),)),
    ("peers (fewest of a node)", "peers", (("", lambda p: p.peers_min),)),
)


def charts_html(series: Mapping[int, Sequence[tuple[float, ShardPoint]]], now: float
                ) -> str:
    """Every chart as a ``<div class="chart">`` holding one ``<svg>``; x is seconds
    relative to ``now`` (0 is now)."""
    parts = []
    for title, y_title, fields in CHARTS:
        lines = []
        for shard, points in sorted(series.items()):
            shown = downsample(points, CHART_POINTS) if len(points) > 1 else list(points)
            for label, field in fields:
                name = f"shard {shard}" + (f" {label}" if label else "")
                values: list[Point] = [(round(t - now, 1), _number(field(p)))
                                       for t, p in shown]
                if not values or values[0][0] > -SPAN_MIN_S:
                    values.insert(0, (-SPAN_MIN_S, None))  # a gap: stretches the x axis
                lines.append(Series(name, values))
        svg = line_chart(title, lines, x_title="seconds (0 = now)", y_title=y_title,
                         width=WIDTH, height=HEIGHT)
        parts.append(f'<div class="chart">{svg}</div>')
    return "\n".join(parts)


def _number(value: float | int | None) -> float | None:
    return None if value is None else float(value)
