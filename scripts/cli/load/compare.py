"""``shardnet load compare A B``: two ``report.json`` files side by side.

Every scalar figure of a report (sent, committed, finalized, rejected in total and by
reason, duration, TPS, the audit's lost and duplicated) and the commit and finality
latency percentiles, with B - A and (B - A) / A. A and B are ``report.json`` files or
the folders ``--report DIR`` wrote. A missing or malformed file is one line, exit 1.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click

REPORT_FILE = "report.json"
REQUIRED = ("sent", "committed", "latency_ms")
SCALARS = ("sent", "committed", "finalized", "failed", "rejected", "duration_s",
           "tps_offered", "tps_committed")
LATENCIES = ("commit", "finality")
PERCENTILES = ("p50", "p90", "p99", "p999", "max")
AUDIT = ("lost", "duplicated")


class NotAReport(click.ClickException):
    """A or B cannot be read as a load report: one line for the user."""


def read_report(path: Path) -> dict[str, Any]:
    """The report at ``path`` (a report.json, or a folder holding one)."""
    file = path / REPORT_FILE if path.is_dir() else path
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise NotAReport(f"{file}: no such file") from None
    except OSError as exc:
        raise NotAReport(f"{file}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NotAReport(f"{file}: not a load report (not JSON: {exc})") from None
    if not isinstance(doc, dict):
        raise NotAReport(f"{file}: not a load report (not a JSON object)")
    missing = [key for key in REQUIRED if key not in doc]
    if missing or not isinstance(doc["latency_ms"], dict):
        raise NotAReport(f"{file}: not a load report (no {', '.join(missing or ['latency_ms'])})")
    return doc


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else value


def _rejected_total(report: dict[str, Any]) -> Any:
    if "rejected_total" in report:
        return report["rejected_total"]
    rejected = report.get("rejected")
    if isinstance(rejected, dict):
        return sum(v for v in rejected.values() if _number(v) is not None)
    return rejected


def _reasons(report: dict[str, Any]) -> list[str]:
    rejected = report.get("rejected")
    return sorted(rejected) if isinstance(rejected, dict) else []


def figures(report: dict[str, Any], reasons: list[str] | None = None) -> dict[str, Any]:
    """Metric name -> value (a number, None, or for ``audit.ok`` a boolean), in table order;
    a row per rejection reason of ``reasons`` (default: the report's own)."""
    out: dict[str, Any] = {}
    for key in SCALARS:
        if key == "rejected":
            out["rejected"] = _rejected_total(report)
            by_reason = report.get("rejected")
            by_reason = by_reason if isinstance(by_reason, dict) else {}
            for reason in _reasons(report) if reasons is None else reasons:
                out[f"rejected.{reason}"] = by_reason.get(reason)
        else:
            out[key] = report.get(key)
    latency = report.get("latency_ms") or {}
    for kind in LATENCIES:
        found = latency.get(kind)
        summary = found if isinstance(found, dict) else {}
        for p in PERCENTILES:
            out[f"latency_ms.{kind}.{p}"] = summary.get(p)
    audit = report.get("audit")
    if isinstance(audit, dict):
        out["audit.ok"] = audit.get("ok")
        for key in AUDIT:
            out[f"audit.{key}"] = audit.get(key)
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Metric -> {a, b, diff (B - A), rel_pct (100 x (B - A) / A, None when A is 0)};
    the metrics of both, A's order first, a metric one lacks is None there."""
    reasons = sorted({*_reasons(a), *_reasons(b)})
    fa, fb = figures(a, reasons), figures(b, reasons)
    rows: dict[str, dict[str, Any]] = {}
    for name in [*fa, *(k for k in fb if k not in fa)]:
        va, vb = fa.get(name), fb.get(name)
        if name.startswith("rejected."):  # a reason one run never saw: 0 there
            va, vb = va or 0, vb or 0
        na, nb = _number(va), _number(vb)
        diff = rel = None
        if na is not None and nb is not None:
            diff = round(nb - na, 6)
            rel = round(100 * (nb - na) / na, 2) if na else None
        rows[name] = {"a": va, "b": vb, "diff": diff, "rel_pct": rel}
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 or value == int(value) else f"{value:,.3g}"
    return str(value)


def _fmt_diff(value: Any) -> str:
    if value is None:
        return "-"
    return ("+" if value > 0 else "") + _fmt(value)


def _fmt_rel(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def print_table(rows: dict[str, dict[str, Any]], a_name: str, b_name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 110))
    table = Table(title="shardnet load compare")
    table.add_column("metric", no_wrap=True)
    for column in (f"A: {a_name}", f"B: {b_name}", "B - A", "B / A - 1"):
        table.add_column(column, justify="right", overflow="fold")
    for name, row in rows.items():
        table.add_row(name, _fmt(row["a"]), _fmt(row["b"]), _fmt_diff(row["diff"]),
                      _fmt_rel(row["rel_pct"]))
    console.print(table)


@click.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_command(a: Path, b: Path, as_json: bool) -> None:
    """Two load reports side by side (report.json files or --report folders), with the
    absolute and relative differences."""
    report_a, report_b = read_report(a), read_report(b)
    rows = compare(report_a, report_b)
    if as_json:
        sys.stdout.write(json.dumps({"a": str(a), "b": str(b), "metrics": rows}, indent=2)
                         + "\n")
    else:
        print_table(rows, str(a), str(b))
