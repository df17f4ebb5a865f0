"""``shardnet project --validate``: the model against this machine's testnets, same run.

Measures the CPU the machine gives 5 and 9 busy processes right now (their CPU time
over 2 s of wall time, before and after the benchmarks), runs ``bench node``'s load
(1 x 4, pre-signed transfers submitted at once) and ``bench e2e``'s find-max (2 x 4,
the load generator signing, 0% and 20% cross-shard, p99 <= 1 s; 3 times, each on a
fresh testnet, the median compared and every run and the spread recorded) on testnets
of local processes from ``--base-port``, and compares each with the shared-machine
model (``model.project_shared``): every node and the loader on the CPU available
(``judge`` says which measure of it for which run). The error is (predicted -
measured) / measured. A 2 x 4 prediction the model calls ill-conditioned (its measured
p99 floor near the limit) is reported with its range, not gated.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec

from scripts.bench.common import cores, local_testnet, machine_line
from scripts.cli.testnet.generate import TestnetSpec
from scripts.project.costs import Costs, decode_costs
from scripts.project.model import Config, project_shared, shared_state
from scripts.project.network import NetworkModel
from scripts.project.structure import Structure, measure_structure

TOLERANCE = 0.25
OVERLOAD_PER_CORE = 2.0  # load average per core above which 2 x 4 is not gated
Log = Callable[[str], None] | None


def _spin(seconds: float) -> float:
    started, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        pass
    return time.process_time() - cpu


def effective_cores(processes: int, seconds: float = 2.0) -> float:
    """Cores' worth of CPU ``processes`` busy processes get together now: what a testnet
    of that many busy processes can expect while other users take their share."""
    with concurrent.futures.ProcessPoolExecutor(processes) as pool:
        return min(float(cores()), sum(pool.map(_spin, [seconds] * processes)) / seconds)


def probe(log: Log) -> dict[str, float]:
    """Effective cores for 1 x 4 and 2 x 4 (each node and the loader busy)."""
    found = {"1x4": effective_cores(5), "2x4": effective_cores(9)}
    if log:
        log(f"load average {os.getloadavg()[0]:.2f}; CPU available of {cores()} cores: "
            f"{found['1x4']:.2f} to 5 busy processes, {found['2x4']:.2f} to 9")
    return found


def measure_node(base_port: int, runs: int, txs: int, log: Log) -> dict[str, Any]:
    """``bench node``'s runs (its loader and parameters) on a 1 x 4 testnet at our port."""
    from scripts.bench.node import run_load, sign_load
    from scripts.project.calibrate import node_pids, tree_cpu_s

    raws, hashes = sign_load(txs, 500, 1)
    rows = []
    for run in range(runs):
        spec = TestnetSpec(shards=1, validators=4, accounts=1500, base_port=base_port)
        with local_testnet(spec) as (root, nodes):
            pids = node_pids(nodes, root)
            # the loader runs in this process (the nodes are its children: not its tree)
            cpu = sum(tree_cpu_s(pid) for pid in pids) + time.process_time()
            wall = time.perf_counter()
            row = asyncio.run(run_load([n.api_url for n in nodes], raws, hashes, 500, 120.0))
            # what the machine gave the testnet and the loader over the run
            row["cores_received"] = round(
                (sum(tree_cpu_s(pid) for pid in pids) + time.process_time() - cpu)
                / (time.perf_counter() - wall), 3)
        rows.append(row)
        if log:
            log(f"bench node run {run}: {row.get('tps')} TPS, p50 {row.get('latency_p50_ms')} "
                f"ms, committed {row.get('committed')} of {txs}")
    good = [r for r in rows if r.get("committed") == txs]
    if not good:
        raise RuntimeError("bench node: no run committed every transaction")
    return {"runs": rows, "tps_median": statistics.median(r["tps"] for r in good),
            "cores_received_median": statistics.median(r["cores_received"] for r in good),
            "latency_p50_ms_median": statistics.median(r["latency_p50_ms"] for r in good)}


E2E_RUNS = 3  # the 2 x 4 find-max, each on a fresh testnet: the median is compared
E2E_PORT_STRIDE = 20  # run k's testnet from base_port + k x this (a 2 x 4 takes 16)


def measure_e2e(base_port: int, quick: bool, log: Log, runs: int = E2E_RUNS,
                ) -> dict[str, Any]:
    """``runs`` x ``measure_e2e_once``, each on a fresh 2 x 4 testnet, and what is
    compared: per cross-shard share the median of the runs' maxima (``max_tps``), every
    run's (``max_tps_runs``) and their spread ((highest - lowest) / median); the medians
    of the CPU received, the generator's CPU per transaction and the half-load
    latencies. A find-max bound by a 1 s p99 on 8 processes sharing 2 cores ends at
    whichever step first meets a scheduling stall: one run is one draw."""
    rows = []
    for run in range(runs):
        row = measure_e2e_once(base_port + E2E_PORT_STRIDE * run, quick, log)
        rows.append(row)
        if log:
            log(f"bench e2e run {run}: max " + ", ".join(
                f"{float(x):.0%} cross {tps:,.0f} tx/s" for x, tps in row["max_tps"].items())
                + f" on {row['cores_received']:.2f} cores received")
    return aggregate_e2e(rows)


def aggregate_e2e(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs' medians and spread (see ``measure_e2e``); the half-load step's figures
    from the median run; pure."""
    shares = list(rows[0]["max_tps"])
    maxima = {x: [float(r["max_tps"][x]) for r in rows] for x in shares}
    median = {x: statistics.median(v) for x, v in maxima.items()}

    def middle(key: str) -> float | None:
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        return statistics.median(values) if values else None

    # the half-load step is at half the run's own 0 % maximum: its rate and latencies
    # are the run's whose maximum is the median (the lower middle of an even count), so
    # they stay one step's figures
    ordered = sorted(rows, key=lambda r: float(r["max_tps"][shares[0]]))
    half = ordered[(len(ordered) - 1) // 2]
    return {"max_tps": median, "max_tps_runs": maxima,
            # None: the median is 0 and a run passed a step (no finite ratio)
            "spread": {x: round((max(v) - min(v)) / median[x], 3) if median[x] else
                       (0.0 if max(v) == 0 else None) for x, v in maxima.items()},
            "runs": rows,
            "half_load_tps": half.get("half_load_tps"),
            "generator_us_per_tx": middle("generator_us_per_tx"),
            "generator_signing_us_per_tx": middle("generator_signing_us_per_tx"),
            "cores_received": middle("cores_received"),
            "commit_p50_ms": half.get("commit_p50_ms"), "commit_p99_ms": half.get("commit_p99_ms"),
            "step_s": rows[0]["step_s"]}


def measure_e2e_once(base_port: int, quick: bool, log: Log) -> dict[str, Any]:
    """``bench e2e``'s measurement (its testnet, find-max and half-load step) on a 2 x 4
    testnet at our port, with the CPU the machine gave the nodes and the generator
    over the find-max (both are this process's children: its whole tree); every step's
    rate, p50, p99 and verdict (the measured p99 curve)."""
    from rich.console import Console

    from scripts.bench.e2e import VALIDATORS, measure_network
    from scripts.cli.load.findmax import Limits
    from scripts.cli.load.targets import network_from_testnet
    from scripts.project.calibrate import node_pids, tree_cpu_s

    console = Console(quiet=log is None)
    step_s, drain_s, start = (3.0, 10.0, 500.0) if quick else (8.0, 20.0, 500.0)
    spec = TestnetSpec(shards=2, validators=VALIDATORS, accounts=1000, base_port=base_port)
    with local_testnet(spec) as (root, nodes):
        pids = node_pids(nodes, root)
        cpu, wall = own_tree_cpu_s(), time.perf_counter()
        nodes_cpu = sum(tree_cpu_s(pid) for pid in pids)
        result, half, step = measure_network(network_from_testnet(root), console, start,
                                             Limits(p99_ms=1000.0), step_s, drain_s)
        total = own_tree_cpu_s() - cpu
        generator_cpu = total - (sum(tree_cpu_s(pid) for pid in pids) - nodes_cpu)
        received = total / (time.perf_counter() - wall)
    # the load generator's CPU per transaction over every step at the find-max's rates:
    # this process (engine: HTTP, event streams) and its signing workers, i.e. the whole
    # tree but the nodes. The warm-up sends start / 2 tx/s for 2 s. (Its step reports
    # count the signing workers only, cumulated since the signer started: not a
    # per-step figure.)
    sent = int(start) + sum(int(row["sent"]) for found in result["find_max"].values()
                       for row in found["steps"]) + int(step.get("sent") or 0)
    if log:
        log(f"2x4 load generator: {generator_cpu:.1f} CPU s for {sent} txs: "
            f"{1e6 * generator_cpu / max(1, sent):.0f} µs per tx")
    return {"max_tps": result["max_tps"], "half_load_tps": half,
            "steps": {x: [{k: row[k] for k in ("rate", "tps_committed", "p50_ms", "p99_ms",
                                                "ok")} for row in found["steps"]]
                      for x, found in result["find_max"].items()},
            "generator_us_per_tx": round(1e6 * generator_cpu / max(1, sent), 1),
            # of which its signing workers (their counter runs over the signer's whole
            # life: the last step's report holds every step's signing)
            "generator_signing_us_per_tx": round(
                1e6 * float(step.get("generator", {}).get("signing_cpu_s") or 0)
                / max(1, sent), 1),
            "cores_received": round(received, 3),
            "commit_p50_ms": step["latency_ms"]["commit"]["p50"],
            "commit_p99_ms": step["latency_ms"]["commit"]["p99"],
            "step_s": step_s}


def own_tree_cpu_s() -> float:
    """This process's CPU, its live descendants' and its reaped children's (the load
    generator's signing workers have exited by the time the find-max returns)."""
    import psutil

    from scripts.project.calibrate import tree_cpu_s

    me = psutil.Process()
    times = me.cpu_times()
    live = sum(tree_cpu_s(child.pid) for child in me.children())
    return float(times.user + times.system + times.children_user + times.children_system
                 + live)


def compare(name: str, predicted: float, measured: float) -> dict[str, Any]:
    """(predicted - measured) / measured; both 0 (nothing sustainable) agree."""
    if measured:
        error = (predicted - measured) / measured
    else:
        error = 0.0 if predicted < 1 else float("inf")
    return {"name": name, "predicted": round(predicted, 1), "measured": round(measured, 1),
            "error": round(error, 3), "ok": abs(error) <= TOLERANCE}


def predictions(costs: Costs, network: NetworkModel, effective: dict[str, float],
                structure: Structure, generator_us: float | None = None) -> dict[str, Any]:
    """The shared-machine model's figures for what ``run_validation`` measures; the
    load generator's CPU per transaction is ``generator_us`` when measured, else a
    signature and an HTTP share."""
    node = project_shared(costs, network, structure, Config(1, 4, effective["1x4"], 0.0),
                          costs.loader_submit_us, saturate=True)
    generator_us = generator_us or costs.sign_us + costs.loader_submit_us
    e2e = {f"{x:g}": project_shared(costs, network, structure,
                                    Config(2, 4, effective["2x4"], x),
                                    generator_us, saturate=False, p99_limit_ms=1000.0)
           for x in (0.0, 0.2)}
    return {"node": node, "e2e": e2e}


def run_validation(costs: Costs | None, network: NetworkModel, base_port: int, quick: bool,
                   log: Log, e2e_runs: int | None = None) -> dict[str, Any]:
    """``costs`` None: calibrate first, in the same run (testnet at ``base_port + 200``).
    ``e2e_runs``: how many 2 x 4 find-max runs (default 3, 1 with ``quick``)."""
    load_before = os.getloadavg()
    cores_before = probe(log)
    if costs is None:
        from scripts.project.calibrate import calibrate

        costs = calibrate(base_port + 200, quick, log or (lambda _: None))
    node = measure_node(base_port, 1 if quick else 3, 6000 if quick else 10_000, log)
    e2e = measure_e2e(base_port + 100, quick, log,
                      e2e_runs if e2e_runs is not None else (1 if quick else E2E_RUNS))
    cores_after = probe(log)
    load_after = os.getloadavg()
    effective = {k: (cores_before[k] + cores_after[k]) / 2 for k in cores_before}
    structure = measure_structure(4, network.block_interval_ms)
    result: dict[str, Any] = {
        "machine": machine_line(), "cores": cores(),
        "effective_cores": {k: round(v, 3) for k, v in effective.items()},
        "effective_cores_before_after": [cores_before, cores_after],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "tolerance": TOLERANCE, "quick": quick, "costs": msgspec.to_builtins(costs),
        "network": msgspec.to_builtins(network),
        "structure": {"commit_delays": structure.commit_delays,
                      "commit_base_ms": structure.commit_base_ms,
                      "finality_delays": structure.finality_delays,
                      "finality_base_ms": structure.finality_base_ms},
        "measured": {"node": node, "e2e": e2e},
    }
    result.update(judge(result))
    return result


def overloaded(recorded: dict[str, Any]) -> bool:
    """Other users kept more runnable work than twice the cores before the runs (the
    1-minute load average then): a p99 limit of 1 s then measures the scheduler more
    than the testnet. The load after is not judged: 8 nodes and the loader on 2 cores
    raise it to ~10 by themselves."""
    limit = OVERLOAD_PER_CORE * float(recorded["cores"])
    return bool(recorded["load_average_before"][0] > limit)


def judge(recorded: dict[str, Any]) -> dict[str, Any]:
    """The model's predictions for a recorded validation (its costs, network, structure,
    available CPU) against what was measured: ``predicted``, ``comparisons`` (gated),
    ``informative``, ``ok``. Pure: a recorded run is judged the same way every time.

    1 x 4 (``bench node`` saturates the machine): on the CPU the run received (nodes'
    process trees and the loader over the run's wall time): the machine is shared, so
    what it gives is an input like the link latency; the check is that the calibrated
    per-transaction, per-block and loader costs add up to the measured throughput.
    2 x 4 (``bench e2e``'s find-max, which pushes past the sustainable rate at every
    search): on the CPU the nodes and the generator received over the find-max (runs
    recorded before that: what 9 busy processes got before and after); compared with
    the median of the find-max runs; gated unless the machine was overloaded or the
    prediction is ill-conditioned (then informative, with the range +-10 % of the p99
    floor gives and whether the measurement is in it).
    """
    costs = decode_costs(json.dumps(recorded["costs"]).encode(), "recorded costs")
    network = msgspec.convert(recorded["network"], type=NetworkModel)
    structure = Structure(**recorded["structure"])
    node, e2e = recorded["measured"]["node"], recorded["measured"]["e2e"]
    available = {"1x4": node["cores_received_median"],
                 "2x4": e2e.get("cores_received", recorded["effective_cores"]["2x4"])}
    predicted = predictions(costs, network, available, structure,
                            e2e.get("generator_us_per_tx"))
    comparisons = [compare("1x4 bench node TPS", predicted["node"].tps, node["tps_median"])]
    runs = len(e2e.get("runs") or [None])
    what = f" (median of {runs})" if runs > 1 else ""
    e2e_rows, ill = [], []
    for x, label in (("0", "0%"), ("0.2", "20%")):
        p = predicted["e2e"][x]
        row = compare(f"2x4 bench e2e max TPS, {label} cross{what}", p.tps, e2e["max_tps"][x])
        if p.floor is not None and p.floor.ms > 0:
            low, high = sorted((p.tps_floor_high, p.tps_floor_low))
            row["floor_range"] = [round(low, 1), round(high, 1)]
            row["in_floor_range"] = low <= float(e2e["max_tps"][x]) <= high
        if p.ill_conditioned:
            row["name"] += (f" (ill-conditioned: {row['floor_range'][0]:,.0f}-"
                            f"{row['floor_range'][1]:,.0f} for the floor +-10 %)")
            ill.append(row)
        else:
            e2e_rows.append(row)
    informative = [
        compare("2x4 commit p50 at half load (ms)",
                predicted["e2e"]["0.2"].commit_ms, float(e2e["commit_p50_ms"] or 0)),
    ]
    twenty = predicted["e2e"]["0.2"]
    if twenty.floor is not None and e2e.get("commit_p99_ms") is not None:
        # the floor, calibrated on the calibration's paced windows, against this run's
        # half-load step (20 % cross-shard at half the measured 0 % maximum: the model's
        # p99 at that same rate)
        at = shared_state(costs, network, structure, twenty.config,
                          e2e.get("generator_us_per_tx") or costs.sign_us
                          + costs.loader_submit_us, float(e2e["half_load_tps"] or 0),
                          floor_ms=twenty.floor.ms)
        informative.append(compare(
            f"2x4 commit p99 at half load ({float(e2e['half_load_tps'] or 0):,.0f} tx/s, "
            "20% cross; ms)", at.p99_ms if math.isfinite(at.p99_ms) else 1e9,
            float(e2e["commit_p99_ms"])))
    if overloaded(recorded):
        informative = [dict(row, name=row["name"] + " (overloaded machine)")
                       for row in e2e_rows + ill] + informative
    else:
        comparisons += e2e_rows
        informative = ill + informative
    return {"available_cores": available,
            "predicted": {"node": _prediction(predicted["node"]),
                          "e2e": {k: _prediction(v) for k, v in predicted["e2e"].items()}},
            "comparisons": comparisons, "informative": informative,
            "ok": all(c["ok"] for c in comparisons)}


def _prediction(p: Any) -> dict[str, Any]:
    return {"tps": round(p.tps, 1), "block_txs": round(p.block_txs, 1),
            "cycle_ms": round(p.cycle_ms, 1), "cpu_us_per_tx": round(p.cpu_us_per_tx, 1),
            "cpu_us_per_cycle": round(p.cpu_us_per_cycle, 1),
            "commit_ms_half_load": round(p.commit_ms, 1),
            "throughput_tps": round(p.throughput_tps, 1), "latency_tps": round(p.latency_tps, 1),
            "binding": p.binding, "costs_from": p.costs_from, "p99_ms": round(p.p99_ms, 1),
            **({} if p.floor is None else {
                "p99_half_load_ms": round(p.p99_half_ms, 1),
                "floor_ms": round(p.floor.ms, 1),
                **({} if p.floor.cross_point is None else {
                    "floor_local_ms": round(p.floor.local_ms, 1),
                    "floor_cross_point": {
                        "rate": p.floor.cross_point[0], "cross": p.floor.cross_point[1],
                        "measured_p99_ms": round(p.floor.cross_point[2], 1),
                        "structural_p99_ms": round(p.floor.cross_point[3], 1)}}),
                "floor_points": [{"rate": rate, "measured_p99_ms": round(measured, 1),
                                  "structural_p99_ms": round(structural, 1)}
                                 for rate, measured, structural in p.floor.points],
                "tps_floor_plus_10pct": round(p.tps_floor_high, 1),
                "tps_floor_minus_10pct": round(p.tps_floor_low, 1),
                "sensitivity": round(p.sensitivity, 3) if math.isfinite(p.sensitivity)
                else None,
                "ill_conditioned": p.ill_conditioned})}


def print_validation(result: dict[str, Any]) -> None:
    from rich.console import Console

    from scripts.bench.common import result_table

    available = result["effective_cores"]
    title = (f"shardnet project --validate: {result['machine']}, CPU available "
             f"{available['1x4']:.2f} (1x4) / {available['2x4']:.2f} (2x4) cores, load average "
             f"{result['load_average_before'][0]} -> {result['load_average_after'][0]}")
    rows = [(c["name"], f"{c['predicted']:,.0f}", f"{c['measured']:,.0f}",
             f"{c['error']:+.0%}", "ok" if c["ok"] else "OFF")
            for c in result["comparisons"]]
    rows += [(c["name"] + " (not gated)", f"{c['predicted']:,.0f}", f"{c['measured']:,.0f}",
              f"{c['error']:+.0%}", "") for c in result["informative"]]
    console = Console(width=max(Console().width, 110))
    console.print(result_table(
        title, ("measure", "predicted", "measured", "error", f"within {TOLERANCE:.0%}"),
        rows, left=1))
    for x, p in result["predicted"]["e2e"].items():
        if "binding" in p:
            console.print(f"2x4 model at {float(x):.0%} cross-shard ({p['costs_from']} costs): "
                          f"throughput limit {p['throughput_tps']:,.0f} tx/s, p99 limit "
                          f"{p['latency_tps']:,.0f} tx/s: {p['binding']} binds")
        if "floor_ms" in p:
            console.print(
                f"  p99 floor {p['floor_ms']:,.0f} ms (calibration: " + ", ".join(
                    f"{f['rate']:,.0f} tx/s measured {f['measured_p99_ms']:,.0f} ms, "
                    f"structural {f['structural_p99_ms']:,.0f}" for f in p["floor_points"])
                + _cross_term(p) + f"); floor +10 %: {p['tps_floor_plus_10pct']:,.0f} tx/s, -10 %: "
                f"{p['tps_floor_minus_10pct']:,.0f} tx/s"
                + (": ILL-CONDITIONED, a range, not a number" if p["ill_conditioned"]
                   else ""))
    e2e = result["measured"]["e2e"]
    if "max_tps_runs" in e2e:
        for x, values in e2e["max_tps_runs"].items():
            spread = e2e["spread"][x]
            console.print(f"2x4 find-max at {float(x):.0%} cross-shard, {len(values)} run(s): "
                          + ", ".join(f"{v:,.0f}" for v in values)
                          + f" tx/s; median {e2e['max_tps'][x]:,.0f}, spread "
                          + (f"{spread:.0%}" if spread is not None else "unbounded")
                          + " of the median" + _steps_p99(e2e["runs"], x))


def _cross_term(p: dict[str, Any]) -> str:
    """The floor's cross-shard term in one phrase (empty without the mixed window)."""
    point = p.get("floor_cross_point")
    if point is None:
        return ""
    return (f"; at {point['cross']:.0%} cross-shard, {point['rate']:,.0f} tx/s measured "
            f"{point['measured_p99_ms']:,.0f} ms, structural "
            f"{point['structural_p99_ms']:,.0f}; local floor {p['floor_local_ms']:,.0f} ms")


def _steps_p99(runs: list[dict[str, Any]], x: str) -> str:
    """The measured p99 curve in one phrase: the least and the most of every step's p99
    over the runs, and over which rates (the validation side of the floor)."""
    steps = [step for run in runs for step in run.get("steps", {}).get(x, [])
             if step.get("p99_ms") is not None]
    if not steps:
        return ""
    p99 = [float(step["p99_ms"]) for step in steps]
    rates = [float(step["rate"]) for step in steps]
    return (f"; the steps' p99 {min(p99):,.0f}-{max(p99):,.0f} ms at {min(rates):,.0f}-"
            f"{max(rates):,.0f} tx/s ({len(steps)} steps)")
