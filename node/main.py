"""``shardnet node``: the production composition root. Builds a node's parts from
its home folder (libp2p host, SQLite store, worker processes, a thread per pool)
and runs the node until a signal or a fault (CometBFT's node/setup.go is the model).
"""

from __future__ import annotations

import asyncio
import faulthandler
import random
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click
import structlog

from consensus.kernel.crypto import KeyPair
from consensus.kernel.errors import ShardnetError
from node.config import ConfigError, NodeConfig, load_config
from node.keys import load_node_key
from node.logs import configure_logging
from node.node import Node, check_identity, node_name
from node.p2p.config import P2PConfig, PeerSpec
from node.p2p.host import P2PHost
from node.parts import NodeParts, SystemClock, process_executor, thread_offload
from node.store import Store
from node.wire import TOPIC_BLOCKS
from sharding.genesis import Genesis, load_genesis

DB_FILE = "shard.sqlite"

# ``Node`` lives in node/node.py; importing it from here (the contract's first home) works.
__all__ = ["Node", "build_production_parts", "load_node", "node_command", "run_node",
           "setup_logging", "start_node"]


def resolve(address: str) -> str:
    """``host:port`` with the host resolved by the system resolver (/etc/hosts, Docker DNS)."""
    host, _, port = address.rpartition(":")
    try:
        ip = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
    except OSError:
        return address
    return f"{ip}:{port}"


def p2p_config(config: NodeConfig, genesis: Genesis, key: KeyPair) -> P2PConfig:
    """The libp2p host's settings: every other genesis validator is a peer."""
    p2p = config.p2p
    peers = tuple(PeerSpec(resolve(v.p2p_address), public_key=v.public_key)
                  for shard_validators in genesis.validators for v in shard_validators
                  if v.public_key != key.public_key)
    own = genesis.validators[config.node.shard][config.node.index].p2p_address
    announce_host = p2p.announce_host or own.rpartition(":")[0]
    return P2PConfig(
        private_key_seed=key.private_bytes,
        listen_host=p2p.listen_host, listen_port=p2p.listen_port,
        announce_host=resolve(f"{announce_host}:0").rpartition(":")[0],
        announce_port=p2p.listen_port or None,
        peers=peers, gossip_topics=(TOPIC_BLOCKS,),
        write_timeout_s=p2p.write_timeout_ms / 1000,
        heartbeat_interval_s=p2p.heartbeat_interval_ms / 1000,
        heartbeat_timeout_s=5 * p2p.heartbeat_interval_ms / 1000,
        dial_backoff_min_s=p2p.dial_backoff_min_ms / 1000,
        dial_backoff_max_s=p2p.dial_backoff_max_ms / 1000,
        frame_bytes_max=p2p.frame_bytes_max,
        accept_unknown_peers=p2p.accept_unknown_peers,
        **emulated_network(config),
    )


def emulated_network(config: NodeConfig) -> dict[str, Any]:
    """The p2p layer's userspace emulation settings (``[net_emulation]``): none unless
    its mode is ``userspace`` (``netem``: the kernel already delays our packets)."""
    emulation = config.net_emulation
    if emulation.mode != "userspace":
        return {}
    return {"emulated_latency_s": emulation.latency_ms / 1000,
            "emulated_rate_bit": emulation.bandwidth_bits_per_s}


async def build_production_parts(config: NodeConfig, genesis: Genesis, key: KeyPair
                                 ) -> NodeParts:
    """libp2p, SQLite in the home's data folder, worker processes, a thread per pool."""
    store = await Store.open(config.path(config.node.data_dir) / DB_FILE)
    log = structlog.get_logger().bind(node=node_name(config), shard=config.node.shard)
    return NodeParts(
        p2p=P2PHost(p2p_config(config, genesis, key), log), store=store, clock=SystemClock(),
        executor=process_executor(config.executor.workers), offload=thread_offload,
        rng=random.Random(), serve_http=True)


async def load_node(config: NodeConfig) -> Node:
    """The node of a home folder (``config`` was read from it): genesis, key, parts."""
    genesis = load_genesis(config.path(config.node.genesis))
    key = load_node_key(config.path(config.node.key_file))
    check_identity(config, genesis, key)
    parts = await build_production_parts(config, genesis, key)
    try:
        node = Node(config, genesis, key, parts)
    except BaseException:
        await parts.store.close()
        raise
    node.metrics.watch_store_files(config.path(config.node.data_dir) / DB_FILE)
    return node


async def start_node(config: NodeConfig) -> Node:
    """Load and start; any failure but a config error is logged as ``node.start_failed``."""
    log = structlog.get_logger().bind(node=node_name(config), shard=config.node.shard)
    try:
        node = await load_node(config)
    except ConfigError:
        raise
    except BaseException as exc:
        log.error("node.start_failed", error=repr(exc))
        raise
    try:
        await node.start()
    except BaseException as exc:
        node.log.error("node.start_failed", error=repr(exc))
        await node.stop()
        raise
    return node


async def wait_for_end(node: Node, host: P2PHost) -> bool:
    """Until SIGTERM/SIGINT (False), or the driver or the p2p thread died (True: a
    node whose p2p thread died cannot take part; better halt than serve a stale view)."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    stop_wait = asyncio.ensure_future(stopped.wait())
    p2p_ended = asyncio.ensure_future(host.wait_ended())
    driver = node.driver_task
    watched: set[asyncio.Future[Any]] = {driver, stop_wait, p2p_ended}
    done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()
    p2p_ended.cancel()
    if driver in done and driver.exception() is not None:
        node.log.error("node.halted", error=repr(driver.exception()))
        return True
    if p2p_ended in done:
        node.log.error("node.halted", error=f"p2p thread ended: {host.crashed!r}")
        return True
    return False


async def run_node(config: NodeConfig) -> None:
    """Run until SIGTERM/SIGINT (exit 0), or until the driver or the p2p thread dies
    (``node.halted``, exit 1: the supervisor restarts the node)."""
    node = await start_node(config)
    host = node.p2p
    if not isinstance(host, P2PHost):  # build_production_parts gives one
        raise TypeError(f"production p2p is a P2PHost, not {type(host).__name__}")
    halted = await wait_for_end(node, host)
    await node.stop()
    if halted:
        raise SystemExit(1)


def setup_logging(config: NodeConfig, log_format: str | None = None,
                  log_level: str | None = None, log_file: Path | None = None) -> None:
    """The node's logging from its ``[log]`` section (the command line overrides format,
    level and file): stdout or a rotating file, and the rotating trace file."""
    section = config.log
    file = log_file or (config.path(section.file) if section.file else None)
    configure_logging(
        log_format or section.format, log_level or section.level,  # type: ignore[arg-type]
        file=file, file_bytes_max=section.file_bytes_max, file_backups=section.file_backups,
        trace_file=config.path(section.trace_file) if section.trace_file else None,
        trace_bytes_max=section.trace_file_bytes_max, trace_backups=section.trace_file_backups,
        context={"node": node_name(config), "shard": config.node.shard})


@click.command("node")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Node home: config.toml, node_key.json, genesis.json, data/.")
@click.option("--log-format", type=click.Choice(["json", "console"]), default=None,
              help="Override [log] format.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default=None, help="Override [log] level.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Override [log] file: write the log to this rotating file, not stdout.")
def node_command(home: Path, log_format: str | None, log_level: str | None,
                 log_file: Path | None) -> None:
    """Run one validator node."""
    try:
        config = load_config(home)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    setup_logging(config, log_format, log_level, log_file)
    sys.setswitchinterval(0.001)
    # A crash in a C extension (a segfault) leaves the Python stack of every thread in
    # the node's log instead of a silent exit.
    faulthandler.enable()
    try:
        asyncio.run(run_node(config))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except (ShardnetError, OSError) as exc:
        # Genesis, key, store (locked, another genesis) and p2p start-up failures:
        # one line naming the reason, no traceback (node.start_failed is logged too).
        reason = getattr(exc, "reason", type(exc).__name__)
        raise click.ClickException(f"cannot start the node: {reason}: {exc}") from None
