"""``report.html``: the report as one self-contained page (``scripts/cli/charts.py``)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from scripts.cli.charts import Marker, Section, Series, html_page, line_chart, table_html

MARKER_LABELS = {"node_down": "down", "node_up": "back up", "view_change": "view change"}


def marker_label(marker: Mapping[str, Any]) -> str:
    """What a timeline marker says: a node event, or a chaos fault (``shardnet chaos``:
    kind ``fault`` when applied, ``fault_end`` when undone, with its action)."""
    kind = str(marker["kind"])
    if kind in ("fault", "fault_end"):
        what = str(marker.get("action", "fault")) + (f" {marker['mode']}" if marker.get("mode")
                                                     else "")
        return f"fault: {what}" if kind == "fault" else f"fault healed: {what}"
    return MARKER_LABELS.get(kind, kind)


def _series(rows: Sequence[Mapping[str, Any]], key: str, name: str) -> Series:
    return Series(name, [(float(r["t_s"]), r.get(key)) for r in rows])


def render_report_html(report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    markers = [Marker(float(m["t_s"]), f"{m['node']} {marker_label(m)}")
               for m in report.get("markers", [])]
    shards = int(report["network"]["shards"])
    sections = [Section("Summary", _summary(report))]
    sections.append(Section("Throughput", line_chart(
        "offered, sent, committed and finalized tx/s", [
            _series(rows, "offered_tps", "offered"), _series(rows, "sent_tps", "sent"),
            _series(rows, "committed_tps", "committed"),
            _series(rows, "finalized_tps", "finalized")],
        y_title="tx/s", markers=markers)))
    sections.append(Section("Latency over time", line_chart(
        "latency of the transactions committed / finalized in each second", [
            _series(rows, "commit_p50_ms", "commit p50"),
            _series(rows, "commit_p99_ms", "commit p99"),
            _series(rows, "finality_p50_ms", "cross-shard finality p50"),
            _series(rows, "finality_p99_ms", "cross-shard finality p99")],
        y_title="ms", markers=markers)))
    sections.append(Section("Per shard", line_chart(
        "committed tx/s per shard (by the sender's shard)",
        [_series(rows, f"shard{s}_committed_tps", f"shard {s}") for s in range(shards)],
        y_title="tx/s", markers=markers) + line_chart(
        "commit p99 per shard",
        [_series(rows, f"shard{s}_commit_p99_ms", f"shard {s}") for s in range(shards)],
        y_title="ms", markers=markers)))
    sections.append(Section("Latency percentiles", _latency_table(report)))
    problems = [[f"rejected: {k}", v] for k, v in report["rejected"].items()]
    problems += [[f"request error: {k}", v] for k, v in report["errors"].items()]
    if problems:
        sections.append(Section("Rejections and errors, by reason",
                                table_html(["reason", "count"], problems)))
    if report.get("markers"):
        sections.append(Section("Events seen on the nodes", table_html(
            ["t (s)", "node", "event"],
            [[m["t_s"], m["node"], marker_label(m)] for m in report["markers"]])))
    if report.get("audit") is not None:
        sections.append(Section("End-of-run audit", _audit(report["audit"])))
    network = report["network"]
    subtitle = (f"chain {network['chain_id']}, {shards} shards, {len(network['nodes'])} nodes "
                f"({network['source']}); settings: " + ", ".join(
                    f"{k}={v}" for k, v in report.get("settings", {}).items()
                    if v not in (None, "", [], ())))
    return html_page("shardnet load report", sections, subtitle=subtitle)


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "-"
    return '<span class="ok">ok</span>' if ok else '<span class="bad">FAILED</span>'


def _summary(report: Mapping[str, Any]) -> str:
    rows = [[name.replace("_", " "), report[name]] for name in (
        "offered", "sent", "committed", "finalized", "failed", "rejected_total", "cross_shard",
        "in_flight_at_end", "duration_s", "tps_offered", "tps_committed")]
    generator = report["generator"]
    rows.append(["generator CPU (s, share of one core)",
                 f"{generator['cpu_s']} s ({generator['cpu_share_of_one_core']:.0%})"])
    body = table_html(["measure", "value"], rows)
    checks = report.get("thresholds", [])
    if checks:
        body += "<p>Thresholds: " + ", ".join(
            f"{html.escape(c['threshold'])} {_verdict(c['ok'])}" for c in checks) + "</p>"
    audit = report.get("audit")
    if audit is not None:
        body += f"<p>Audit: {_verdict(audit['ok'])}</p>"
    return body


def _latency_table(report: Mapping[str, Any]) -> str:
    columns = ("count", "p50", "p90", "p99", "p999", "max")
    latency = report["latency_ms"]
    rows = [["submit -> commit", *(latency["commit"][c] for c in columns)],
            ["submit -> finalized (cross-shard)", *(latency["finality"][c] for c in columns)]]
    rows += [[f"hop: {name.replace('_', ' ')}", *(summary[c] for c in columns)]
             for name, summary in latency["finality_hops"].items() if summary["count"]]
    for shard, info in report["by_shard"].items():
        rows.append([f"shard {shard}: submit -> commit",
                     *(info["latency_ms"]["commit"][c] for c in columns)])
    return table_html(["ms", *columns], rows)


def _audit(audit: Mapping[str, Any]) -> str:
    body = (f"<p>{_verdict(audit['ok'])}: {audit['lost']} lost, {audit['duplicated']} "
            f"duplicated; conservation {_verdict(audit['conservation_ok'])}</p>")
    if audit["assets"]:
        body += table_html(["asset", "balances", "reserves", "in flight", "supply", "ok"], [
            [name, a["balances"], a["reserves"], a["in_flight"], a["supply"],
             "yes" if a["ok"] else "NO"] for name, a in audit["assets"].items()])
    for problem in audit["problems"]:
        body += f'<p class="bad">{html.escape(str(problem))}</p>'
    return body
