"""``shardnet dashboard``: a live page of a running network on 127.0.0.1.

The network is found as ``shardnet load`` finds it (``scripts/cli/load/targets.py``):
``--testnet DIR`` (a local testnet folder), else ``--url URL`` / ``SHARDNET_URL`` (any
network, a compose one too: one node's URL, the rest from ``GET /v1/network``), else
``testnets/default``. Every failure is one ``Error:`` line, exit 1.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from scripts.cli.exits import UsageFailure
from scripts.cli.load.targets import Network, resolve
from scripts.cli.params import Duration, json_option, testnet_option
from scripts.dashboard.aggregator import Aggregator
from scripts.dashboard.server import DashboardServer

DEFAULT_PORT = 8900
HOST = "127.0.0.1"


@click.command("dashboard", context_settings={"show_default": True})
@testnet_option(default=None)
@click.option("--url", "urls", multiple=True,
              help="A node's API URL (repeatable; a compose network: "
              "http://127.0.0.1:8000); the rest is found by GET /v1/network. "
              "Default: $SHARDNET_URL.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT,
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--interval", type=Duration(positive=True), default="1s",
              help="How often every node's status and metrics are read.")
@click.option("--window", type=Duration(positive=True), default="10m",
              help="How much history is kept.")
@click.option("--once", is_flag=True,
              help="Read every node once, print the snapshot and exit (no server).")
@json_option("With --once: the snapshot as JSON on stdout.")
def dashboard(root: Path | None, urls: tuple[str, ...], port: int, interval: float,
              window: float, once: bool, as_json: bool) -> None:
    """Serve a live page of the network: per shard height, TPS, commit latency, view
    changes, mempool and peers over time, the latest blocks, a transaction search."""
    if as_json and not once:
        raise UsageFailure("--json goes with --once (the server itself has "
                                   "/api/snapshot)")
    if window < interval:
        raise UsageFailure("--window must be at least --interval")
    network = resolve(root, urls)
    if once:
        snapshot = asyncio.run(_once(network, interval, window))
        click.echo(json.dumps(snapshot, indent=2) if as_json else _summary(snapshot))
        return
    asyncio.run(serve(network, port, interval, window))


async def _once(network: Network, interval: float, window: float) -> dict[str, Any]:
    aggregator = Aggregator(network, interval_s=interval, window_s=window)
    try:
        await aggregator.poll_all()
        return aggregator.snapshot()
    finally:
        await aggregator.stop()


def _summary(snapshot: dict[str, Any]) -> str:
    lines = [f"{snapshot['chain_id']}: {snapshot['nodes_up']}/{snapshot['nodes_total']} "
             f"nodes up ({snapshot['source']})"]
    for shard in snapshot["shards"]:
        shown = {k: "-" if v is None else v for k, v in shard.items()}
        lines.append(f"shard {shown['shard']}: height {shown['height']}, view {shown['view']}, "
                     f"view changes {shown['view_changes']}, mempool {shown['mempool']}, "
                     f"peers (min) {shown['peers_min']}, {shown['nodes_up']}/"
                     f"{shown['nodes']} nodes up")
    for node in snapshot["nodes"]:
        if not node["up"]:
            lines.append(f"{node['name']}: unreachable: {node['error']}")
    return "\n".join(lines)


async def serve(network: Network, port: int, interval: float, window: float) -> None:
    """Serve until SIGINT or SIGTERM."""
    aggregator = Aggregator(network, interval_s=interval, window_s=window)
    runner = web.AppRunner(DashboardServer(aggregator).app(), access_log=None,
                           shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise click.ClickException(f"cannot listen on {HOST}:{port}: "
                                   f"{exc.strerror or exc}; choose another --port") from None
    bound = runner.addresses[0][1] if runner.addresses else port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await aggregator.start()
    click.echo(f"dashboard: http://{HOST}:{bound}/  ({network.chain_id}, "
               f"{network.num_shards} shards, {len(network.nodes)} nodes, from "
               f"{network.source}); Ctrl-C stops", err=False)
    try:
        await stop.wait()
    finally:
        await aggregator.stop()
        await runner.cleanup()
