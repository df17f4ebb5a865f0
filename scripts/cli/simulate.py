"""``shardnet simulate``: run the deterministic fault simulators over many seeds.

With ``--shards 1`` (the default) the PBFT simulator of one shard
(``consensus/sim/simulator.py``): real replicas, the fast test signer (or
``--real-signatures``), network faults, crashes and byzantine replicas drawn per seed.

With ``--shards N`` (N >= 2), or ``--network``, the whole-network simulator
(``node/sim/``): ``--shards`` x ``--validators`` production nodes (service, driver,
relay, ledger) in one process on the in-memory network with virtual time,
cross-shard transfers and swaps, receipts relayed and pulled between shards. Each
seed draws its network faults and may draw byzantine nodes (a primary proposing
fabricated, duplicated or skipped receipts; a relayer forging bundles), or
``--faults`` names them; ``--byzantine SHARD/INDEX=MODE`` places a node running one
of the modes of ``node/faults/byzantine.py`` for the whole run, ``--link-fault`` gives
a node's own links a delay, loss or partition for a window, ``--crash`` stops a node
for a while. Each seed is checked for agreement, exactly-once receipts and
transactions, conservation, the nodes' own audit and finality.

A failing seed is printed with the command replaying it; the exit status is 1 when
any seed fails, 2 for a usage error. ``--soak N`` makes every run N times longer
(fault phase and client load). One row per seed with ``-v``, a table of the totals;
``--json`` prints the summary and every seed as JSON instead; ``--out`` also
writes the summary to a file.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from consensus.sim.simulator import SimConfig, SimResult, Simulation
from scripts.cli.params import out_option

if TYPE_CHECKING:
    from node.sim.faults import LinkFault
    from node.sim.network import NetworkSimResult

NETWORK_TXS = 40  # client transactions per seed of the whole-network simulator
# Spelled out here so --help needs none of the node's modules (seconds to import);
# tests/cli/test_simulate_network.py keeps them equal to the node's.
NETWORK_FAULT_KINDS = ("drop", "delay", "duplicate", "reorder", "partition", "commit_loss",
                       "crash", "byzantine_primary", "forged_bundles")
BYZANTINE_MODES = ("equivocate", "withhold_votes", "wrong_roots", "forge_receipts",
                   "duplicate_receipts", "tamper_sync", "fabricate_inbound", "censor")


def run_many(seeds: int, start: int, replicas: int, real: bool, soak: int, verbose: bool,
             faults: tuple[str, ...] | None = None, pipeline_depth: int = 1,
             censor: bool = False) -> tuple[list[SimResult], float, float]:
    """The single-shard PBFT simulator over ``seeds`` seeds."""
    results = []
    wall, cpu = time.perf_counter(), time.process_time()
    base = SimConfig()
    for seed in range(start, start + seeds):
        config = SimConfig(seed=seed, replicas=replicas, real_signatures=real,
                           fault_ms=base.fault_ms * soak, ops=base.ops * soak, faults=faults,
                           pipeline_depth=pipeline_depth, censor=censor)
        result = Simulation(config).run()
        if faults is not None:
            result.repro += f" --faults {','.join(faults) or 'none'}"
        if soak > 1:
            result.repro += f" --soak {soak}"
        results.append(result)
        if verbose or not result.ok:
            click.echo(result.describe())
    return results, time.perf_counter() - wall, time.process_time() - cpu


def summarize(results: Sequence[SimResult], wall_s: float, cpu_s: float) -> dict[str, object]:
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
        **({"censored": censored_summary(results)} if any(
            r.censored_op is not None for r in results) else {}),
    }


def censored_summary(results: Sequence[SimResult]) -> dict[str, object]:
    """``--censor`` runs: how many censored ops committed, how many in a later view
    than the censor's (after a view change), and how long each waited."""
    runs = [r for r in results if r.censored_op is not None]
    waits = sorted(r.censored_commit_ms - r.censored_arrival_ms for r in runs
                   if r.censored_commit_ms is not None and r.censored_arrival_ms is not None)
    return {
        "runs": len(runs),
        "committed": len(waits),
        "after_view_change": sum(1 for r in runs if r.censored_commit_view),
        "wait_ms_median": waits[len(waits) // 2] if waits else None,
        "wait_ms_p99": waits[min(len(waits) - 1, len(waits) * 99 // 100)] if waits else None,
        "wait_ms_max": waits[-1] if waits else None,
    }


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return () if text == "none" else tuple(n for n in text.split(",") if n)


def _write(path: Path | None, summary: dict[str, object]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n")


# ---------------------------------------------------------------------------
# The whole-network simulator


def parse_network_options(byzantine: Sequence[str], link_faults: Sequence[str],
                          crashes: Sequence[str]) -> dict[str, Any]:
    """``--byzantine``, ``--link-fault`` and ``--crash`` as ``NetworkSimConfig``
    fields; ``ValueError`` naming what is wrong."""
    from node.sim.faults import parse_byzantine, parse_link_fault, parse_node

    placed = tuple(parse_byzantine(text) for text in byzantine)
    for _, _, mode in placed:
        if mode not in BYZANTINE_MODES:
            raise ValueError(f"unknown byzantine mode {mode!r}; known: "
                             f"{', '.join(BYZANTINE_MODES)}")
    links: tuple[LinkFault, ...] = tuple(parse_link_fault(text) for text in link_faults)
    down = []
    for text in crashes:
        where, _, timing = text.partition(":")
        at_ms, _, down_ms = timing.partition(":")
        if not (at_ms.isdigit() and down_ms.isdigit()):
            raise ValueError(f"{text!r}: a crash is SHARD/INDEX:AT_MS:DOWN_MS, e.g. 0/1:500:1500")
        down.append((*parse_node(where), int(at_ms), int(down_ms)))
    return {"byzantine": placed, "link_faults": links, "crashes": tuple(down)}


def run_network(seeds: int, start: int, shards: int, validators: int, txs: int, soak: int,
                faults: tuple[str, ...] | None, options: dict[str, Any], verbose: bool,
                as_json: bool, json_out: Path | None) -> None:
    """Every seed on the whole-network simulator; exit 1 if one fails."""
    # Imported here: the node's modules (libp2p ids, aiohttp) cost seconds to load.
    from node.sim.network import NetworkSimConfig, NetworkSimulation

    base = NetworkSimConfig()
    configs = [NetworkSimConfig(seed=seed, shards=shards, validators=validators,
                                txs=txs * soak, fault_ms=base.fault_ms * soak, faults=faults,
                                **options)
               for seed in range(start, start + seeds)]
    simulations = [NetworkSimulation(configs[0])] if configs else []  # refuse before running
    results: list[NetworkSimResult] = []
    wall = time.perf_counter()
    for i, config in enumerate(configs):
        result = (simulations[0] if i == 0 else NetworkSimulation(config)).run()
        if soak > 1:
            result.repro += f" --soak {soak}"
        results.append(result)
        if not as_json and (verbose or not result.ok):
            click.echo(result.describe())
            if not result.ok and result.log_tail:
                click.echo("  last warnings:\n    " + "\n    ".join(result.log_tail[-10:]))
    summary = network_summary(results, time.perf_counter() - wall)
    _write(json_out, summary)
    if as_json:
        rows = [{"seed": r.seed, "ok": r.ok, "heights": list(r.heights), "blocks": r.blocks,
                 "txs": r.txs, "receipts": r.receipts, "view_changes": r.view_changes,
                 "max_view": r.max_view, "sim_ms": r.sim_ms, "wall_s": round(r.wall_s, 3),
                 "faults": dict(r.faults), "byzantine_acts": dict(r.byzantine_acts),
                 "bad_refusals": dict(r.bad_refusals), "trace": r.trace,
                 "violations": r.violations, "repro": r.repro}
                for r in results]
        click.echo(json.dumps({**summary, "runs": rows}, indent=2))
    else:
        for key in ("seeds", "failed", "blocks", "commits", "txs", "receipts", "view_changes",
                    "sim_s", "wall_s", "seeds_per_min", "faults", "byzantine_acts",
                    "bad_refusals", "refused", "relay"):
            if key in ("seeds", "failed") or summary[key]:
                click.echo(f"{key:>14}: {summary[key]}")
        for r in results:
            if not r.ok:
                click.echo(f"{'replay':>14}: {r.repro}")
    if summary["failed"]:
        raise SystemExit(1)


def network_summary(results: Sequence[NetworkSimResult], wall_s: float) -> dict[str, object]:
    totals: dict[str, Counter[str]] = {name: Counter() for name in (
        "faults", "byzantine_acts", "invalid_sent", "bad_refusals", "refused", "relay")}
    for r in results:
        for name, counts in totals.items():
            counts.update(getattr(r, name))
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
        **{name: dict(sorted(counts.items())) for name, counts in totals.items()},
    }


@click.command("simulate")
@click.option("--seeds", type=click.IntRange(0), default=100, show_default=True,
              help="How many seeds.")
@click.option("--start", type=int, default=0, show_default=True, help="First seed.")
@click.option("--shards", type=click.IntRange(1, 16), default=1, show_default=True,
              help="1: the PBFT simulator of one shard; N >= 2: the whole-network "
                   "simulator (production nodes, cross-shard receipts).")
@click.option("--network", is_flag=True,
              help="The whole-network simulator also for --shards 1.")
@click.option("--replicas", "--validators", "replicas", type=click.IntRange(1), default=4,
              show_default=True, help="n = 3f+1 per shard.")
@click.option("--txs", type=click.IntRange(0), default=NETWORK_TXS, show_default=True,
              help="Network: client transactions per seed.")
@click.option("--json", "as_json", is_flag=True,
              help="Network: print the summary and every seed as JSON.")
@click.option("--soak", type=click.IntRange(1), default=1, show_default=True,
              help="Make runs N times longer.")
@click.option("--pipeline-depth", type=click.IntRange(1, 4), default=1, show_default=True,
              help="Heights in agreement at once (ReplicaConfig.pipeline_depth; the network "
                   "simulator: the nodes' consensus.pipeline_depth; "
                   "docs/CONSENSUS.md, Pipelining).")
@click.option("--real-signatures", is_flag=True,
              help="One shard: Ed25519 instead of the fast test signer (the network "
                   "simulator always signs with Ed25519).")
@click.option("--faults", default=None, metavar="KIND,...",
              help="Fault kinds for every seed instead of the seed's draw ('none': no "
                   f"faults). Network kinds: {', '.join(NETWORK_FAULT_KINDS)}.")
@click.option("--byzantine", multiple=True, metavar="SHARD/INDEX=MODE",
              help="Network: a node running a byzantine mode for the whole run "
                   f"(repeatable); modes: {', '.join(BYZANTINE_MODES)}.")
@click.option("--link-fault", "link_faults", multiple=True,
              metavar="SHARD/INDEX:AT_MS:DURATION_MS:RULE,...",
              help="Network: a node's links delayed, lossy or cut for a window "
                   "(repeatable); RULE: partition, delay=MS, loss=P, peers=S/I+S/I.")
@click.option("--crash", "crashes", multiple=True, metavar="SHARD/INDEX:AT_MS:DOWN_MS",
              help="Network: a node crashes at AT_MS and restarts DOWN_MS later (repeatable).")
@click.option("--censor", is_flag=True,
              help="One shard: view 0's primary censors one op per seed (leaves it out of "
                   "its blocks); the summary's 'censored' row says when each committed.")
@click.option("--verbose", "-v", is_flag=True, help="Print every seed, not only failures.")
@out_option("Also write the summary (JSON) to this file.", name="json_out")
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
    pipeline_depth: int,
    faults: str | None,
    byzantine: tuple[str, ...],
    link_faults: tuple[str, ...],
    crashes: tuple[str, ...],
    censor: bool,
    verbose: bool,
    json_out: Path | None,
) -> None:
    """Drive the real PBFT replicas (one shard), or whole networks of production nodes
    (--shards N), through seeded faults; check safety, conservation and liveness."""
    if network or shards > 1:
        if censor:
            raise click.UsageError("--censor: the one-shard PBFT simulator only (drop "
                                   "--shards/--network)")
        if real_signatures:
            raise click.UsageError("--real-signatures: the network simulator always signs "
                                   "with Ed25519")
        try:
            options = parse_network_options(byzantine, link_faults, crashes)
            if pipeline_depth > 1:  # the nodes' consensus.pipeline_depth
                options["pipeline_depth"] = pipeline_depth
            run_network(seeds, start, shards, replicas, txs, soak, _names(faults), options,
                        verbose, as_json, json_out)
        except ValueError as exc:  # an unknown kind or mode, a malformed or crowded placement
            raise click.UsageError(str(exc)) from None
        return
    if byzantine or link_faults or crashes:
        raise click.UsageError("--byzantine, --link-fault and --crash need the network "
                               "simulator (--shards 2 or more, or --network)")
    try:
        results, wall_s, cpu_s = run_many(seeds, start, replicas, real_signatures, soak,
                                          verbose, _names(faults), pipeline_depth, censor)
    except ValueError as exc:  # a fault kind the simulator does not know
        raise click.UsageError(str(exc)) from None
    summary = summarize(results, wall_s, cpu_s)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        for key in ("seeds", "failed", "wall_s", "seeds_per_min", "commits", "view_changes",
                    "faults", "censored"):
            if key in summary:
                click.echo(f"{key:>14}: {summary[key]}")
    _write(json_out, summary)
    if summary["failed"]:
        raise SystemExit(1)
