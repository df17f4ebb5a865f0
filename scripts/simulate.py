"""``shardnet simulate``: run the deterministic PBFT fault simulator over many seeds.

Each seed draws its own faults (drop, delay, duplicate, reorder, partition, crash +
restart, a byzantine replica), runs a fault phase and a healed phase, and is checked
for safety and convergence. A failing seed is printed with the command reproducing it;
the exit status is 1 when any seed fails. ``--soak N`` makes every run N times longer
(fault phase and client load), for long soak runs.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import click

from consensus.simulator import SimConfig, SimResult, Simulation


def run_many(
    seeds: int, start: int, replicas: int, real: bool, soak: int, verbose: bool
) -> tuple[list[SimResult], float, float]:
    base = SimConfig()
    results = []
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(start, start + seeds):
        config = SimConfig(
            seed=seed,
            replicas=replicas,
            real_signatures=real,
            fault_ms=base.fault_ms * soak,
            ops=base.ops * soak,
        )
        result = Simulation(config).run()
        if soak > 1:
            result.repro += f" --soak {soak}"
        results.append(result)
        if verbose or not result.ok:
            click.echo(result.describe())
    return results, time.perf_counter() - wall, time.process_time() - cpu


def summarize(results: list[SimResult], wall_s: float, cpu_s: float) -> dict[str, object]:
    faults: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for r in results:
        faults.update(r.faults)
        dropped.update(r.dropped)
    return {
        "seeds": len(results),
        "failed": [r.seed for r in results if not r.ok],
        "wall_s": round(wall_s, 2),
        "cpu_s": round(cpu_s, 2),
        "seeds_per_min": round(60 * len(results) / wall_s, 1) if wall_s else None,
        "commits": sum(r.commits for r in results),
        "view_changes": sum(r.view_changes for r in results),
        "max_view": max((r.max_view for r in results), default=0),
        "sim_s": round(sum(r.sim_ms for r in results) / 1000, 1),
        "messages": sum(r.messages for r in results),
        "faults": dict(sorted(faults.items())),
        "dropped": dict(sorted(dropped.items())),
    }


@click.command("simulate")
@click.option("--seeds", type=int, default=100, show_default=True, help="How many seeds.")
@click.option("--start", type=int, default=0, show_default=True, help="First seed.")
@click.option("--replicas", type=int, default=4, show_default=True, help="n = 3f+1.")
@click.option("--soak", type=int, default=1, show_default=True, help="Make runs N times longer.")
@click.option("--real-signatures", is_flag=True, help="Ed25519 instead of the fast test signer.")
@click.option("--verbose", "-v", is_flag=True, help="Print every seed, not only failures.")
@click.option("--json-out", type=click.Path(path_type=Path), default=None)
def simulate(
    seeds: int,
    start: int,
    replicas: int,
    soak: int,
    real_signatures: bool,
    verbose: bool,
    json_out: Path | None,
) -> None:
    """Drive the real PBFT replicas through seeded faults; check safety and liveness."""
    results, wall_s, cpu_s = run_many(seeds, start, replicas, real_signatures, soak, verbose)
    summary = summarize(results, wall_s, cpu_s)
    for key in ("seeds", "failed", "wall_s", "seeds_per_min", "commits", "view_changes"):
        click.echo(f"{key:>14}: {summary[key]}")
    click.echo(f"{'faults':>14}: {summary['faults']}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2) + "\n")
    if summary["failed"]:
        raise SystemExit(1)
