"""Real node processes on 127.0.0.1 for integration tests: start, wait, always stop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from consensus.kernel.codec import encode
from scripts.cli.client import ApiFailure, call
from scripts.cli.params import free_base_port as free_base_port  # re-exported for tests
from scripts.cli.testnet.control import NodeProcesses
from scripts.cli.testnet.generate import TestnetSpec, fresh_identity, generate
from scripts.cli.testnet.layout import Manifest, NodeEntry, TestnetDir
from scripts.cli.testnet.processes import (
    kill_node,
    running_pid,
    start_node,
    stop_node,
    wait_healthy,
)
from sharding.accounts import derive_account, shard_of
from sharding.tx import Transfer, TxBody, sign_tx, tx_hash

CHAIN_ID = "shardnet-local"  # of a seed-only testnet (TestnetSpec's default)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def stop_nodes(testnet: TestnetDir, names: Iterable[str], timeout_s: float = 10.0) -> None:
    """Stop the named nodes at once: each gets SIGTERM (SIGKILL after ``timeout_s``) from
    its own thread, so a testnet stops in about the time of its slowest node rather than
    the sum of them all. Every node is attempted; the first error is raised after."""
    names = list(names)
    NodeProcesses(testnet).terminate_all(names, timeout_s)
    left = [name for name in names if running_pid(testnet, name) is not None]
    assert not left, f"nodes still running after the stop: {left}"


class LocalTestnet:
    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.dir = TestnetDir(root)
        self.manifest = manifest

    def node(self, name: str) -> NodeEntry:
        return next(n for n in self.manifest.nodes if n.name == name)

    def shard_nodes(self, shard: int) -> list[NodeEntry]:
        return [n for n in self.manifest.nodes if n.shard == shard]

    def start(self, name: str) -> None:
        start_node(self.dir, name)

    def stop(self, name: str) -> None:
        stop_node(self.dir, name)

    def kill(self, name: str) -> None:
        kill_node(self.dir, name)

    def status(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = call("GET", f"{self.node(name).api_url}/v1/status", timeout_s=3)
        return result

    def height(self, name: str) -> int:
        try:
            return int(self.status(name)["height"])
        except (OSError, ApiFailure):
            return -1

    def log_text(self, name: str) -> str:
        path = self.dir.log(name)
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def local_testnet(tmp_path: Path, *, shards: int = 1, start_shards: tuple[int, ...] = (0,),
                  accounts: int = 200, timeout_s: float = 60.0, fresh: bool = False,
                  edit_config: Callable[[str], str] | None = None
                  ) -> Iterator[LocalTestnet]:
    """Generate a testnet and start the nodes of ``start_shards``; stop every node after.
    Seed-only keys and chain ``CHAIN_ID``, or with ``fresh`` a random chain id and salt,
    as ``shardnet testnet init`` makes. ``edit_config`` rewrites each config.toml."""
    base = free_base_port(2 * 4 * shards)
    root = tmp_path / "testnet"
    spec = TestnetSpec(shards=shards, validators=4, accounts=accounts, base_port=base)
    manifest = generate(fresh_identity(spec) if fresh else spec, root)
    net = LocalTestnet(root, manifest)
    try:
        nodes = [n for n in manifest.nodes if n.shard in start_shards]
        for node in nodes:
            if edit_config is not None:
                config = net.dir.home(node.name) / "config.toml"
                config.write_text(edit_config(config.read_text()))
            net.start(node.name)
        missing = wait_healthy(nodes, timeout_s)
        if missing:
            raise AssertionError(f"nodes not healthy: {missing}\n" +
                                 net.log_text(missing[0])[-3000:])
        yield net
    finally:
        stop_nodes(net.dir, [node.name for node in manifest.nodes], timeout_s=10)


def signed_transfers(count: int, shard: int, num_shards: int, start_nonce: int = 0,
                     senders: int = 20, first_sender: int = 0, chain_id: str = CHAIN_ID
                     ) -> tuple[list[bytes], list[str]]:
    """``count`` signed transfers for ``chain_id`` from the accounts
    ``first_sender..+senders`` of ``shard`` (nonces from ``start_nonce``), each paying
    the next sender."""
    keys = [derive_account("shardnet", i) for i in range(200)]
    mine = [k for k in keys if shard_of(k.public_key, num_shards) == shard]
    mine = mine[first_sender:first_sender + senders]
    raws, hashes = [], []
    for i in range(count):
        sender, recipient = mine[i % len(mine)], mine[(i + 1) % len(mine)]
        body = TxBody(chain_id, sender.public_key, start_nonce + i // len(mine),
                      Transfer(recipient.public_key, 0, 3))
        tx = sign_tx(sender, body)
        raws.append(encode(tx))
        hashes.append(tx_hash(tx).hex())
    return raws, hashes


def submit(url: str, raws: list[bytes]) -> Any:
    return call("POST", f"{url}/v1/txs", {"txs": [raw.hex() for raw in raws]})


def tx_state(url: str, digest: str) -> str:
    try:
        return str(call("GET", f"{url}/v1/txs/{digest}", timeout_s=3)["status"])
    except ApiFailure as exc:
        return "unknown" if exc.status == 404 else "error"
    except OSError:
        return "unreachable"
