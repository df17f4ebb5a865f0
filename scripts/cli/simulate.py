"""``shardnet simulate``: run the deterministic fault simulators over many seeds.

With ``--shards 1`` (the default) the PBFT simulator of one shard
(``consensus/sim/simulator.py``); with ``--shards N`` (N >= 2) the multi-shard simulator
(``sharding/simulation.py``): N shards of real replicas and ledgers, cross-shard
transfers and swaps, receipts relayed and pulled between shards, byzantine primaries
proposing fabricated, duplicated or skipped receipts. Each seed draws its own faults,
runs a fault phase and a healed phase, and is checked for safety, conservation,
exactly-once receipts and finality. A failing seed is printed with the command
reproducing it; the exit status is 1 when any seed fails. ``--soak N`` makes every
run N times longer (fault phase and client load), for long soak runs.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import click

from consensus.sim.simulator import SimConfig, Simulation
from sharding.simulation import FAULT_KINDS, MultiShardSimulation
from sharding.simulation_world import MultiSimConfig


class Result(Protocol):
    """What both simulators report about a seed."""

    seed: int
    ok: bool
    repro: str
    faults: Counter[str]
    dropped: Counter[str]
    commits: int
    view_changes: int
    max_view: int
    sim_ms: int
    messages: int

    def describe(self) -> str: ...


def run_one(seed: int, replicas: int, real: bool, soak: int, shards: int,
            faults: tuple[str, ...] | None, byzantine: tuple[str, ...]) -> Result:
    if shards <= 1:
        base = SimConfig()
        config = SimConfig(seed=seed, replicas=replicas, real_signatures=real,
                           fault_ms=base.fault_ms * soak, ops=base.ops * soak, faults=faults)
        result: Result = Simulation(config).run()
        if faults is not None:
            result.repro += f" --faults {','.join(faults) or 'none'}"
    else:
        multi = MultiSimConfig()
        result = MultiShardSimulation(MultiSimConfig(
            seed=seed, shards=shards, replicas=replicas, real_signatures=real,
            fault_ms=multi.fault_ms * soak, txs=multi.txs * soak, faults=faults,
            byzantine=byzantine)).run()
    if soak > 1:
        result.repro += f" --soak {soak}"
    return result


def run_many(
    seeds: int, start: int, replicas: int, real: bool, soak: int, verbose: bool,
    shards: int = 1, faults: tuple[str, ...] | None = None, byzantine: tuple[str, ...] = (),
) -> tuple[list[Result], float, float]:
    results = []
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(start, start + seeds):
        result = run_one(seed, replicas, real, soak, shards, faults, byzantine)
        results.append(result)
        if verbose or not result.ok:
            click.echo(result.describe())
    return results, time.perf_counter() - wall, time.process_time() - cpu


def summarize(results: Sequence[Result], wall_s: float, cpu_s: float) -> dict[str, object]:
    faults: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for r in results:
        faults.update(r.faults)
        dropped.update(r.dropped)
    summary: dict[str, object] = {
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
    for name in ("refused", "bad_refusals", "relay"):  # the multi-shard simulator's
        counts: Counter[str] = Counter()
        for r in results:
            counts.update(getattr(r, name, {}))
        if counts:
            summary[name] = dict(sorted(counts.items()))
    for name in ("receipts_applied", "txs"):
        if results and hasattr(results[0], name):
            summary[name] = sum(getattr(r, name) for r in results)
    return summary


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return () if text == "none" else tuple(n for n in text.split(",") if n)


@click.command("simulate")
@click.option("--seeds", type=int, default=100, show_default=True, help="How many seeds.")
@click.option("--start", type=int, default=0, show_default=True, help="First seed.")
@click.option("--shards", type=click.IntRange(1, 16), default=1, show_default=True,
              help="1: the PBFT simulator of one shard; N >= 2: N shards with cross-shard "
                   "receipts.")
@click.option("--replicas", type=int, default=4, show_default=True, help="n = 3f+1 per shard.")
@click.option("--soak", type=int, default=1, show_default=True, help="Make runs N times longer.")
@click.option("--real-signatures", is_flag=True, help="Ed25519 instead of the fast test signer.")
@click.option("--faults", default=None, metavar="KIND,...",
              help="Fault kinds for every seed instead of the seed's draw ('none': no "
                   f"faults). Multi-shard kinds: {', '.join(FAULT_KINDS)}.")
@click.option("--byzantine", default=None, metavar="SHARD/INDEX/MODE,...",
              help="Multi-shard: place byzantine replicas (MODE primary or forger), "
                   "e.g. 0/0/primary.")
@click.option("--verbose", "-v", is_flag=True, help="Print every seed, not only failures.")
@click.option("--json-out", type=click.Path(path_type=Path), default=None)
def simulate(
    seeds: int,
    start: int,
    shards: int,
    replicas: int,
    soak: int,
    real_signatures: bool,
    faults: str | None,
    byzantine: str | None,
    verbose: bool,
    json_out: Path | None,
) -> None:
    """Drive the real PBFT replicas (and, with --shards N, the real ledgers of N shards)
    through seeded faults; check safety, conservation and liveness."""
    if byzantine and shards <= 1:
        raise click.UsageError("--byzantine needs --shards 2 or more")
    try:
        results, wall_s, cpu_s = run_many(seeds, start, replicas, real_signatures, soak,
                                          verbose, shards, _names(faults),
                                          _names(byzantine) or ())
    except ValueError as exc:  # a fault kind or a placement the simulator refuses
        raise click.UsageError(str(exc)) from None
    summary = summarize(results, wall_s, cpu_s)
    keys = ["seeds", "failed", "wall_s", "seeds_per_min", "commits", "view_changes"]
    if shards > 1:
        keys += ["txs", "receipts_applied"]
    for key in keys:
        click.echo(f"{key:>14}: {summary[key]}")
    for key in ("faults", "bad_refusals"):
        if key in summary:
            click.echo(f"{key:>14}: {summary[key]}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2) + "\n")
    if summary["failed"]:
        raise SystemExit(1)
