"""``shardnet project``: what it takes to reach a throughput, from costs measured here.

``shardnet project`` projects every combination of ``--shards``, ``--validators``,
``--cores-per-node`` and ``--cross-shard`` (each validator on its own machine, the
network model of ``--network``) and prints TPS, commit and cross-shard finality
latency and the binding resource, then the smallest configuration reaching
``--target`` TPS at each cross-shard share. ``shardnet project calibrate`` measures the
cost inputs on this machine; ``shardnet project --validate`` runs ``bench node`` (1 x 4)
and ``bench e2e`` (2 x 4) and compares them with the model of one shared machine.
docs/SCALING.md says what is simulated, what is analytic, and the answer for 100,000 TPS.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from scripts.cli.exits import CheckFailed, UsageFailure
from scripts.cli.params import json_option, out_option

DEFAULT_COSTS = Path(__file__).resolve().parents[1] / "project" / "costs.json"
TOLERANCE = 0.25

# The testnets of --validate and calibrate take ports from here (up to 370): below the
# kernel's ephemeral range (Linux: 32768-60999), where other processes' outgoing
# connections can hold any port at any moment and a node would fail to bind.
PROJECT_BASE_PORT = 29000


class IntList(click.ParamType):  # type: ignore[type-arg]
    """``8,16,32``: positive integers."""

    name = "N,..."

    def __init__(self, low: int = 1, high: int = 4096) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            items = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        bad = [v for v in items if not self.low <= v <= self.high]
        if bad:
            self.fail(f"{bad[0]} is outside {self.low}..{self.high}", param, ctx)
        return items


class ShareList(click.ParamType):  # type: ignore[type-arg]
    """``0.1,0.3``: shares in [0, 1]."""

    name = "X,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            items = tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)
        if any(not 0 <= v <= 1 or math.isnan(v) for v in items):
            self.fail(f"{value!r}: each share must be within 0..1", param, ctx)
        return items


def _validators(values: tuple[int, ...]) -> tuple[int, ...]:
    bad = [v for v in values if v < 4 or (v - 1) % 3]
    if bad:
        raise UsageFailure(f"--validators {bad[0]}: a shard has 3f+1 validators (4, 7, 10, ...)")
    return values


def read_costs(path: Path) -> Any:
    from scripts.project.costs import CostsError, load_costs

    try:
        return load_costs(path)
    except CostsError as exc:
        raise UsageFailure(str(exc)) from None


def read_network(path: Path | None) -> Any:
    from scripts.project.network import DEFAULT_NETWORK, NetworkError, load_network

    try:
        return load_network(path or DEFAULT_NETWORK)
    except NetworkError as exc:
        raise UsageFailure(str(exc)) from None


def _fmt_ms(value: float) -> str:
    return "overloaded" if math.isinf(value) else f"{value:,.0f}"


def projection_rows(costs: Any, network: Any, shards: tuple[int, ...],
                    validators: tuple[int, ...], cores: tuple[int, ...],
                    cross: tuple[float, ...], load_share: float) -> list[dict[str, Any]]:
    from scripts.project.model import Config, project
    from scripts.project.structure import measure_structure

    rows = []
    for r in validators:
        structure = measure_structure(r, network.block_interval_ms)
        for x in cross:
            for c in cores:
                for s in shards:
                    p = project(costs, network, structure, Config(s, r, c, x), load_share)
                    rows.append({
                        "shards": s, "validators": r, "cores_per_node": c, "cross_shard": x,
                        "machines": s * r, "cores_total": s * r * c,
                        "tps": round(p.tps), "tps_per_shard": round(p.tps / s),
                        "binding": p.binding,
                        "bounds_per_shard": {k: round(v) for k, v in p.bounds.items()},
                        "block_txs": round(p.block_txs), "load_tps": round(p.load_tps),
                        "commit_ms": None if math.isinf(p.commit_ms) else round(p.commit_ms),
                        "finality_ms": None if math.isinf(p.finality_ms)
                        else round(p.finality_ms),
                        "cpu_utilisation": round(p.cpu_utilisation, 3),
                        "per_tx_us": {k: round(v, 2) for k, v in p.per_tx_us.items()},
                        "structure": {"commit_delays": structure.commit_delays,
                                      "commit_base_ms": structure.commit_base_ms,
                                      "finality_delays": structure.finality_delays,
                                      "finality_base_ms": structure.finality_base_ms},
                    })
    return rows


def smallest(rows: list[dict[str, Any]], target: float) -> dict[str, dict[str, Any] | None]:
    """Per cross-shard share, the row reaching ``target`` with the fewest cores in all
    (then the fewest machines, then the lowest commit latency)."""
    answer: dict[str, dict[str, Any] | None] = {}
    for x in sorted({row["cross_shard"] for row in rows}):
        fits = [row for row in rows if row["cross_shard"] == x and row["tps"] >= target]
        answer[f"{x:g}"] = min(fits, key=lambda row: (
            row["cores_total"], row["machines"], row["commit_ms"] or math.inf)) if fits else None
    return answer


def print_projection(rows: list[dict[str, Any]], best: dict[str, Any], target: float,
                     network: Any) -> None:
    from rich.console import Console

    from scripts.bench.common import result_table

    link = network.network
    title = (f"shardnet project: each validator its own machine, {link.latency_ms:g} ms one "
             f"way, {link.bandwidth_mbit:g} Mbit/s; latencies at half the TPS")
    columns = ("S", "R", "cores", "cross", "TPS", "per shard", "binds", "block",
               "commit ms", "finality ms")
    table = result_table(title, columns, (
        (row["shards"], row["validators"], row["cores_per_node"], f"{row['cross_shard']:.0%}",
         f"{row['tps']:,}", f"{row['tps_per_shard']:,}", row["binding"],
         f"{row['block_txs']:,}", _fmt_ms(row["commit_ms"] or math.inf),
         _fmt_ms(row["finality_ms"] or math.inf)) for row in rows))
    console = Console(width=max(Console().width, 110))
    console.print(table)
    for x, row in best.items():
        if row is None:
            console.print(f"{float(x):.0%} cross-shard: no configuration above reaches "
                          f"{target:,.0f} TPS")
        else:
            console.print(
                f"{float(x):.0%} cross-shard: smallest for {target:,.0f} TPS: "
                f"{row['shards']} shards x {row['validators']} validators x "
                f"{row['cores_per_node']} cores ({row['machines']} machines, "
                f"{row['cores_total']} cores): {row['tps']:,} TPS, binds on {row['binding']}, "
                f"commit {row['commit_ms']} ms, finality {row['finality_ms']} ms")


def write_out(out: Path | None, data: Any) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")


@click.group("project", invoke_without_command=True)
@click.option("--shards", type=IntList(1, 4096), default="8,16,32,64", show_default=True)
@click.option("--validators", type=IntList(4, 301), default="4,7", show_default=True,
              help="Per shard, 3f+1.")
@click.option("--cores-per-node", "cores", type=IntList(1, 1024), default="4,8,16",
              show_default=True, help="Cores of each validator's machine.")
@click.option("--cross-shard", "cross", type=ShareList(), default="0.1,0.3",
              show_default=True, help="Shares of transactions with a receipt elsewhere.")
@click.option("--network", "network_path", type=click.Path(path_type=Path), default=None,
              help="Network model, TOML or JSON (default: scripts/project/network.toml).")
@click.option("--costs", "costs_path", type=click.Path(path_type=Path),
              default=DEFAULT_COSTS, show_default=True,
              help="Cost inputs from `shardnet project calibrate`.")
@click.option("--target", type=click.FloatRange(min=1), default=100_000, show_default=True,
              help="TPS whose smallest configuration is reported.")
@click.option("--load-share", type=click.FloatRange(0.01, 0.99), default=0.5,
              show_default=True, help="Latencies at this share of each row's TPS.")
@click.option("--validate", is_flag=True,
              help="Calibrate (unless --costs is given), run bench node (1 x 4) and bench e2e "
                   "(2 x 4) here and compare them with the shared-machine model (exit 1 "
                   f"beyond {TOLERANCE:.0%}).")
@click.option("--quick", is_flag=True, help="--validate: one bench node run, one bench e2e "
                                           "find-max, short steps.")
@click.option("--e2e-runs", type=click.IntRange(1, 9), default=None,
              help="--validate: bench e2e find-max runs, each on a fresh 2 x 4 testnet; the "
                   "median is compared  [default: 3, 1 with --quick]")
@click.option("--base-port", type=click.IntRange(1024, 65000), default=PROJECT_BASE_PORT,
              show_default=True, help="--validate: first port of the testnets (they "
                                      "use the next 370).")
@json_option()
@out_option("Also write the JSON result to this file.")
@click.pass_context
def project(ctx: click.Context, shards: tuple[int, ...], validators: tuple[int, ...],
            cores: tuple[int, ...], cross: tuple[float, ...], network_path: Path | None,
            costs_path: Path, target: float, load_share: float, validate: bool, quick: bool,
            e2e_runs: int | None, base_port: int, as_json: bool, out: Path | None) -> None:
    """Project TPS, latencies and the binding resource of sharded deployments from costs
    measured here; --validate checks the model against this machine's testnets."""
    if ctx.invoked_subcommand is not None:
        return
    validators = _validators(validators)
    network = read_network(network_path)
    if validate:
        from scripts.project.validate import print_validation, run_validation

        explicit = ctx.get_parameter_source("costs_path") is not ParameterSource.DEFAULT
        try:
            result = run_validation(read_costs(costs_path) if explicit else None, network,
                                    base_port, quick, log=None if as_json else click.echo,
                                    e2e_runs=e2e_runs)
        except (OSError, RuntimeError) as exc:
            raise CheckFailed(f"validation could not measure: {exc}") from None
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            print_validation(result)
        write_out(out, result)
        if not result["ok"]:
            raise CheckFailed(f"the model is off by more than {TOLERANCE:.0%}: "
                              + ", ".join(f"{c['name']} {c['error']:+.0%}"
                                          for c in result["comparisons"]
                                          if abs(c["error"]) > TOLERANCE))
        return
    costs = read_costs(costs_path)
    rows = projection_rows(costs, network, shards, validators, cores, cross, load_share)
    best = smallest(rows, target)
    data = {"costs": str(costs_path), "network": msgspec_builtins(network),
            "target_tps": target, "load_share": load_share, "rows": rows, "smallest": best}
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        print_projection(rows, best, target, network)
    write_out(out, data)


def msgspec_builtins(value: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(value)


@project.command("calibrate")
@click.option("--quick", is_flag=True, help="Shorter windows: a rough figure in ~1 minute.")
@click.option("--base-port", type=click.IntRange(1024, 65000), default=PROJECT_BASE_PORT,
              show_default=True, help="First port of the calibration testnets (they use "
                                      "the next 170).")
@out_option("Where to write the costs (JSON).", default=DEFAULT_COSTS)
@json_option()
def calibrate_command(quick: bool, base_port: int, out: Path, as_json: bool) -> None:
    """Measure the per-transaction, per-block and per-message costs on this machine
    (process CPU time; 1 x 4 and 2 x 4 testnets of local processes, bursts and paced
    windows) and write them as JSON: re-run after a change to the node."""
    from scripts.project.calibrate import calibrate
    from scripts.project.costs import encode_costs

    try:
        costs = calibrate(base_port, quick, log=(lambda _: None) if as_json else click.echo)
    except click.ClickException:
        raise
    except (OSError, RuntimeError) as exc:
        raise CheckFailed(f"calibration failed: {exc}") from None
    text = encode_costs(costs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if as_json:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {out} (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
