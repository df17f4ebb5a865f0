"""The run's report: ``report.json`` fields, ``timeseries.csv``, the final table, and
k6-style thresholds (``p99<1000ms``, ``rejected<1%``, ``finality.p99<2.5s``,
``tps>500``, ``lost==0``).

``tps_committed`` is the transactions committed over the span from the first
submission to the last commit; ``tps_commit_rate`` the rate while commits happened
(``stats.commit_rate``: not diluted by the latency); ``duration_s`` is the span of the
sending phase.
"""

from __future__ import annotations

import csv
import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.cli.load.stats import commit_rate, summarize
from scripts.cli.load.tracker import hop_latencies

if TYPE_CHECKING:  # without importing aiohttp for the pure parts
    from scripts.cli.load.engine import Engine

HASHES_LISTED_MAX = 20


def build_report(engine: Engine, *, settings: Mapping[str, Any], cpu_s: float,
                 signing_cpu_s: float | None = None) -> dict[str, Any]:
    """``cpu_s``: this process's CPU during the run; ``signing_cpu_s``: the signing
    workers' during the run (default: all the signer has used, for a signer made for
    this one run)."""
    tracker, state, network = engine.tracker, engine.state, engine.network
    records = [r for r in tracker.records.values() if r.submitted_s is not None]
    counts = tracker.counts()
    commit_ms = [1000 * (r.committed_s - r.submitted_s) for r in records
                 if r.committed_s is not None and r.submitted_s is not None]
    finality_ms = [1000 * (r.finalized_s - r.submitted_s) for r in records
                   if r.hops_expected and r.finalized_s is not None and r.submitted_s is not None]
    first = min((r.submitted_s for r in records if r.submitted_s is not None), default=0.0)
    last = max((r.committed_s for r in records if r.committed_s is not None), default=first)
    span = max(1e-9, last - first)
    duration = state.send_done_s or 0.0
    by_shard = {}
    for shard in range(network.num_shards):
        mine = [r for r in records if r.shard == shard]
        by_shard[str(shard)] = {
            "sent": len(mine), "committed": sum(bool(r.commits) or r.late is not None
                                                for r in mine),
            "latency_ms": {"commit": summarize(1000 * (r.committed_s - r.submitted_s)
                                               for r in mine if r.committed_s is not None
                                               and r.submitted_s is not None)},
        }
    hops = {name: summarize(values) for name, values in hop_latencies(records).items()}
    signing_cpu = engine.signer.worker_cpu_s if signing_cpu_s is None else signing_cpu_s
    generator_cpu = cpu_s + signing_cpu
    tps = counts["committed"] / span if counts["committed"] else 0.0
    rate = commit_rate(r.committed_s for r in records if r.committed_s is not None)
    return {
        "sent": counts["sent"], "committed": counts["committed"],
        "finalized": counts["finalized"], "failed": counts["failed"],
        "rejected": {k: v for k, v in sorted(tracker.rejections.items()) if v > 0},
        "rejected_total": counts["rejected"], "in_flight_at_end": counts["in_flight"],
        "cross_shard": counts["cross_shard"],
        "offered": state.offered, "skipped": state.skipped,
        "errors": dict(sorted(state.errors.items())), "retries": state.retries,
        "busy_backoffs": state.busy_backoffs, "resubmitted": state.resubmitted,
        "nonce_resyncs": engine.nonces.resyncs,
        "duration_s": round(duration, 3),
        "tps_offered": round(state.offered / duration, 1) if duration else 0.0,
        "tps_committed": round(tps, 1),
        "tps_commit_rate": None if rate is None else round(rate, 1),
        "latency_ms": {"commit": summarize(commit_ms), "finality": summarize(finality_ms),
                       "finality_hops": hops},
        "by_shard": by_shard,
        "markers": list(state.markers),
        "generator": {
            "cpu_s": round(generator_cpu, 2),
            "signing_cpu_s": round(signing_cpu, 2),
            "sign_workers": engine.signer.workers,
            "cpu_share_of_one_core": round(generator_cpu / max(1e-9, state.ended_s or 1), 3),
            "cpu_share_per_1000_tps": round(generator_cpu / max(1e-9, state.ended_s or 1)
                                            / max(1e-9, tps / 1000), 3) if tps else None,
        },
        "network": {"chain_id": network.chain_id, "shards": network.num_shards,
                    "source": network.source,
                    "nodes": {n.name: n.url for n in network.nodes}},
        "settings": dict(settings),
    }


def add_audit(report: dict[str, Any], engine: Engine, conservation: Mapping[str, Any] | None,
              quiescence: Mapping[str, Any] | None, problem: str | None) -> None:
    """The end-of-run audit: conservation (``scripts.cli.audit`` report, None when it could
    not run) and exactly-once over every transaction sent."""
    once = engine.tracker.exactly_once()
    assets = {row["asset"]: {k: row[k] for k in ("balances", "reserves", "in_flight",
                                                   "supply", "ok")}
              for row in (conservation or {}).get("assets", [])}
    ok = (conservation is not None and bool(conservation.get("ok"))
          and not once["lost"] and not once["duplicated"] and problem is None)
    report["audit"] = {
        "ok": ok, "lost": len(once["lost"]), "duplicated": len(once["duplicated"]),
        "lost_hashes": once["lost"][:HASHES_LISTED_MAX],
        "duplicated_hashes": once["duplicated"][:HASHES_LISTED_MAX],
        "rejected_then_committed": once["rejected_then_committed"],
        "conservation_ok": None if conservation is None else bool(conservation.get("ok")),
        "assets": assets,
        "problems": [*(conservation or {}).get("problems", []),
                     *([problem] if problem else [])],
        "quiescence": dict(quiescence) if quiescence else None,
    }


# ---------------------------------------------------------------------------
# Thresholds

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "<": operator.lt, ">": operator.gt}
_LATENCY = re.compile(r"(?:(commit|finality)\.)?(p50|p90|p99|p999|max|mean)")
_COUNTS = ("rejected", "failed", "lost", "duplicated", "errors")


@dataclass(frozen=True, slots=True)
class Threshold:
    text: str
    metric: str
    op: str
    value: float
    percent: bool

    @classmethod
    def parse(cls, text: str) -> Threshold:
        found = re.fullmatch(r"\s*([a-z0-9_.]+)\s*(<=|>=|==|<|>)\s*([0-9]*\.?[0-9]+)\s*"
                             r"(ms|s|%)?\s*", text)
        if not found:
            raise ValueError(f"threshold {text!r}: expected METRIC<VALUE, like p99<1000ms "
                             "or rejected<1%")
        metric, op, number, unit = found.groups()
        value = float(number)
        if _LATENCY.fullmatch(metric):
            if unit == "%":
                raise ValueError(f"threshold {text!r}: a latency is in ms or s")
            value *= 1000 if unit == "s" else 1
        elif metric in _COUNTS:
            if unit in ("ms", "s"):
                raise ValueError(f"threshold {text!r}: {metric} is a count or a percentage")
        elif metric != "tps":
            raise ValueError(f"threshold {text!r}: unknown metric {metric!r} (p50..p999, max, "
                             f"commit.pNN, finality.pNN, tps, {', '.join(_COUNTS)})")
        return cls(text.strip(), metric, op, value, unit == "%")

    def measure(self, report: Mapping[str, Any]) -> float | None:
        latency = _LATENCY.fullmatch(self.metric)
        if latency:
            kind = latency.group(1) or "commit"
            found = report["latency_ms"][kind].get(latency.group(2))
            return None if found is None else float(found)
        if self.metric == "tps":
            return float(report["tps_committed"])
        if self.metric == "rejected":
            count = float(report["rejected_total"])
        elif self.metric == "errors":
            count = float(sum(report["errors"].values()))
        elif self.metric in ("lost", "duplicated"):
            count = float(report.get("audit", {}).get(self.metric, 0))
        else:
            count = float(report[self.metric])
        if self.percent:
            return 100 * count / max(1, int(report["sent"]))
        return count

    def check(self, report: Mapping[str, Any]) -> dict[str, Any]:
        measured = self.measure(report)
        ok = measured is not None and _OPS[self.op](measured, self.value)
        return {"threshold": self.text, "measured": measured, "ok": ok}


def check_thresholds(thresholds: Sequence[Threshold], report: dict[str, Any]) -> bool:
    report["thresholds"] = [t.check(report) for t in thresholds]
    return all(row["ok"] for row in report["thresholds"])


# ---------------------------------------------------------------------------
# Files and the final table


def write_timeseries(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="") as out:
        if not rows:
            out.write("t_s\n")
            return
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def write_report_dir(directory: Path, report: Mapping[str, Any],
                     rows: Sequence[Mapping[str, Any]]) -> list[Path]:
    from scripts.cli.load.report_html import render_report_html

    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "report.json", directory / "timeseries.csv",
               directory / "report.html"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    write_timeseries(written[1], rows)
    written[2].write_text(render_report_html(report, rows))
    return written


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_summary(report: Mapping[str, Any], console: Any) -> None:
    from rich.table import Table

    totals = Table(title=f"shardnet load: {report['network']['chain_id']}, "
                         f"{report['network']['shards']} shards, {report['duration_s']:.1f} s")
    totals.add_column("measure")
    totals.add_column("value", justify="right")
    for name in ("offered", "sent", "committed", "finalized", "failed", "rejected_total",
                 "cross_shard", "in_flight_at_end", "skipped", "retries", "busy_backoffs",
                 "resubmitted", "nonce_resyncs", "tps_offered", "tps_committed"):
        totals.add_row(name.replace("_", " "), _fmt(report[name]))
    gen = report["generator"]
    totals.add_row("generator CPU (share of a core)",
                   f"{gen['cpu_s']:.1f} s ({gen['cpu_share_of_one_core']:.0%})")
    console.print(totals)
    latency = Table(title="latency (ms, from submission)")
    latency.add_column("")
    for column in ("count", "p50", "p90", "p99", "p999", "max"):
        latency.add_column(column, justify="right")
    rows = [("submit -> commit", report["latency_ms"]["commit"]),
            ("submit -> finalized (cross-shard)", report["latency_ms"]["finality"])]
    rows += [(f"  hop: {name.replace('_', ' ')}", summary)
             for name, summary in report["latency_ms"]["finality_hops"].items()
             if summary["count"]]
    for label, summary in rows:
        latency.add_row(label, *(_fmt(summary[c]) for c in ("count", "p50", "p90", "p99",
                                                              "p999", "max")))
    console.print(latency)
    problems = {f"rejected: {k}": v for k, v in report["rejected"].items()}
    problems.update({f"error: {k}": v for k, v in report["errors"].items()})
    if problems:
        table = Table(title="rejections and request errors, by reason")
        table.add_column("reason")
        table.add_column("count", justify="right")
        for reason, count in sorted(problems.items()):
            table.add_row(reason, _fmt(count))
        console.print(table)
    audit = report.get("audit")
    if audit is not None:
        verdict = "[green]ok[/]" if audit["ok"] else "[red]FAILED[/]"
        console.print(f"audit: {verdict}: {audit['lost']} lost, {audit['duplicated']} "
                      f"duplicated, conservation "
                      f"{'ok' if audit['conservation_ok'] else 'NOT ok'}"
                      + "".join(f"\n  [red]{p}[/]" for p in audit["problems"]))
    for row in report.get("thresholds", []):
        mark = "[green]pass[/]" if row["ok"] else "[red]FAIL[/]"
        console.print(f"threshold {row['threshold']}: {mark} (measured {_fmt(row['measured'])})")
