"""``shardnet testnet swarm up|status|load|down``: a testnet folder's stack on Docker
Swarm (docs/SWARM.md; the work is in ``scripts/cli/testnet/swarm.py``)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from scripts.cli import params
from scripts.cli.exits import CheckFailed, Unreachable, UsageFailure
from scripts.cli.params import Duration
from scripts.cli.testnet import swarm as sw
from scripts.cli.testnet.compose_file import NETWORK, render_compose
from scripts.cli.testnet.generate import node_entries
from scripts.cli.testnet.layout import Manifest, TestnetDir, write_private

testnet_option = params.testnet_option()  # --testnet DIR (--dir: hidden alias)
stack_option = click.option("--stack", default=sw.DEFAULT_STACK, show_default=True,
                            help="Stack name (services are STACK_shard0-node0 ...).")
json_option = params.json_option()


def _fail(error: sw.SwarmError) -> NoReturn:
    kind: dict[str, type[click.ClickException]] = {
        "usage": UsageFailure, "unreachable": Unreachable}
    raise kind.get(error.kind, CheckFailed)(str(error))


def _manifest(root: Path) -> Manifest:
    try:
        return TestnetDir(root).load_manifest()
    except FileNotFoundError as exc:
        raise UsageFailure(str(exc)) from None


def _say(as_json: bool) -> Callable[[str], None]:
    """Progress lines: stdout, or stderr when stdout carries the JSON object."""
    return lambda line: click.echo(line, err=as_json)


def _restart_of(root: Path) -> str:
    """The restart policy ``init --restart`` wrote into the folder's stack file."""
    try:
        text = (root / "docker-stack.yml").read_text()
    except OSError:
        return "no"
    found = re.search(r"^ +condition: (none|on-failure|any)$", text, re.M)
    return {"none": "no", "on-failure": "on-failure", "any": "always"}[
        found.group(1) if found else "none"]


@click.group("swarm")
def swarm() -> None:
    """A testnet folder's stack on Docker Swarm: placement, publishing, load (docs/SWARM.md)."""


@swarm.command("up")
@testnet_option
@stack_option
@click.option("--publish", type=click.Choice(("auto", "ingress", "host")), default="auto",
              show_default=True,
              help="API ports through the ingress routing mesh, or in host mode (on the "
              "machine each node runs on). auto: ingress unless this machine cannot run it.")
@click.option("--label/--no-label", "label", default=True, show_default=True,
              help="Spread the validator slots over the swarm's machines (labels "
              "shardnet.slot<i>=true); --no-label keeps labels you set by hand.")
@click.option("--timeout", "timeout_s", type=Duration(positive=True), default="300s",
              show_default=True, help="How long to wait for every node to run and answer.")
@json_option
def up(root: Path, stack: str, publish: str, label: bool, timeout_s: float,
       as_json: bool) -> None:
    """Deploy the folder's stack; return when every node runs and its API answers."""
    say = _say(as_json)
    manifest = _manifest(root)
    spec = sw.spec_of(manifest)
    nodes = node_entries(spec)
    started = time.monotonic()
    try:
        sw.require_manager()
        sw.require_image()
        placement = sw.label_nodes(manifest.validators) if label else {}
        for host, slots in placement.items():
            say(f"machine {host}: validator slots {', '.join(map(str, slots)) or 'none'}")
        if publish == "auto":
            problem = sw.ingress_problem()
            publish = "host" if problem else "ingress"
            if problem:
                say(f"{problem}: publishing the API ports in host mode instead")
        stack_file = sw.stack_file_path(root, publish)
        write_private(stack_file, render_compose(spec, nodes, swarm=True,
                                                 restart=_restart_of(root),
                                                 publish=publish).encode())
        sw.deploy(stack, stack_file)
        say(f"deployed {stack_file} as stack {stack} ({publish} ports); waiting for "
            f"{len(nodes)} nodes")
        missing = sw.wait_running(stack, nodes, timeout_s)
        if missing:
            raise CheckFailed(f"{len(missing)} nodes not running: "
                              + "; ".join(f"{m}: {why}" for m, why in sorted(missing.items()))
                              + f" (`docker stack ps {stack} --no-trunc`, `docker service "
                              f"logs {stack}_shard0-node0`)")
        rows = _node_rows(stack, nodes, deadline=started + timeout_s)
    except sw.SwarmError as error:
        _fail(error)
    silent = [r["node"] for r in rows if r["local"] and not r["answers"]]
    result = {"ok": not silent, "stack": stack, "publish": publish,
              "stack_file": str(stack_file), "placement": placement, "nodes": rows,
              "seconds": round(time.monotonic() - started, 1)}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_rows(rows)
    if silent:
        hint = ("the ingress mesh may be unusable here: `--publish host`"
                if publish == "ingress" else "see `docker service logs`")
        raise CheckFailed(f"{len(silent)} nodes run but their published API ports do not "
                          f"answer on this machine ({', '.join(silent)}): {hint}")
    say(f"stack {stack} up in {result['seconds']} s: {manifest.shards} shards x "
        f"{manifest.validators} validators, chain {manifest.chain_id}")


def _node_rows(stack: str, nodes: list[Any], deadline: float | None) -> list[dict[str, Any]]:
    """Per node: the machine its task runs on, the state, and (for a task on this
    machine) whether its published port answers, waiting until ``deadline``."""
    from scripts.cli.testnet.processes import url_status

    here = sw.docker("info", "--format", "{{.Name}}").stdout.strip()
    urls = sw.published_urls(nodes)

    def snapshot() -> list[dict[str, Any]]:
        placed = {t.service: t for t in sw.tasks(stack)}
        rows = []
        for node in nodes:
            task = placed.get(f"{stack}_{node.name}")
            local = task is not None and task.machine == here
            status = url_status(urls[node.name]) if local else None
            rows.append({"node": node.name, "shard": node.shard,
                         "machine": task.machine if task else None,
                         "state": task.state if task else "no task",
                         "local": local, "url": urls[node.name] if local else None,
                         "answers": status is not None,
                         "height": (status or {}).get("height"),
                         "peers": (status or {}).get("peers")})
        return rows

    rows = snapshot()
    while deadline is not None and time.monotonic() < deadline and any(
            r["local"] and not r["answers"] for r in rows):
        time.sleep(sw.POLL_S)
        rows = snapshot()
    return rows


def _print_rows(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("node", "shard", "machine", "task", "API (this machine)", "height", "peers"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        api = (r["url"] + (" ok" if r["answers"] else " no answer")) if r["local"] else \
            "on another machine"
        table.add_row(r["node"], str(r["shard"]), str(r["machine"] or "-"), r["state"], api,
                      str(r["height"] if r["height"] is not None else "-"),
                      str(r["peers"] if r["peers"] is not None else "-"))
    Console(width=max(Console().width, 120)).print(table)


@swarm.command("status")
@testnet_option
@stack_option
@json_option
def status(root: Path, stack: str, as_json: bool) -> None:
    """Where each node's task runs, its state, and its API where it answers."""
    nodes = node_entries(sw.spec_of(_manifest(root)))
    try:
        sw.require_manager()
        replicas = sw.services(stack)
        if not replicas:
            raise CheckFailed(f"no stack {stack} on this swarm (`shardnet testnet swarm up`)")
        rows = _node_rows(stack, nodes, deadline=None)
    except sw.SwarmError as error:
        _fail(error)
    down = [r["node"] for r in rows if not str(r["state"]).startswith("Running")]
    if as_json:
        click.echo(json.dumps({"ok": not down, "stack": stack, "services": replicas,
                               "nodes": rows}, indent=2))
    else:
        _print_rows(rows)
    if down:
        raise CheckFailed(f"{len(down)} nodes have no running task: {', '.join(down)}")


@swarm.command("load", context_settings={"ignore_unknown_options": True,
                                          "allow_extra_args": True})
@testnet_option
@stack_option
@click.option("--txs", type=click.IntRange(1, 10_000_000), default=400, show_default=True)
@click.option("--rate", "rate_tps", type=click.FloatRange(min=1), default=200.0,
              show_default=True, help="Offered tx/s.")
@click.option("--cross-shard", type=click.FloatRange(0, 1), default=0.2, show_default=True)
@click.option("--timeout", "timeout_s", type=Duration(positive=True), default="600s",
              show_default=True, help="How long the job may take (load, drain, audit).")
@json_option
@click.pass_context
def load(ctx: click.Context, root: Path, stack: str, txs: int, rate_tps: float,
         cross_shard: float, timeout_s: float, as_json: bool) -> None:
    """N transactions from inside the stack's overlay network (a one-off job service: no
    published port needed), then the audit; the report from `docker service logs`.
    Other `shardnet load` options pass on."""
    spec = sw.spec_of(_manifest(root))
    args = ["--txs", str(txs), "--rate", f"{rate_tps:g}", "--cross-shard", f"{cross_shard:g}",
            *ctx.args]
    try:
        sw.require_manager()
        if not sw.services(stack):
            raise CheckFailed(f"no stack {stack} on this swarm (`shardnet testnet swarm up`)")
        _say(as_json)(f"load job on {stack}_{NETWORK}: {txs} txs at {rate_tps:g} tx/s, "
                      f"cross-shard {cross_shard:.0%}")
        outcome = sw.load_job(stack, spec, args, timeout_s)
    except sw.SwarmError as error:
        _fail(error)
    report = outcome["report"]
    audit = report.get("audit") or {}
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        commit = report["latency_ms"]["commit"]
        click.echo(f"load: {report['committed']}/{report['sent']} committed "
                   f"({report['cross_shard']} cross-shard), {report['tps_committed']} tx/s, "
                   f"commit p50 {commit.get('p50')} ms p99 {commit.get('p99')} ms")
        click.echo(f"audit: {'ok' if audit.get('ok') else 'FAILED'}: {audit.get('lost')} lost, "
                   f"{audit.get('duplicated')} duplicated, conservation "
                   f"{'ok' if audit.get('conservation_ok') else 'not ok'}"
                   + (f"; {'; '.join(audit.get('problems') or [])}"
                      if audit.get("problems") else ""))
    if not audit.get("ok"):
        raise CheckFailed(f"the audit failed (job {outcome['service']}: {outcome['state']})")


@swarm.command("down")
@stack_option
@click.option("--keep-volumes", is_flag=True, help="Keep the nodes' volumes (chain state).")
@click.option("--timeout", "timeout_s", type=Duration(positive=True), default="120s",
              show_default=True)
@json_option
def down(stack: str, keep_volumes: bool, timeout_s: float, as_json: bool) -> None:
    """`docker stack rm`, wait until its containers and network are gone, remove its
    volumes on this machine (each other machine keeps its own: docs/SWARM.md)."""
    try:
        sw.require_manager()
        result = sw.remove(stack, timeout_s, keep_volumes)
    except sw.SwarmError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"removed stack {stack}: {len(result['volumes_removed'])} volumes removed"
                   + (f", {result['containers_left']} containers still stopping"
                      if result["containers_left"] else "")
                   + (", its network still there" if result["network_left"] else ""))
    if result["containers_left"] or result["network_left"]:
        raise CheckFailed(f"stack {stack} not gone after {timeout_s:g} s")
