"""``shardnet chaos``: run a fault scenario under load and check what survives it.

``shardnet chaos run SCENARIO`` (a file, or the name of one in ``scenarios/``) against
a local testnet folder (``--testnet``, running; or ``--fresh``: made for the scenario
with ``--faults``, started, stopped after) or a compose project (``--compose``). Exit
codes (scripts/cli/exits.py): 0 every check passed; 1 a check failed (safety, recovery,
audit, actions) or the scenario cannot run here; 2 usage (no such scenario or testnet
folder, a broken scenario file). ``shardnet chaos list`` shows the shipped scenarios.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from scripts.chaos.faults import ComposeFaults, FaultClient, LocalFaults
from scripts.chaos.manifest import ManifestError, Scenario, load_scenario
from scripts.chaos.runner import ChaosError, RunOptions, compose_wiper, run_scenario
from scripts.cli.exits import UsageFailure
from scripts.cli.params import json_option, report_option, rng_seed_option, testnet_option

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
DEFAULT_DIR = Path("testnets/default")  # a running testnet (`shardnet testnet up`)
FRESH_DIR = Path("testnets/chaos")  # --fresh: made, run and stopped here


def scenario_path(text: str) -> Path:
    """A scenario file, or the name of a shipped one."""
    path = Path(text)
    if path.is_file():
        return path
    shipped = SCENARIOS / f"{text.removesuffix('.toml')}.toml"
    if shipped.is_file():
        return shipped
    names = ", ".join(p.stem for p in sorted(SCENARIOS.glob("*.toml")))
    raise UsageFailure(f"no scenario {text!r}: give a file or one of {names}")


def read_scenario(text: str) -> Scenario:
    try:
        return load_scenario(scenario_path(text))
    except ManifestError as exc:
        raise UsageFailure(f"{text}: {exc}") from None


@click.group("chaos")
def chaos() -> None:
    """Fault scenarios under load: crashes, partitions, byzantine nodes; then the audit."""


@chaos.command("list")
@json_option("The scenarios as a JSON array on stdout.")
def list_command(as_json: bool) -> None:
    """The shipped scenarios (scenarios/*.toml)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(SCENARIOS.glob("*.toml")):
        try:
            s = load_scenario(path)
        except ManifestError as exc:
            rows.append({"name": path.stem, "error": str(exc)})
            continue
        rows.append({"name": s.name, "shards": s.shards, "validators": s.validators,
                     "load_s": s.load_duration_s, "faults_endpoint": s.needs_fault_endpoint,
                     "actions": [a.action for a in s.actions], "description": s.description})
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title=f"chaos scenarios ({SCENARIOS})")
    for column in ("name", "topology", "load s", "actions", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], "-", "-", "-", f"[red]{row['error']}[/]")
            continue
        table.add_row(row["name"], f"{row['shards']}x{row['validators']}",
                      f"{row['load_s']:g}", ", ".join(row["actions"]), row["description"])
    Console(width=max(Console().width, 140)).print(table)


@chaos.command("run")
@click.argument("scenario")
@testnet_option(default=None,
                help=f"Local testnet folder [default: {DEFAULT_DIR}, with --fresh {FRESH_DIR}].")
@click.option("--compose", type=click.Path(path_type=Path), default=None,
              help="A compose project (its folder or file) instead of a local folder.")
@click.option("--project", default=None, help="With --compose: the compose project name.")
@click.option("--fresh", is_flag=True, help="Make a new testnet in --testnet for the scenario "
              "(its topology, --faults), start it, stop it after.")
@click.option("--base-port", type=int, default=None, help="With --fresh: first port.")
@rng_seed_option(help="Same seed, same schedule and same load.")
@json_option("Print the report as JSON on stdout (progress on stderr).")
@report_option("Write the load report (faults on its timeline) here: report.json, "
               "timeseries.csv, report.html.")
@click.option("--catchup", type=float, default=60.0, show_default=True,
              help="Seconds every node may take to reach its shard's height after the run.")
def run(scenario: str, root: Path | None, compose: Path | None, project: str | None,
        fresh: bool, base_port: int | None, rng_seed: int, as_json: bool, report_dir: Path | None,
        catchup: float) -> None:
    """Run SCENARIO: load, timed faults, heal, quiescence, audit, checks."""
    spec = read_scenario(scenario)
    console = Console(stderr=True, width=max(Console(stderr=True).width, 120))
    if compose is not None and (root is not None or fresh):
        raise UsageFailure("--compose or --testnet/--fresh, not both")
    options = RunOptions(seed=rng_seed, catchup_s=catchup,
                         on_event=lambda text: console.print(text, highlight=False))
    if compose is not None:
        report, rows = _run_compose(spec, compose, project, options)
    else:
        report, rows = _run_local(spec, root or (FRESH_DIR if fresh else DEFAULT_DIR), fresh,
                                  base_port, options)
    if report_dir is not None:
        from scripts.cli.load.report import write_report_dir

        written = write_report_dir(report_dir, report, rows)
        console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        print_chaos(report, Console(width=max(Console().width, 120)))
    if not report["chaos"]["ok"]:
        sys.exit(1)


def _run_local(spec: Scenario, root: Path, fresh: bool, base_port: int | None,
               options: RunOptions) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from scripts.cli.load.targets import network_from_testnet
    from scripts.cli.testnet.control import LocalNodes
    from scripts.cli.testnet.processes import wait_healthy

    made = None
    if fresh:
        made = _fresh_testnet(spec, root, base_port)
    try:
        control = LocalNodes(root)
        if made is not None:
            for name in control.names():
                control.spawn(name)
            missing = wait_healthy(control.nodes, 90.0)
            if missing:
                raise ChaosError(f"not healthy after 90 s: {', '.join(missing)} (see "
                                 f"{root / 'logs'})")
        network = network_from_testnet(root)
        down = [n.name for n in network.nodes if control.state(n.name) != "running"]
        if down:
            raise ChaosError(f"not running: {', '.join(down)}: `shardnet testnet up --testnet "
                             f"{root}` first (or --fresh)")
        local = LocalFaults(root)
        faults: FaultClient | None = local if all(
            local.available(n.name) for n in network.nodes) else None
        if made is not None:
            _wait_commits(network)
        return run_scenario(spec, control, network, faults, root=root, options=options)
    finally:
        if made is not None:
            stopper = LocalNodes(root)
            for name in stopper.names():
                stopper.terminate(name, timeout_s=10)


def _fresh_testnet(spec: Scenario, root: Path, base_port: int | None) -> Path:
    import shutil

    from scripts.cli.testnet.generate import (
        DEFAULT_BASE_PORT,
        TestnetSpec,
        fresh_identity,
        generate,
    )

    if root.exists():
        if not (root / "testnet.json").exists():
            raise click.ClickException(f"{root} exists and is not a testnet folder: "
                                       "give --testnet a new or testnet folder")
        from scripts.cli.testnet.control import LocalNodes

        existing = LocalNodes(root)
        running = [n for n in existing.names() if existing.state(n) != "stopped"]
        if running:
            raise click.ClickException(f"--fresh would replace {root}, whose nodes run "
                                       f"({', '.join(running)}): `shardnet testnet down "
                                       f"--testnet {root}` first, or another --testnet")
        shutil.rmtree(root)
    testnet = TestnetSpec(spec.shards, spec.validators, 200,
                          base_port=base_port or DEFAULT_BASE_PORT,
                          faults=spec.needs_fault_endpoint)
    generate(fresh_identity(testnet), root)
    return root


def _wait_commits(network: Any, timeout_s: float = 60.0) -> None:
    """A fresh testnet: every shard answers before the clock starts."""
    from scripts.cli.testnet.processes import url_status

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(url_status(n.url) is not None for n in network.nodes):
            return
        time.sleep(0.2)


def _run_compose(spec: Scenario, path: Path, project: str | None, options: RunOptions
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from scripts.cli.load.targets import discover_urls
    from scripts.cli.testnet.control import ComposeNodes

    control = ComposeNodes(path, project)
    urls = [u for n in control.names() if (u := control.api_url(n))]
    if not urls:
        raise ChaosError(f"no node of {path} publishes its API: is the project up?")
    network = discover_urls(urls)
    faults = ComposeFaults(control.container)
    return run_scenario(spec, control, network, faults, root=None, options=options,
                        wipe_container=compose_wiper(control.container))


def print_chaos(report: dict[str, Any], console: Console) -> None:
    chaos_part = report["chaos"]
    table = Table(title=f"chaos {chaos_part['scenario']} (seed {chaos_part['rng_seed']}): "
                        f"{report['sent']:,} sent, {report['committed']:,} committed, "
                        f"{report['tps_committed']:,.1f} tx/s")
    for column in ("#", "t s", "action", "nodes", "recovery s", "heal -> commit s",
                   "view changes", "tx/s before -> min", "dip", "lost", "dup"):
        table.add_column(column, justify="left" if column in ("action", "nodes") else "right",
                         overflow="fold")
    for f in chaos_part["faults"]:
        recovery = "-" if f["recovery_s"] is None else f"{f['recovery_s']:.1f}"
        mark = "" if f["recovered"] else " [red]LATE[/]"
        table.add_row(str(f["fault"]), f"{f['t_s']:.1f}",
                      f["action"] + (f" {f['mode']}" if f["mode"] else ""),
                      ", ".join(f["nodes"]), f"{recovery} (<= {f['recovery_bound_s']:g}){mark}",
                      "-" if f["after_heal_s"] is None else f"{f['after_heal_s']:.1f}",
                      str(f["view_changes"]),
                      f"{_n(f['tps_before'])} -> {_n(f['tps_min'])}",
                      "-" if f["dip_pct"] is None else f"{f['dip_pct']:.0f}%",
                      str(f["lost"]), str(f["duplicated"]))
    console.print(table)
    for name, check in chaos_part["checks"].items():
        verdict = "[green]ok[/]" if check["ok"] else "[red]FAILED[/]"
        detail = ""
        if name == "safety":
            detail = (f"{check['heights_compared']} heights compared, "
                      f"{check['forks_total']} forks, caught up: {check['caught_up']}")
        elif name == "audit":
            detail = (f"{check['lost']} lost, {check['duplicated']} duplicated"
                      + "".join(f"; {p}" for p in check["problems"]))
        elif name == "recovery":
            detail = f"late: {check['late']}" if check["late"] else "every fault in bound"
        elif check["errors"]:
            detail = "; ".join(check["errors"])
        console.print(f"{name}: {verdict} {detail}", highlight=False)
    console.print("[green]PASSED[/]" if chaos_part["ok"] else "[red]FAILED[/]")


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"
