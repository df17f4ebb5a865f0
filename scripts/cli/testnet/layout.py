"""The folder of a local testnet, as the generator writes it and the tools read it.

```
DIR/testnet.json          manifest: chain id, validator-key salt, topology, nodes,
                          endpoints, funded accounts (keep private: the salt gives
                          every validator key)
DIR/genesis.json
DIR/nodes/<node>/         node home: config.toml, node_key.json, genesis.json, data/
DIR/logs/<node>.log       the node's log (JSON lines; rotates to .1 .. .4 at 64 MiB)
DIR/run/<node>.pid        pid of the running node process
DIR/docker-compose.yml    the same testnet for Docker (salt included: keep private)
DIR/docker-stack.yml      its twin for ``docker stack deploy``
```
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class NodeEntry(msgspec.Struct, kw_only=True):
    name: str
    shard: int
    index: int
    api_url: str
    p2p_host: str
    p2p_port: int
    api_port: int


class AccountsEntry(msgspec.Struct, kw_only=True):
    seed: str
    count: int


class Manifest(msgspec.Struct, kw_only=True):
    chain_id: str
    shards: int
    validators: int
    nodes: list[NodeEntry]
    accounts: AccountsEntry
    # Validator keys derive from (seed, salt); "" = seed-only (--deterministic-keys, or
    # a manifest written before salts existed).
    salt: str = ""


def node_name(shard: int, index: int) -> str:
    return f"shard{shard}-node{index}"


class TestnetDir:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / "testnet.json"

    @property
    def genesis_path(self) -> Path:
        return self.root / "genesis.json"

    def home(self, name: str) -> Path:
        return self.root / "nodes" / name

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"

    def load_manifest(self) -> Manifest:
        try:
            return msgspec.json.decode(self.manifest_path.read_bytes(), type=Manifest)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{self.manifest_path} not found: run `shardnet testnet init --testnet {self.root}`"
                " (or give --testnet DIR, or --url URL for a network without a folder)"
            ) from None

    def write_manifest(self, manifest: Manifest) -> None:
        """Owner-only (0600), as the node keys: the salt gives every validator key."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_private(self.manifest_path, msgspec.json.format(msgspec.json.encode(manifest)))


def write_private(path: Path, data: bytes) -> None:
    """``data`` at ``path``, readable by its owner only (created so, never world-readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
