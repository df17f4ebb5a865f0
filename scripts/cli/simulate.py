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

With ``--network``, the whole-network simulator (``node/sim/``): ``--shards`` x
``--validators`` production nodes (service, driver, relay, ledger) in one process on
the in-memory network with virtual time; network faults only (drop, delay,
duplicate, reorder, partition, commit_loss, crash). One row per seed with ``-v``, a
table of the totals, the failing seeds with the command replaying them; ``--json``
prints the summary and every seed as JSON instead.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import click

from consensus.sim.network import NETWORK_FAULTS
from consensus.sim.simulator import SimConfig, Simulation
from sharding.simulation import FAULT_KINDS, MultiShardSimulation
from sharding.simulation_world import MultiSimConfig

if TYPE_CHECKING:
    from node.sim.network import NetworkSimResult

NETWORK_TXS = 40  # client transactions per seed of --network


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


def run_network(seeds: int, start: int, shards: int, validators: int, txs: int, soak: int,
                faults: tuple[str, ...] | None, verbose: bool, as_json: bool) -> None:
    """``--network``: every seed on the whole-network simulator; exit 1 if one fails."""
    # Imported here: the node's modules (libp2p ids, aiohttp) cost seconds to load.
    from node.sim.network import NetworkSimConfig, run_network_seed

    base = NetworkSimConfig()
    results: list[NetworkSimResult] = []
    wall = time.perf_counter()
    for seed in range(start, start + seeds):
        result = run_network_seed(seed, shards=shards, validators=validators, txs=txs * soak,
                                  fault_ms=base.fault_ms * soak, faults=faults)
        if soak > 1:
            result.repro += f" --soak {soak}"
        results.append(result)
        if not as_json and (verbose or not result.ok):
            click.echo(result.describe())
            if not result.ok and result.log_tail:
                click.echo("  last warnings:\n    " + "\n    ".join(result.log_tail[-10:]))
    summary = network_summary(results, time.perf_counter() - wall)
    if as_json:
        rows = [{"seed": r.seed, "ok": r.ok, "heights": list(r.heights), "blocks": r.blocks,
                 "txs": r.txs, "receipts": r.receipts, "view_changes": r.view_changes,
                 "sim_ms": r.sim_ms, "wall_s": round(r.wall_s, 3), "faults": dict(r.faults),
                 "trace": r.trace, "violations": r.violations, "repro": r.repro}
                for r in results]
        click.echo(json.dumps({**summary, "runs": rows}, indent=2))
    else:
        for key in ("seeds", "failed", "blocks", "commits", "txs", "receipts", "view_changes",
                    "sim_s", "wall_s", "seeds_per_min", "faults"):
            click.echo(f"{key:>14}: {summary[key]}")
        for r in results:
            if not r.ok:
                click.echo(f"{'replay':>14}: {r.repro}")
    if summary["failed"]:
        raise SystemExit(1)


def network_summary(results: Sequence[NetworkSimResult], wall_s: float) -> dict[str, object]:
    faults: Counter[str] = Counter()
    for r in results:
        faults.update(r.faults)
    return {
        "seeds": len(results),
        "failed": [r.seed for r in results if not r.ok],
        "blocks": sum(r.blocks for r in results),
        "commits": sum(r.commits for r in results),
        "txs": sum(r.txs for r in results),
        "receipts": sum(r.receipts for r in results),
        "view_changes": sum(r.view_changes for r in results),
        "sim_s": round(sum(r.sim_ms for r in results) / 1000, 1),
        "wall_s": round(wall_s, 2),
        "seeds_per_min": round(60 * len(results) / wall_s, 1) if wall_s else None,
        "faults": dict(sorted(faults.items())),
    }


@click.command("simulate")
@click.option("--seeds", type=int, default=100, show_default=True, help="How many seeds.")
@click.option("--start", type=int, default=0, show_default=True, help="First seed.")
@click.option("--shards", type=click.IntRange(1, 16), default=1, show_default=True,
              help="1: the PBFT simulator of one shard; N >= 2: N shards with cross-shard "
                   "receipts.")
@click.option("--network", is_flag=True,
              help="The whole-network simulator: --shards x --validators production nodes "
                   f"in one process (faults: {', '.join(NETWORK_FAULTS)}).")
@click.option("--replicas", "--validators", "replicas", type=int, default=4,
              show_default=True, help="n = 3f+1 per shard.")
@click.option("--txs", type=int, default=NETWORK_TXS, show_default=True,
              help="--network: client transactions per seed.")
@click.option("--json", "as_json", is_flag=True,
              help="--network: print the summary and every seed as JSON.")
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
    network: bool,
    replicas: int,
    txs: int,
    as_json: bool,
    soak: int,
    real_signatures: bool,
    faults: str | None,
    byzantine: str | None,
    verbose: bool,
    json_out: Path | None,
) -> None:
    """Drive the real PBFT replicas (and, with --shards N, the real ledgers of N shards)
    through seeded faults; check safety, conservation and liveness."""
    if network:
        if byzantine or real_signatures:
            raise click.UsageError("--network runs honest production nodes with Ed25519: "
                                   "no --byzantine, no --real-signatures")
        try:
            run_network(seeds, start, shards, replicas, txs, soak, _names(faults), verbose,
                        as_json)
        except ValueError as exc:  # an unknown fault kind
            raise click.UsageError(str(exc)) from None
        return
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
