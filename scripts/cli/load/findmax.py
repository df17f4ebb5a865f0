"""``--find-max``: step the offered rate up (x1.3) until a step is not sustainable (or
down, when the first one is not), then try once between the best good and the lowest
bad rate; the highest sustainable TPS is the committed TPS of the best good step.

A step is sustainable when its p99 submit-to-commit latency and its rejection rate
stay under the limits, every arrival was sent (no generator backlog skipped), and
the shards' commit rate keeps up with the offered rate (``keep_up`` share;
``tps_commit_rate``, the rate while commits happened: the committed TPS over first
submission to last commit read a 3 s step with 0.5 s latency as 86 % of a rate the
network kept up with). Each step lasts at least long enough to send
``STEP_SAMPLES_MIN`` transactions (``step_seconds``), so its p99 is a percentile and
not the one slowest transaction (a 3 s step at 28 tx/s had 84). Each step is a run
of its own: it drains before the next one starts, so a backlog does not leak into
the next step's figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scripts.cli.load.engine import Engine
from scripts.cli.load.report import build_report

STEP_FACTOR = 1.3
STEPS_MAX = 14
RATE_MIN_TPS = 10.0
STEP_SAMPLES_MIN = 200  # transactions a step sends at least: its p99 is the 198th of 200


def step_seconds(rate: float, step_s: float) -> float:
    """How long a step at ``rate`` runs: ``step_s``, or longer at low rates so that it
    sends ``STEP_SAMPLES_MIN`` transactions."""
    return max(step_s, STEP_SAMPLES_MIN / rate) if rate > 0 else step_s


@dataclass(frozen=True, slots=True)
class Limits:
    p99_ms: float = 1000.0
    rejected_pct: float = 1.0
    keep_up: float = 0.9


def judge(report: dict[str, Any], limits: Limits) -> str:
    """"" when the step is sustainable, else why not."""
    p99 = report["latency_ms"]["commit"]["p99"]
    sent = max(1, int(report["sent"]))
    if report["skipped"] or report["sent"] < 0.95 * report["offered"]:
        return f"generator backlog: sent {report['sent']} of {report['offered']} offered"
    if p99 is None or p99 > limits.p99_ms:
        return f"p99 {p99} ms > {limits.p99_ms:g} ms"
    if 100 * report["rejected_total"] / sent > limits.rejected_pct:
        return f"rejected {100 * report['rejected_total'] / sent:.1f}% > {limits.rejected_pct}%"
    rate = report.get("tps_commit_rate")
    rate = report["tps_committed"] if rate is None else rate
    if rate < limits.keep_up * report["tps_offered"]:
        return (f"committed at {rate} tx/s < {limits.keep_up:.0%} of "
                f"{report['tps_offered']} offered")
    if report["in_flight_at_end"]:
        return f"{report['in_flight_at_end']} still in flight after the drain"
    return ""


def run_step(engine: Engine) -> dict[str, Any]:
    # The steps share one signer: each step reports the CPU it used itself, this
    # process's and the signing workers', not the signer's total since it started.
    cpu_started, signing_started = time.process_time(), engine.signer.worker_cpu_s
    asyncio.run(engine.run())
    report = build_report(engine, settings={}, cpu_s=time.process_time() - cpu_started,
                          signing_cpu_s=engine.signer.worker_cpu_s - signing_started)
    once = engine.tracker.exactly_once()
    report["lost"], report["duplicated"] = len(once["lost"]), len(once["duplicated"])
    return report


def find_max(make_engine: Callable[[float, int], Engine], start_tps: float, limits: Limits,
             *, on_step: Callable[[dict[str, Any]], None] | None = None,
             steps_max: int = STEPS_MAX) -> dict[str, Any]:
    """``make_engine(rate, step)`` builds the run of one step."""
    steps: list[dict[str, Any]] = []
    good: dict[str, Any] | None = None  # the best sustainable step
    bad_rate: float | None = None  # the lowest rate found not sustainable
    refined = False
    rate = start_tps
    while len(steps) < steps_max and rate >= RATE_MIN_TPS:
        report = run_step(make_engine(rate, len(steps)))
        verdict = judge(report, limits)
        row = {"rate": round(rate, 1), "tps_committed": report["tps_committed"],
               "tps_commit_rate": report.get("tps_commit_rate"),
               "p99_ms": report["latency_ms"]["commit"]["p99"],
               "p50_ms": report["latency_ms"]["commit"]["p50"],
               "rejected": report["rejected_total"], "sent": report["sent"],
               "lost": report["lost"], "duplicated": report["duplicated"],
               "ok": not verdict, "why": verdict}
        steps.append(row)
        if on_step is not None:
            on_step(row)
        if verdict:
            bad_rate = rate if bad_rate is None else min(bad_rate, rate)
        elif good is None or row["tps_committed"] > good["tps_committed"]:
            good = row
        if refined:
            break
        if good is None:
            rate /= STEP_FACTOR  # even the start is too much: step down
        elif bad_rate is None:
            rate *= STEP_FACTOR
        else:
            rate = (good["rate"] + bad_rate) / 2  # once, between the best good and lowest bad
            refined = True
    return {"max_tps": good["tps_committed"] if good else 0.0,
            "max_rate": good["rate"] if good else 0.0, "steps": steps,
            "limits": {"p99_ms": limits.p99_ms, "rejected_pct": limits.rejected_pct,
                       "keep_up": limits.keep_up}}
