"""The testnet generator: keys, genesis, per-node configs and the compose file.

Everything is derived from (seed, shards, validators), so the same command gives
the same testnet on any machine: a local folder of node homes, or, inside each
container of the compose file, that container's own home (``docker-node``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.kernel.crypto import KeyPair
from node.config import NodeConfig, parse_config, render_config
from node.keys import write_node_key
from scripts.cli.testnet.layout import AccountsEntry, Manifest, NodeEntry, TestnetDir, node_name
from sharding.genesis import load_genesis

DEFAULT_SEED = "shardnet"
DEFAULT_BASE_PORT = 26600
DOCKER_P2P_PORT = 26656
DOCKER_API_PORT = 8000
DOCKER_API_HOST_BASE = 8000
ASSETS = ("COIN", "USD", "ETH")
ACCOUNT_BALANCE = 1_000_000_000_000
POOL_RESERVE = 1_000_000_000_000_000
POOLS = (("COIN-USD", ("COIN", "USD")), ("ETH-USD", ("ETH", "USD")), ("COIN-ETH", ("COIN", "ETH")))


@dataclass(frozen=True)
class TestnetSpec:
    __test__ = False  # not a pytest test class, despite the name

    shards: int = 2
    validators: int = 4
    accounts: int = 1000
    seed: str = DEFAULT_SEED
    base_port: int = DEFAULT_BASE_PORT
    chain_id: str = "shardnet-local"
    docker: bool = False

    def check(self) -> None:
        if self.shards < 1:
            raise ValueError("--shards must be >= 1")
        if self.validators < 4 or (self.validators - 1) % 3:
            raise ValueError("--validators must be 3f+1 with f >= 1 (4, 7, 10, ...)")
        if self.accounts < 1:
            raise ValueError("--accounts must be >= 1")
        if self.accounts * ACCOUNT_BALANCE + POOL_RESERVE * 2 >= 2**64:
            raise ValueError("--accounts too large: total supply must fit in a u64")


def validator_key(seed: str, shard: int, index: int) -> KeyPair:
    return KeyPair.derive(f"{seed}/validator/{shard}", index)


def node_entries(spec: TestnetSpec) -> list[NodeEntry]:
    entries = []
    for shard in range(spec.shards):
        for index in range(spec.validators):
            k = shard * spec.validators + index
            name = node_name(shard, index)
            if spec.docker:
                entries.append(NodeEntry(
                    name=name, shard=shard, index=index,
                    api_url=f"http://127.0.0.1:{DOCKER_API_HOST_BASE + k}",
                    p2p_host=name, p2p_port=DOCKER_P2P_PORT, api_port=DOCKER_API_PORT))
            else:
                p2p_port = spec.base_port + 2 * k
                entries.append(NodeEntry(
                    name=name, shard=shard, index=index,
                    api_url=f"http://127.0.0.1:{p2p_port + 1}",
                    p2p_host="127.0.0.1", p2p_port=p2p_port, api_port=p2p_port + 1))
    return entries


def genesis_document(spec: TestnetSpec, nodes: list[NodeEntry]) -> dict[str, Any]:
    validators: list[list[dict[str, Any]]] = [[] for _ in range(spec.shards)]
    for node in nodes:
        api_host = node.p2p_host if spec.docker else "127.0.0.1"
        validators[node.shard].append({
            "index": node.index,
            "public_key": validator_key(spec.seed, node.shard, node.index).public_key.hex(),
            "p2p_address": f"{node.p2p_host}:{node.p2p_port}",
            "api_address": f"{api_host}:{node.api_port}",
        })
    return {
        "chain_id": spec.chain_id,
        "num_shards": spec.shards,
        "genesis_time_ms": 0,
        "assets": [{"id": i, "name": name} for i, name in enumerate(ASSETS)],
        "validators": validators,
        "accounts": [{"seed": spec.seed, "count": spec.accounts,
                      "balances": {name: ACCOUNT_BALANCE for name in ASSETS}}],
        "pools": [{"name": name, "assets": list(pair), "reserves": [POOL_RESERVE, POOL_RESERVE]}
                  for name, pair in POOLS],
    }


def node_config(spec: TestnetSpec, node: NodeEntry, nodes: list[NodeEntry]) -> NodeConfig:
    """``node``'s config; every node of ``nodes`` advertises its manifest ``api_url``
    (in Docker, the port published on the host)."""
    listen = "0.0.0.0" if spec.docker else "127.0.0.1"
    advertise = [[n.api_url for n in nodes if n.shard == shard] for shard in range(spec.shards)]
    text = (
        f'[node]\nshard = {node.shard}\nindex = {node.index}\nname = "{node.name}"\n'
        f'[p2p]\nlisten_host = "{listen}"\nlisten_port = {node.p2p_port}\n'
        f'announce_host = "{node.p2p_host}"\n'
        f'[api]\nhost = "{listen}"\nport = {node.api_port}\n'
        f'advertise_urls = {json.dumps(advertise)}\n'
    )
    return parse_config(text)


def generate(spec: TestnetSpec, root: Path, only: str | None = None) -> Manifest:
    """Write the testnet under ``root`` (every node, or just ``only``'s home)."""
    spec.check()
    testnet = TestnetDir(root)
    nodes = node_entries(spec)
    genesis = genesis_document(spec, nodes)
    load_genesis(genesis)  # the generator never writes a genesis the nodes would refuse
    genesis_bytes = (json.dumps(genesis, indent=2) + "\n").encode()
    manifest = Manifest(chain_id=spec.chain_id, shards=spec.shards, validators=spec.validators,
                        nodes=nodes, accounts=AccountsEntry(seed=spec.seed, count=spec.accounts))
    root.mkdir(parents=True, exist_ok=True)
    testnet.genesis_path.write_bytes(genesis_bytes)
    for node in nodes:
        if only is not None and node.name != only:
            continue
        home = testnet.home(node.name)
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(render_config(node_config(spec, node, nodes)))
        (home / "genesis.json").write_bytes(genesis_bytes)
        write_node_key(home / "node_key.json", validator_key(spec.seed, node.shard, node.index))
    testnet.write_manifest(manifest)
    if not spec.docker:
        from scripts.cli.testnet.compose_file import render_compose

        docker_spec = TestnetSpec(spec.shards, spec.validators, spec.accounts, spec.seed,
                                  spec.base_port, spec.chain_id, docker=True)
        docker_nodes = node_entries(docker_spec)
        (root / "docker-compose.yml").write_text(render_compose(docker_spec, docker_nodes))
        (root / "docker-stack.yml").write_text(render_compose(docker_spec, docker_nodes,
                                                              swarm=True))
    return manifest
