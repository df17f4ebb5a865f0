"""``shardnet bench e2e``: the default 2 x 4 testnet, end to end, against its ceiling.

Starts the default topology as local processes (a fresh folder), finds the highest
sustainable TPS with ``shardnet load``'s ``--find-max`` at 0% and 20% cross-shard
traffic, then runs half of the 0% figure with 20% cross-shard traffic for the
latencies. The Ed25519 single-core verification rate is measured in the same run
(before and after; the better one counts), and the throughput is compared with
the crypto ceiling ``cores / (validators_per_shard x verify_time)``, with the verify
path the nodes use (``VERIFY_BACKEND``, named in the output) and, when that is the
compiled extension, with OpenSSL's too. Everything runs on this machine: the 8 nodes and
the generator share its cores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from consensus.kernel.crypto import BACKEND_CRYPTOGRAPHY, VERIFY_BACKEND
from scripts.bench.common import (
    cores,
    local_testnet,
    machine_line,
    measure_verify_rates,
    report,
    result_table,
)
from scripts.cli.load.accounts import Universe, build_universe
from scripts.cli.load.engine import Engine, RunConfig
from scripts.cli.load.findmax import Limits, find_max, run_step, step_seconds
from scripts.cli.load.rate import RateSchedule
from scripts.cli.load.signer import Signer
from scripts.cli.load.targets import Network, network_from_testnet
from scripts.cli.load.workload import Workload, WorkloadSpec, parse_mix
from scripts.cli.testnet.generate import TestnetSpec

VALIDATORS = 4
MIX = "transfer=80,swap=20"
SENDERS = 128
CROSS_FRACTIONS = (0.0, 0.2)


def engine_factory(network: Network, universe: Universe, signer: Signer, cross: float,
                   step_s: float, drain_s: float) -> Callable[[float, int], Engine]:
    def make(rate: float, step: int) -> Engine:
        workload = Workload(WorkloadSpec(parse_mix(MIX), cross, None, 100 + step), universe)
        config = RunConfig(schedule=RateSchedule.parse(f"{rate:.3f}"),
                           duration_s=step_seconds(rate, step_s),
                           drain_s=drain_s, batch_txs_max=200)
        return Engine(network, universe, workload, signer, config)

    return make


def step_printer(console: Console, cross: float) -> Callable[[dict[str, Any]], None]:
    def show(row: dict[str, Any]) -> None:
        console.print(f"  {cross:.0%} cross-shard: {row['rate']:,.0f} offered -> "
                      f"{row['tps_committed']:,.0f} committed, p99 {row['p99_ms']} ms "
                      f"{'ok' if row['ok'] else row['why']}")

    return show


def measure_network(network: Network, console: Console, start_rate: float, limits: Limits,
                    step_s: float, drain_s: float) -> tuple[dict[str, Any], float, dict[str, Any]]:
    """find-max at each cross-shard share, then the latencies at half the local maximum:
    (``{"max_tps", "find_max"}``, the half load, its step report)."""
    universe = build_universe(network.genesis, "shardnet", 1000, SENDERS)
    signer = Signer(network.chain_id, "shardnet", [s.index for s in universe.senders], 1)
    result: dict[str, Any] = {"max_tps": {}, "find_max": {}}
    try:
        # Warm-up, not measured: first blocks, caches, connections, workers.
        run_step(engine_factory(network, universe, signer, 0.0, 2.0, drain_s)(start_rate / 2, 0))
        for cross in CROSS_FRACTIONS:
            make = engine_factory(network, universe, signer, cross, step_s, drain_s)
            found = find_max(make, start_rate, limits, on_step=step_printer(console, cross))
            result["max_tps"][f"{cross:g}"] = found["max_tps"]
            result["find_max"][f"{cross:g}"] = found
        half = max(50.0, result["max_tps"]["0"] / 2)
        make = engine_factory(network, universe, signer, 0.2, step_s * 2, drain_s)
        return result, half, run_step(make(half, 99))
    finally:
        signer.close()


def run_testnet(base_port: int, measure: Callable[[Network], Any]) -> Any:
    """``measure`` on a fresh default 2 x 4 testnet of local processes, stopped after."""
    spec = TestnetSpec(shards=2, validators=VALIDATORS, accounts=1000, base_port=base_port)
    with local_testnet(spec) as (root, _):
        return measure(network_from_testnet(root))


def summary(result: dict[str, Any], rates: dict[str, float], half: float, step: dict[str, Any],
            ) -> dict[str, Any]:
    """The JSON's figures beside ``max_tps`` and ``find_max``; ``rates``: one core's
    verify/s per backend (``measure_verify_rates``), the nodes' path first."""
    verify_per_s = rates[VERIFY_BACKEND]
    ceiling = cores() * verify_per_s / VALIDATORS
    openssl = cores() * rates[BACKEND_CRYPTOGRAPHY] / VALIDATORS
    latency = step["latency_ms"]
    return {
        "machine": machine_line(),
        "topology": "2 shards x 4 validators, local processes, generator on the same machine",
        "cores": cores(), "verify_backend": VERIFY_BACKEND,
        "verify_per_s": round(verify_per_s), "ceiling_tps": round(ceiling),
        "ratio": round(result["max_tps"]["0"] / ceiling, 3),
        "verify_per_s_cryptography": round(rates[BACKEND_CRYPTOGRAPHY]),
        "ceiling_tps_cryptography": round(openssl),
        "ratio_cryptography": round(result["max_tps"]["0"] / openssl, 3),
        "cross_over_local": round(result["max_tps"]["0.2"] / max(1e-9, result["max_tps"]["0"]),
                                  3),
        "half_load_tps": round(half, 1), "p99_ms": latency["commit"]["p99"],
        "p50_ms": latency["commit"]["p50"],
        "finality_p99_ms": latency["finality"]["p99"],
        "finality_p50_ms": latency["finality"]["p50"],
        "half_load_generator_cpu_share": step["generator"]["cpu_share_of_one_core"],
    }


def make_table(result: dict[str, Any], quick: bool) -> Table:
    half, kind = result["half_load_tps"], "quick" if quick else "full"
    backend = result["verify_backend"]
    rows = [(f"Ed25519 verify / s (one core, {backend}: the nodes' path)",
             f"{result['verify_per_s']:,.0f}"),
            (f"crypto ceiling: cores / (4 x verify time), {backend}",
             f"{result['ceiling_tps']:,.0f} tx/s"),
            ("max sustainable, 0% cross-shard", f"{result['max_tps']['0']:,.0f} tx/s"),
            ("max sustainable, 20% cross-shard", f"{result['max_tps']['0.2']:,.0f} tx/s"),
            (f"ratio to the {backend} ceiling (0%)", f"{result['ratio']:.2f}"),
            ("20% / 0% cross-shard", f"{result['cross_over_local']:.2f}"),
            (f"at half load ({half:,.0f} tx/s, 20% cross): commit p50 / p99",
             f"{result['p50_ms']} / {result['p99_ms']} ms"),
            ("  cross-shard finality p50 / p99",
             f"{result['finality_p50_ms']} / {result['finality_p99_ms']} ms")]
    if backend != BACKEND_CRYPTOGRAPHY:
        rows[2:2] = [("  OpenSSL (cryptography) verify / s, its ceiling",
                      f"{result['verify_per_s_cryptography']:,.0f}, "
                      f"{result['ceiling_tps_cryptography']:,.0f} tx/s")]
        rows.insert(6, ("ratio to the OpenSSL ceiling (0%)",
                        f"{result['ratio_cryptography']:.2f}"))
    title = f"shardnet bench e2e: 2 x 4, {result['cores']} cores ({kind})"
    return result_table(title, ("measure", "value"), rows, left=1)


@click.command("e2e")
@click.option("--quick", is_flag=True, help="Short steps: a rough figure in under two minutes.")
@click.option("--step", "step_s", type=float, default=8.0, show_default=True,
              help="Seconds per find-max step.")
@click.option("--start-rate", type=float, default=500.0, show_default=True)
@click.option("--p99-limit", "p99_ms", type=float, default=1000.0, show_default=True,
              help="find-max: p99 submit-to-commit limit (ms).")
@click.option("--base-port", default=27900, show_default=True)
@click.option("--out", type=click.Path(path_type=Path),
              default=Path("bench-results/e2e.json"), show_default=True)
def bench_e2e(quick: bool, step_s: float, start_rate: float, p99_ms: float, base_port: int,
              out: Path) -> None:
    """2 x 4 local testnet: highest sustainable TPS at 0% and 20% cross-shard vs the
    Ed25519 ceiling, and latencies at half load."""
    console = Console()
    if quick:
        step_s = min(step_s, 3.0)
    drain_s = 10.0 if quick else 20.0
    verify_before = measure_verify_rates(0.5 if quick else 1.0)
    console.print("Ed25519 verify, one core: " + ", ".join(
        f"{name} {rate:,.0f}/s" for name, rate in verify_before.items())
        + f"; the nodes verify with {VERIFY_BACKEND}")
    limits = Limits(p99_ms=p99_ms)
    result, half, step = run_testnet(base_port, lambda network: measure_network(
        network, console, start_rate, limits, step_s, drain_s))
    verify_after = measure_verify_rates(0.5 if quick else 1.0)
    result.update(summary(result, {name: max(rate, verify_after[name])
                                   for name, rate in verify_before.items()}, half, step))
    result.update({"limits": {"p99_ms": p99_ms, "step_s": step_s}, "quick": quick})
    report(console, [make_table(result, quick)], out, result)
