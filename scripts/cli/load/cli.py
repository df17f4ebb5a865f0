"""``shardnet load``: signed load at a running network, measured end to end.

Targets, accounts, workload and rate come from the options or a profile file
(``--profile FILE``, TOML: the options' long names, ``-`` or ``_``, at the top
level or under ``[load]``; options given on the command line win). Exit codes
(scripts/cli/exits.py): 0 all good; 1 the end-of-run audit failed (something lost or
duplicated, supply not conserved, not quiescent in time) or the network cannot be
used; 2 usage (a wrong option, no such testnet folder); 3 no node answers; 99 a
``--threshold`` failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
import tomllib
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from node.defaults import API_BATCH_TXS_MAX
from scripts.cli.exits import THRESHOLD_FAILED
from scripts.cli.load.accounts import Universe, account_group, build_universe
from scripts.cli.load.compare import compare_command
from scripts.cli.load.end_audit import conservation_audit
from scripts.cli.load.engine import Engine, RunConfig
from scripts.cli.load.findmax import Limits, find_max, step_seconds
from scripts.cli.load.progress import Progress
from scripts.cli.load.rate import RateError, RateSchedule, describe, parse_duration
from scripts.cli.load.report import (
    Threshold,
    add_audit,
    build_report,
    check_thresholds,
    print_summary,
    write_report_dir,
)
from scripts.cli.load.signer import Signer
from scripts.cli.load.targets import Network, TargetError, resolve
from scripts.cli.load.workload import Workload, WorkloadError, WorkloadSpec, parse_hot, parse_mix
from scripts.cli.params import Duration, json_option, report_option, testnet_option, urls_option

THRESHOLD_EXIT = THRESHOLD_FAILED
AUDIT_EXIT = 1
DEFAULT_DURATION = "10s"


def _apply_profile(ctx: click.Context, path: Path | None) -> None:
    """Fill the parameters not given on the command line from the profile."""
    if path is None:
        return
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.ClickException(f"--profile {path}: {exc}") from None
    table = doc.get("load", doc)
    params = {p.name: p for p in ctx.command.params if p.name}
    aliases = {"threshold": "thresholds", "url": "urls", "testnet": "root", "json": "as_json",
               "report": "report_dir", "audit": "run_audit"}
    for key, value in table.items():
        if isinstance(value, dict):
            continue  # other tables (a chaos scenario's faults, say) are not ours
        name = key.replace("-", "_")
        name = aliases.get(name, name)
        param = params.get(name)
        if param is None or name == "profile":
            raise click.ClickException(f"--profile {path}: unknown key {key!r}")
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
            continue
        try:
            if param.multiple and not isinstance(value, list):
                value = [value]
            ctx.params[name] = param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise click.ClickException(f"--profile {path}: {key}: {exc.message}") from None


@click.group("load", invoke_without_command=True, context_settings={"show_default": True})
@testnet_option(default=None)
@urls_option()
@click.option("--profile", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML load profile; command-line options win.")
@click.option("--rate", default="500", help="Open loop: TPS, FROM:TO:DURATION (ramp) or "
              "R1,R2,...:DURATION (steps).")
@click.option("--poisson", is_flag=True, help="Poisson arrivals instead of evenly spaced.")
@click.option("--concurrency", type=click.IntRange(min=0), default=0,
              help="Closed loop: N users, each waiting for its commit (replaces --rate).")
@click.option("--duration", type=Duration(), default=None,
              help="Length of the sending phase [default: the rate schedule's, else 10s].")
@click.option("--max-txs", type=click.IntRange(min=1), default=None)
@click.option("--mix", default="transfer=80,swap=20", show_default=True,
              help="KIND=WEIGHT,...; kinds: transfer, swap, add_liquidity, "
                   "remove_liquidity, stake, unstake, harvest (liquidity and farm calls "
                   "on a pool of the sender's shard, a deposit before a stake).")
@click.option("--cross-shard", type=click.FloatRange(0, 1), default=0.0,
              help="Share of transactions whose recipient or pool is on another shard.")
@click.option("--hot", default="uniform", help="Target popularity: uniform or zipf:S.")
@click.option("--senders", type=click.IntRange(min=1), default=64)
@click.option("--rng-seed", type=int, default=1, help="Same seed, same transactions.")
@click.option("--seed", default=None, help="Account seed [default: the genesis's].")
@click.option("--accounts", type=click.IntRange(min=1), default=None,
              help="Funded accounts of --seed [default: the genesis's].")
@click.option("--batch", type=click.IntRange(1, API_BATCH_TXS_MAX), default=200,
              help="Most transactions per POST (at most the nodes' api.batch_txs_max).")
@click.option("--batch-interval", type=Duration(), default="50ms",
              help="Pacing tick: arrivals due are sent together, per shard, this often.")
@click.option("--sign-workers", type=click.IntRange(0, 16), default=1,
              help="Signing processes (0: sign in the sending process).")
@click.option("--drain", type=Duration(), default="30s",
              help="After sending, wait at most this long for outcomes.")
@click.option("--audit/--no-audit", "run_audit", default=True,
              help="End-of-run audit: quiescence, conservation, exactly-once.")
@click.option("--audit-wait", type=Duration(), default="60s")
@click.option("--threshold", "thresholds", multiple=True,
              help="Pass/fail, k6 style: 'p99<1000ms', 'finality.p99<2.5s', 'rejected<1%', "
              "'tps>500' (exit 99 when one fails).")
@click.option("--find-max", is_flag=True,
              help="Step the rate up from --rate (each step --duration) until p99 or the "
              "rejection rate crosses its limit; report the highest sustainable TPS.")
@click.option("--find-max-p99", type=Duration(), default="1s",
              help="--find-max: the p99 submit-to-commit limit.")
@click.option("--find-max-rejected", type=click.FloatRange(0, 100), default=1.0,
              help="--find-max: the rejection limit, in percent.")
@json_option("Print the report as JSON on stdout (progress and summary on stderr).")
@report_option("Write report.json, timeseries.csv and report.html here.")
@click.option("--quiet", is_flag=True, help="No live progress.")
@click.pass_context
def load(ctx: click.Context, /, **_: Any) -> None:
    """Fire signed transfers and swaps at a network; live progress, report, audit.
    `shardnet load compare A B` sets two reports side by side."""
    if ctx.invoked_subcommand is not None:
        return
    _apply_profile(ctx, ctx.params.get("profile"))
    opts = dict(ctx.params)
    console = Console(stderr=opts["as_json"])
    if not console.is_terminal:
        console = Console(stderr=opts["as_json"], width=max(console.width, 110))
    thresholds, mix, hot, schedule = _parse_options(opts)
    duration = opts["duration"]
    if duration is None:
        duration = (schedule.total_s if schedule and schedule.total_s else
                    parse_duration(DEFAULT_DURATION))
    network = resolve(opts["root"], opts["urls"])
    seed, universe, workload = _workload(network, opts, mix, hot)
    config = RunConfig(schedule=schedule, concurrency=opts["concurrency"],
                       poisson=opts["poisson"], duration_s=duration, max_txs=opts["max_txs"],
                       drain_s=opts["drain"], batch_txs_max=opts["batch"],
                       tick_s=max(0.001, opts["batch_interval"]),
                       rng_seed=opts["rng_seed"])
    settings = _settings(opts, schedule, duration, len(universe.senders), seed)
    if not opts["quiet"]:
        console.print(f"load: {settings['rate'] or f'{config.concurrency} users'} for "
                      f"{duration:g} s at {network.chain_id} ({network.num_shards} shards, "
                      f"{len(network.nodes)} nodes, {network.source}), mix {opts['mix']}, "
                      f"cross-shard {opts['cross_shard']:.0%}, {len(universe.senders)} senders",
                      highlight=False)
    signer = Signer(network.chain_id, seed, [s.index for s in universe.senders],
                    opts["sign_workers"])
    if opts["find_max"]:
        found = _find_max(network, universe, signer, config, opts, mix, hot, console)
        finish_find_max(found, network, opts, settings, console)
        return
    engine = Engine(network, universe, workload, signer, config)
    _finish(engine, _run(engine, opts, settings, console), thresholds, opts, console)


def _parse_options(opts: dict[str, Any]) -> tuple[list[Threshold], dict[str, float],
                                                   float | None, RateSchedule | None]:
    """The thresholds, mix, popularity and rate schedule (None: closed loop)."""
    try:
        thresholds = [Threshold.parse(t) for t in opts["thresholds"]]
        mix = parse_mix(opts["mix"])
        hot = parse_hot(opts["hot"])
        schedule = None if opts["concurrency"] else RateSchedule.parse(opts["rate"])
    except (ValueError, RateError, WorkloadError) as exc:
        raise click.ClickException(str(exc)) from None
    return thresholds, mix, hot, schedule


def _workload(network: Network, opts: dict[str, Any], mix: dict[str, float], hot: float | None
              ) -> tuple[str, Universe, Workload]:
    """The account seed, the senders and targets, and the workload over them."""
    try:
        seed, count = account_group(network.genesis, opts["seed"], opts["accounts"])
        senders = max(opts["senders"], opts["concurrency"])
        universe = build_universe(network.genesis, seed, count, senders)
        workload = Workload(WorkloadSpec(mix, opts["cross_shard"], hot, opts["rng_seed"]),
                            universe)
    except (ValueError, WorkloadError) as exc:
        raise click.ClickException(str(exc)) from None
    return seed, universe, workload


def _settings(opts: dict[str, Any], schedule: RateSchedule | None, duration: float,
              senders: int, seed: str) -> dict[str, Any]:
    """The run's settings as the report records them."""
    return {
        "rate": describe(schedule) if schedule else None, "poisson": opts["poisson"],
        "concurrency": opts["concurrency"] or None, "duration_s": duration,
        "max_txs": opts["max_txs"], "mix": opts["mix"], "cross_shard": opts["cross_shard"],
        "hot": opts["hot"], "senders": senders, "rng_seed": opts["rng_seed"],
        "seed": seed, "batch": opts["batch"], "sign_workers": opts["sign_workers"],
    }


def _find_max(network: Network, universe: Universe, signer: Signer, config: RunConfig,
              opts: dict[str, Any], mix: dict[str, float], hot: float | None,
              console: Console) -> dict[str, Any]:
    """Step the open-loop rate up until a limit is crossed (closes ``signer``)."""
    schedule = config.schedule
    if schedule is None:
        signer.close()
        raise click.ClickException("--find-max steps an open-loop rate: give --rate START")
    step_s = opts["duration"] or parse_duration(DEFAULT_DURATION)

    def make_engine(rate: float, step: int) -> Engine:
        workload = Workload(WorkloadSpec(mix, opts["cross_shard"], hot,
                                         opts["rng_seed"] + step), universe)
        step_config = dataclasses.replace(config, schedule=RateSchedule.parse(f"{rate:.3f}"),
                                          duration_s=step_seconds(rate, step_s),
                                          max_txs=None)
        return Engine(network, universe, workload, signer, step_config)

    try:
        return find_max(make_engine, schedule.stages[0].start_tps,
                        Limits(opts["find_max_p99"] * 1000, opts["find_max_rejected"]),
                        on_step=None if opts["quiet"] else
                        lambda row: console.print(_step_line(row), highlight=False))
    finally:
        signer.close()


def _run(engine: Engine, opts: dict[str, Any], settings: dict[str, Any], console: Console
         ) -> dict[str, Any]:
    """Run the load with live progress, then the audit; the report (closes the signer)."""
    audit_result: dict[str, Any] = {}

    async def settle() -> None:
        if opts["run_audit"]:
            audit_result["value"] = await asyncio.to_thread(
                conservation_audit, engine.network, opts["root"], opts["audit_wait"])

    progress = Progress(console, enabled=not opts["quiet"])
    engine.on_tick = progress.update
    cpu_started = time.process_time()
    try:
        with progress:
            asyncio.run(engine.run(settle))
            progress.update(engine)
    except TargetError:
        raise
    except KeyboardInterrupt:
        raise click.ClickException("interrupted") from None
    except BrokenProcessPool:
        raise click.ClickException("a signing worker process died (out of memory?); "
                                   "try --sign-workers 0") from None
    finally:
        engine.signer.close()
    report = build_report(engine, settings=settings, cpu_s=time.process_time() - cpu_started)
    if opts["run_audit"]:
        conservation, quiescence, problem = audit_result.get("value", (None, None,
                                                                       "audit not run"))
        add_audit(report, engine, conservation, quiescence, problem)
    return report


def _finish(engine: Engine, report: dict[str, Any], thresholds: list[Threshold],
            opts: dict[str, Any], console: Console) -> None:
    """Check the thresholds, write and print the report; exit 1 when the audit failed,
    99 when a threshold did."""
    passed = check_thresholds(thresholds, report)
    if opts["report_dir"] is not None:
        written = write_report_dir(opts["report_dir"], report, engine.timeline.rows(
            engine.network.num_shards))
        if not opts["quiet"]:
            console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False)
    if opts["as_json"]:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        print_summary(report, console)
    if opts["run_audit"] and not report["audit"]["ok"]:
        sys.exit(AUDIT_EXIT)
    if not passed:
        sys.exit(THRESHOLD_EXIT)


load.add_command(compare_command)


def _step_line(row: dict[str, Any]) -> str:
    verdict = "sustainable" if row["ok"] else f"not sustainable: {row['why']}"
    return (f"find-max: {row['rate']:,.0f} tx/s offered -> {row['tps_committed']:,.0f} "
            f"committed, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms: {verdict}")


def finish_find_max(found: dict[str, Any], network: Any, opts: dict[str, Any],
                    settings: dict[str, Any], console: Console) -> None:
    """Audit after the last step, print, exit 1 when the audit fails."""
    found["settings"] = settings
    ok = True
    if opts["run_audit"]:
        conservation, quiescence, problem = conservation_audit(network, opts["root"],
                                                               opts["audit_wait"])
        lost = sum(row["lost"] for row in found["steps"])
        duplicated = sum(row["duplicated"] for row in found["steps"])
        ok = bool(conservation and conservation["ok"]) and not lost and not duplicated \
            and problem is None
        found["audit"] = {"ok": ok, "lost": lost, "duplicated": duplicated,
                          "conservation_ok": bool(conservation and conservation["ok"]),
                          "problems": [*(conservation or {}).get("problems", []),
                                       *([problem] if problem else [])],
                          "quiescence": quiescence}
    if opts["as_json"]:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
    else:
        from rich.table import Table

        table = Table(title=f"find-max: p99 <= {found['limits']['p99_ms']:g} ms, rejected <= "
                            f"{found['limits']['rejected_pct']:g}%")
        for column in ("offered tx/s", "committed tx/s", "p50 ms", "p99 ms", "verdict"):
            table.add_column(column, justify="left" if column == "verdict" else "right")
        for row in found["steps"]:
            table.add_row(f"{row['rate']:,.0f}", f"{row['tps_committed']:,.1f}",
                          str(row["p50_ms"]), str(row["p99_ms"]),
                          "ok" if row["ok"] else row["why"])
        console.print(table)
        console.print(f"highest sustainable: {found['max_tps']:,.1f} tx/s committed "
                      f"(at {found['max_rate']:,.0f} offered)")
        if "audit" in found:
            console.print(f"audit: {'ok' if ok else 'FAILED'}: {found['audit']['lost']} lost, "
                          f"{found['audit']['duplicated']} duplicated")
    if not ok:
        sys.exit(AUDIT_EXIT)
