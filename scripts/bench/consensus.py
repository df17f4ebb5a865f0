"""``shardnet bench consensus``: what the PBFT core costs and how fast it simulates.

1. CPU time per consensus message handled (``Replica.step`` on a received message,
   decode + signature check + state transition), real Ed25519 and the fast test
   signer, fault-free n = 4 and n = 7; ledger execution is outside ``step``.
2. Simulator throughput: seeds per minute with faults, faults injected by kind, view
   changes observed (fast signer and Ed25519).
3. Simulated commits per simulated second for n = 4 and n = 7 at several batch sizes
   (all client ops offered at time 0, 1-8 ms links, 20 ms block interval).

Prints tables and writes JSON. CPU figures are medians over repeats.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from consensus.events import Event, MessageReceived
from consensus.sim.simulator import SimConfig, Simulation
from scripts.bench.common import machine_facts, report, result_table
from scripts.cli.params import out_option

COST_COLUMNS = ("replicas", "signatures", "messages", "median_us", "mean_us", "p90_us",
                "messages_per_commit")
SEED_COLUMNS = ("replicas", "signatures", "seeds", "failed", "wall_s", "seeds_per_min",
                "view_changes", "commits_checked")
THROUGHPUT_COLUMNS = ("replicas", "batch_ops", "ops", "heights", "sim_s", "commits_per_sim_s",
                      "ops_per_sim_s")


def message_cost(replicas: int, real: bool, seed: int) -> dict[str, Any]:
    """Median CPU microseconds per received message over one fault-free run."""
    sim = Simulation(
        SimConfig(seed=seed, replicas=replicas, real_signatures=real, faults=(), ops=120)
    )
    samples: list[float] = []
    for node in sim.nodes:
        replica = node.replica
        original = replica.step

        def timed(event: Event, _step: Any = original) -> Any:
            if not isinstance(event, MessageReceived):
                return _step(event)
            started = time.process_time_ns()
            actions = _step(event)
            samples.append((time.process_time_ns() - started) / 1000)
            return actions

        replica.step = timed  # type: ignore[method-assign]
    result = sim.run()
    return {
        "replicas": replicas,
        "signatures": "ed25519" if real else "fast",
        "messages": len(samples),
        "median_us": statistics.median(samples),
        "mean_us": statistics.fmean(samples),
        "p90_us": statistics.quantiles(samples, n=10)[-1],
        "messages_per_commit": round(len(samples) / max(1, result.height), 1),
        "ok": result.ok,
    }


def seeds_per_minute(seeds: int, real: bool, replicas: int) -> dict[str, Any]:
    faults: Counter[str] = Counter()
    view_changes = failed = commits = 0
    wall = time.perf_counter()
    for seed in range(seeds):
        result = Simulation(SimConfig(seed=seed, replicas=replicas, real_signatures=real)).run()
        faults.update(result.faults)
        view_changes += result.view_changes
        commits += result.commits
        failed += not result.ok
    wall_s = time.perf_counter() - wall
    return {
        "replicas": replicas,
        "signatures": "ed25519" if real else "fast",
        "seeds": seeds,
        "failed": failed,
        "wall_s": round(wall_s, 2),
        "seeds_per_min": round(60 * seeds / wall_s, 1),
        "view_changes": view_changes,
        "commits_checked": commits,
        "faults": dict(sorted(faults.items())),
    }


def simulated_throughput(replicas: int, batch: int, ops: int) -> dict[str, Any]:
    config = SimConfig(
        seed=1, replicas=replicas, faults=(), ops=ops, batch_ops_max=batch, load_ms=1
    )
    result = Simulation(config).run()
    sim_s = result.last_commit_ms / 1000
    return {
        "replicas": replicas,
        "batch_ops": batch,
        "ops": ops,
        "heights": result.height,
        "sim_s": round(sim_s, 3),
        "commits_per_sim_s": round(result.height / sim_s, 1) if sim_s else None,
        "ops_per_sim_s": round(ops / sim_s, 1) if sim_s else None,
        "ok": result.ok,
    }


def table(title: str, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Table:
    return result_table(title, columns, ([_fmt(row[c]) for c in columns] for row in rows))


def _fmt(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def message_costs(repeats: int) -> list[dict[str, Any]]:
    """One row per (n, signer): the first run's counts, the medians of the runs' CPU."""
    rows = []
    for replicas in (4, 7):
        for real in (True, False):
            runs = [message_cost(replicas, real, seed) for seed in range(repeats)]
            row = dict(runs[0])
            for key in ("median_us", "mean_us", "p90_us"):
                row[key] = statistics.median(r[key] for r in runs)
            rows.append(row)
    return rows


@click.command("consensus")
@click.option("--repeats", type=int, default=3, show_default=True)
@click.option("--seeds", type=int, default=200, show_default=True, help="Fast-signer seeds.")
@click.option("--real-seeds", type=int, default=40, show_default=True)
@out_option("JSON output file.", name="json_out", default=Path("bench-results/consensus.json"))
def bench_consensus(repeats: int, seeds: int, real_seeds: int, json_out: Path) -> None:
    """CPU per PBFT message, simulator seeds/min, simulated commits/s by n and batch."""
    console = Console()
    cost_rows = message_costs(repeats)
    console.print(table("CPU per received consensus message (Replica.step, median of runs)",
                        cost_rows, COST_COLUMNS))
    seed_rows = [
        seeds_per_minute(seeds, False, 4),
        seeds_per_minute(max(1, seeds // 4), False, 7),
        seeds_per_minute(real_seeds, True, 4),
    ]
    console.print(table("Fault simulation (fault phase 3 s + healed phase, simulated)",
                        seed_rows, SEED_COLUMNS))
    for row in seed_rows:
        console.print(f"faults, n={row['replicas']} {row['signatures']}: {row['faults']}")
    throughput_rows = [
        simulated_throughput(replicas, batch, 100 * batch)
        for replicas in (4, 7)
        for batch in (1, 4, 16, 64)
    ]
    throughput = table("Simulated commits per simulated second (no faults, 1-8 ms links)",
                       throughput_rows, THROUGHPUT_COLUMNS)
    data = {"machine": machine_facts(), "message_cost": cost_rows, "simulation": seed_rows,
            "throughput": throughput_rows}
    report(console, [throughput], json_out, data)
