"""``shardnet testnet``: init, up, down, status, and the Docker entry points."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import click

from scripts.cli.exits import CheckFailed, Unreachable, UsageFailure
from scripts.cli.params import DEFAULT_TESTNET, json_option, testnet_option, urls_option
from scripts.cli.testnet.compose_file import RESTART_POLICIES
from scripts.cli.testnet.control import LocalNodes, NodeProcesses
from scripts.cli.testnet.control_cli import COMMANDS as CONTROL_COMMANDS
from scripts.cli.testnet.control_cli import local_nodes as _local_nodes
from scripts.cli.testnet.emulation import (
    Emulation,
    EmulationError,
    drop_privileges,
    emulation_of,
    emulation_param,
    entry_logger,
    userspace_part,
    userspace_settings,
)
from scripts.cli.testnet.emulation import apply as apply_emulation
from scripts.cli.testnet.emulation import from_env as emulation_from_env
from scripts.cli.testnet.generate import (
    DEFAULT_BASE_PORT,
    DEFAULT_SEED,
    TestnetSpec,
    fresh_identity,
    generate,
    spec_from_env,
)
from scripts.cli.testnet.layout import TestnetDir
from scripts.cli.testnet.load import load as load_command
from scripts.cli.testnet.processes import node_status, url_status, wait_healthy
from scripts.cli.testnet.swarm_cli import swarm as swarm_command

DEFAULT_DIR = DEFAULT_TESTNET
dir_option = testnet_option()  # --testnet DIR (--dir: hidden alias)


def _say(as_json: bool, message: str) -> None:
    """A human line: on stdout, or on stderr when stdout carries the JSON."""
    click.echo(message, err=as_json)


@click.group("testnet")
def testnet() -> None:
    """Generate, start, stop and watch a local testnet."""


@testnet.command("init")
@click.option("--shards", type=int, default=2, show_default=True)
@click.option("--validators", type=int, default=4, show_default=True, help="Per shard (3f+1).")
@dir_option
@click.option("--accounts", type=int, default=1000, show_default=True,
              help="Funded accounts (indices 0..N-1 of --seed).")
@click.option("--seed", default=DEFAULT_SEED, show_default=True)
@click.option("--base-port", type=int, default=DEFAULT_BASE_PORT, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing testnet (its data too).")
@click.option("--deterministic-keys", is_flag=True,
              help="Validator keys from --seed alone and chain id shardnet-local, for "
              "reproducible tests: anyone can sign as these validators. Default: a random "
              "chain id and a random validator-key salt (in testnet.json).")
@click.option("--faults", is_flag=True,
              help="For chaos testing only: every node gets `[faults] enabled = true`, a "
              "fault endpoint on 127.0.0.1 (link faults, byzantine modes; `shardnet chaos`).")
@json_option()
@click.option("--cpus-per-node", type=float, default=None, callback=emulation_param,
              help="Emulate separate machines: each compose node limited to X CPUs.")
@click.option("--latency", default=None, callback=emulation_param,
              help="Emulate separate machines: one-way delay added to every node's p2p "
              "traffic, e.g. 20ms (compose: tc netem, else the node itself; local "
              "processes: the node itself).")
@click.option("--bandwidth", default=None, callback=emulation_param,
              help="Emulate separate machines: each node's network rate, e.g. 1gbit "
              "(compose: tc, else the node itself; local processes: the node itself).")
@click.option("--restart", type=click.Choice(RESTART_POLICIES), default="no",
              show_default=True,
              help="Restart policy of the node containers in the generated compose files. "
              "`no` keeps a crashed node down, so a crash fault shows instead of hiding "
              "behind a restart.")
def init(shards: int, validators: int, root: Path, accounts: int, seed: str, base_port: int,
         force: bool, deterministic_keys: bool, faults: bool,
         cpus_per_node: float | None, latency: int | None, bandwidth: int | None,
         as_json: bool,
         restart: str) -> None:
    """Write keys, genesis, node configs and a compose file for a topology."""
    if (root / "testnet.json").exists() and not force:
        raise UsageFailure(f"{root} already holds a testnet (use --force to replace)")
    _refuse_while_running(root, "replace it")
    if force and root.exists():
        import shutil

        shutil.rmtree(root)
    try:
        spec = TestnetSpec(shards, validators, accounts, seed, base_port, faults=faults,
                           **userspace_settings(Emulation(delay_ms=latency, rate_bit=bandwidth)))
        spec = spec if deterministic_keys else fresh_identity(spec)
        manifest = generate(spec, root)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    emulation = emulation_of(cpus_per_node, latency, bandwidth)
    if restart != "no" or emulation is not None:
        _write_compose_files(spec, root, restart, emulation)
    if as_json:
        click.echo(json.dumps({"testnet": str(root), "chain_id": manifest.chain_id,
                               "shards": shards, "validators": validators,
                               "nodes": [n.name for n in manifest.nodes]}, indent=2))
        return
    click.echo(f"wrote {len(manifest.nodes)} nodes ({shards} shards x {validators}) to {root}, "
               f"chain {manifest.chain_id}" + (", fault endpoints on" if faults else ""))


def running_nodes(root: Path) -> list[str]:
    """The nodes of the folder ``root`` whose process runs (``control.py`` tells, from the
    pid files: no manifest needed)."""
    processes = NodeProcesses(TestnetDir(root))
    run = TestnetDir(root).pid_file("x").parent
    names = sorted(path.stem for path in run.glob("*.pid")) if run.is_dir() else []
    return [name for name in names if processes.process(name) is not None]


def _refuse_while_running(root: Path, action: str) -> None:
    if running := running_nodes(root):
        raise CheckFailed(
            f"{len(running)} nodes of {root} are running ({', '.join(running)}): stop them "
            f"first (`shardnet testnet down --testnet {root}`), then {action}")


def _write_compose_files(spec: TestnetSpec, root: Path, restart: str,
                         emulation: Emulation | None = None) -> None:
    """The folder's compose files again, with another restart policy or (the compose
    file) emulating separate machines."""
    from scripts.cli.testnet.compose_file import render_compose
    from scripts.cli.testnet.generate import node_entries
    from scripts.cli.testnet.layout import write_private

    docker_spec = replace(spec, docker=True)
    docker_nodes = node_entries(docker_spec)
    write_private(root / "docker-compose.yml",
                  render_compose(docker_spec, docker_nodes, restart=restart,
                                 emulation=emulation).encode())
    write_private(root / "docker-stack.yml",
                  render_compose(docker_spec, docker_nodes, swarm=True,
                                 restart=restart).encode())


@testnet.command("reset")
@dir_option
@json_option()
def reset(root: Path, as_json: bool) -> None:
    """Clear the chain state of every node (its data folder); keep keys, configs, genesis,
    manifest and logs: the same testnet restarts from height 0."""
    testnet_dir = TestnetDir(root)
    if not testnet_dir.manifest_path.exists():
        raise UsageFailure(f"{testnet_dir.manifest_path} not found: no testnet in {root}")
    _refuse_while_running(root, "reset")
    import shutil

    cleared = []
    for node in _local_nodes(root).nodes:
        data = testnet_dir.home(node.name) / "data"
        if data.exists():
            shutil.rmtree(data)
            cleared.append(node.name)
    if as_json:
        click.echo(json.dumps({"testnet": str(root), "cleared": cleared}))
        return
    click.echo(f"cleared the chain state of {len(cleared)} nodes in {root}; keys, configs "
               f"and genesis kept (start: shardnet testnet up --testnet {root})")


@testnet.command("up")
@dir_option
@click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True)
@json_option()
def up(root: Path, timeout_s: float, as_json: bool) -> None:
    """Start every node as a local process; return when all answer."""
    testnet_dir = TestnetDir(root)
    if not testnet_dir.manifest_path.exists():
        generate(fresh_identity(TestnetSpec()), root)
        _say(as_json, f"generated the default testnet (2 shards x 4 validators) in {root}")
    nodes = _local_nodes(root)
    manifest = nodes.manifest
    started = time.monotonic()
    for node in manifest.nodes:
        if nodes.state(node.name) == "paused":
            nodes.resume(node.name)
        nodes.spawn(node.name)
    missing = wait_healthy(manifest.nodes, timeout_s)
    if missing:
        raise CheckFailed(
            f"not healthy after {timeout_s:.0f}s: {', '.join(missing)}; see "
            f"`shardnet logs --testnet {root} --node {missing[0]}`")
    if as_json:
        click.echo(json.dumps({"testnet": str(root), "chain_id": manifest.chain_id,
                               "shards": manifest.shards, "validators": manifest.validators,
                               "up_s": round(time.monotonic() - started, 3),
                               "nodes": [{"name": n.name, "shard": n.shard,
                                          "api_url": n.api_url} for n in manifest.nodes],
                               "accounts": {"seed": manifest.accounts.seed,
                                            "count": manifest.accounts.count}}, indent=2))
        return
    click.echo(f"testnet up in {time.monotonic() - started:.1f}s: {manifest.shards} shards x "
               f"{manifest.validators} validators, chain {manifest.chain_id}\n")
    click.echo("API endpoints")
    for node in manifest.nodes:
        click.echo(f"  {node.name:<14} {node.api_url}")
    click.echo(f"\nFunded accounts: indices 0..{manifest.accounts.count - 1} of seed "
               f"{manifest.accounts.seed!r}, each with 1,000,000,000,000 of COIN, USD, ETH")
    click.echo(f"  key of account 0: shardnet keys --seed {manifest.accounts.seed} --index 0")
    click.echo(f"\nLogs: {root / 'logs'}  (shardnet logs --testnet {root} -f)")
    click.echo(f"Stop: shardnet testnet down --testnet {root}")


@testnet.command("down")
@dir_option
@json_option()
def down(root: Path, as_json: bool) -> None:
    """Stop every node (SIGTERM, then SIGKILL after a grace period). State is kept."""
    nodes = _local_nodes(root)
    stopped = nodes.terminate_all(nodes.names())
    if as_json:
        click.echo(json.dumps({"testnet": str(root), "stopped": stopped}))
        return
    click.echo(f"stopped {len(stopped)} nodes" + (f": {', '.join(stopped)}" if stopped else ""))


@testnet.command("status")
@testnet_option(default=None)
@urls_option()
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl-C (with --json: "
              "one JSON line per refresh).")
@click.option("--count", type=int, default=0, help="With --watch: stop after N refreshes.")
@json_option("The nodes as JSON on stdout: chain_id, source and per node its shard, pid, "
             "state and status (null: no answer).")
def status(root: Path | None, urls: tuple[str, ...], watch: bool, count: int,
           as_json: bool) -> None:
    """A table of every node: shard, view, primary, height, mempool, peers, TPS.

    Exits 0 when every node answers, 1 when some do not (stopped, paused, crashed or
    hung: each named in one line on stderr), 3 when none does; with --watch, as the
    last refresh found them."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from scripts.cli.load.targets import NodeTarget, discover_if_asked

    network = discover_if_asked(root, urls)
    local: LocalNodes | None = None
    if network is not None:
        chain_id, source, nodes = network.chain_id, network.source, list(network.nodes)
    else:
        root = root or DEFAULT_DIR
        local = _local_nodes(root)
        manifest = local.manifest
        chain_id, source = manifest.chain_id, str(root)
        nodes = [NodeTarget(n.name, n.shard, n.index, n.api_url.rstrip("/"))
                 for n in manifest.nodes]

    silent: list[str] = []  # the nodes that did not answer at the last look

    def snapshot() -> dict[str, object]:
        rows = []
        for node in nodes:
            found = url_status(node.url)
            rows.append({"name": node.name, "shard": node.shard, "url": node.url,
                         "pid": local.pid(node.name) if local is not None else None,
                         "state": (local.state(node.name) if local is not None else
                                   ("running" if found is not None else None)),
                         "status": found})
        silent[:] = [str(row["name"]) for row in rows if row["status"] is None]
        return {"chain_id": chain_id, "source": source, "nodes": rows}

    if as_json:
        refreshes = 0
        try:
            while True:
                click.echo(json.dumps(snapshot(), indent=None if watch else 2))
                refreshes += 1
                if not watch or (count and refreshes >= count):
                    break
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        _status_exit(silent, len(nodes))
        return

    def table() -> Table:
        grid = Table(title=f"shardnet {chain_id}: {source}")
        for column in ("node", "shard", "pid", "view", "primary", "height", "mempool",
                       "peers", "tps", "view changes"):
            grid.add_column(column, justify="right" if column != "node" else "left",
                            no_wrap=True)
        silent.clear()
        for node in nodes:
            found = url_status(node.url)
            pid = local.pid(node.name) if local is not None else None
            if found is None:
                silent.append(node.name)
                state = local.state(node.name) if local is not None else None
                down = {None: "no answer", "stopped": "down", "paused": "paused"}.get(state, "?")
                grid.add_row(node.name, str(node.shard), str(pid or "-"), down, *["-"] * 6)
                continue
            grid.add_row(node.name, str(node.shard), str(pid or "-"),
                         *(str(found.get(key, "-")) for key in (
                             "view", "primary", "height", "mempool", "peers", "recent_tps")),
                         str(found.get("view_changes", 0)))
        return grid

    console = Console(width=max(Console().width, 110))
    if not watch:
        console.print(table())
        _status_exit(silent, len(nodes))
        return
    refreshes = 0
    with Live(table(), console=console, refresh_per_second=2) as live:
        try:
            while count == 0 or refreshes < count:
                time.sleep(1.0)
                live.update(table())
                refreshes += 1
        except KeyboardInterrupt:
            pass
    _status_exit(silent, len(nodes))


def _status_exit(silent: list[str], total: int) -> None:
    """``testnet status``'s exit: 0 all answer, 1 some do not, 3 none does (exits.py),
    so a script can wait on ``shardnet testnet status`` as on a health check."""
    if not silent:
        return
    if len(silent) == total:
        raise Unreachable(f"none of the {total} nodes answers: start the testnet with "
                          "`shardnet testnet up` (or check --testnet / --url)")
    raise CheckFailed(f"{len(silent)} of {total} nodes do not answer: {', '.join(silent)} "
                      "(`shardnet testnet start NODE` or `resume NODE`; `shardnet logs "
                      "--node NODE`)")


testnet.add_command(load_command)
testnet.add_command(swarm_command)  # swarm up, status, load, down (docs/SWARM.md)
for _control in CONTROL_COMMANDS:  # start, stop, kill, restart, pause, resume, (dis)connect
    testnet.add_command(_control)


def _spec_from_env() -> TestnetSpec:
    return spec_from_env(os.environ)


@testnet.command("docker-node", hidden=True)
@click.option("--data", type=click.Path(path_type=Path), default=Path("/data"))
def docker_node(data: Path) -> None:
    """Container entry point: derive this node's home from the environment, run it."""
    name = os.environ.get("SHARDNET_NODE")
    if not name:
        raise UsageFailure("SHARDNET_NODE is not set (e.g. shard0-node0)")
    # Emulating a separate machine (testnet init --latency/--bandwidth): the qdisc
    # first, as root with NET_ADMIN, then the image's unprivileged user for the rest.
    # What the kernel cannot apply (no netem, no tc), the node does in userspace.
    try:
        asked = emulation_from_env(os.environ)
        outcome = apply_emulation(asked, entry_logger())
    except EmulationError as exc:
        raise UsageFailure(str(exc)) from None
    drop_privileges()
    root = data / "testnet"
    fallback = userspace_part(asked, outcome)
    net = (userspace_settings(fallback) if fallback.shapes_network else
           {"net_mode": "netem", "net_latency_ms": asked.delay_ms or 0,
            "net_rate_bit": asked.rate_bit or 0} if asked.shapes_network else {})
    generate(replace(_spec_from_env(), **net), root, only=name)
    home = TestnetDir(root).home(name)
    os.execvp("shardnet", ["shardnet", "node", "--home", str(home)])


@testnet.command("docker-load", hidden=True, context_settings={"ignore_unknown_options": True,
                                                 "allow_extra_args": True})
@click.option("--txs", type=click.IntRange(1, 10_000_000), default=200, show_default=True)
@click.option("--rate", "rate_tps", type=click.FloatRange(min=1), default=200.0,
              show_default=True)
@click.option("--timeout", "timeout_s", type=float, default=120.0, show_default=True,
              help="How long to wait for every node to answer.")
@click.pass_context
def docker_load(ctx: click.Context, txs: int, rate_tps: float, timeout_s: float) -> None:
    """Container entry point of the compose `loadgen` service: wait for the nodes, then
    `shardnet load` at them from inside the network (other options pass on)."""
    from scripts.cli.testnet.generate import node_entries
    from scripts.cli.testnet.load import load_args, run_load
    from scripts.cli.testnet.processes import wait_for

    nodes = node_entries(_spec_from_env())
    for node in nodes:
        node.api_url = f"http://{node.name}:{node.api_port}"
    if not wait_for(lambda: all(node_status(node) is not None for node in nodes), timeout_s,
                    interval_s=1.0):
        raise Unreachable(f"nodes did not answer within {timeout_s:g} s")
    # One URL is enough: /v1/network advertises the host's published ports, and each
    # node's genesis api_address (its service name) where those do not answer.
    run_load(["--url", nodes[0].api_url, *load_args(txs, rate_tps, ctx.args)],
             "shardnet testnet docker-load")
