"""The testnet generator: keys, genesis, per-node configs and the compose file.

Everything is derived from (seed, salt, chain id, shards, validators), so the same
spec gives the same testnet on any machine: a local folder of node homes, or, inside
each container of the compose file, that container's own home (``docker-node``,
from the ``SHARDNET_*`` environment: ``spec_from_env``).

Each ``shardnet testnet init`` draws a fresh identity (``fresh_identity``): a random
chain id, so a transaction signed for one testnet is refused by every other one
(``wrong_chain``), and a random salt that every validator key is derived from, so
nobody who knows the (public) seed can sign as a validator. The salt is secret: it
is in the manifest and the generated compose files, never in the genesis (which
``GET /v1/network`` serves). Funded accounts stay derived from the seed alone: any
wallet or load generator knows them. A spec with no salt (the dataclass default,
``init --deterministic-keys``) has seed-only validator keys and the chain id
``shardnet-local``: reproducible, for tests. The committed root compose files use
``DEV_SALT``, public: for a local Docker testnet only (``dev_spec``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from consensus.kernel.crypto import KeyPair
from node.config import NodeConfig, parse_config, render_config
from node.keys import write_node_key
from scripts.cli.testnet.layout import (
    AccountsEntry,
    Manifest,
    NodeEntry,
    TestnetDir,
    node_name,
    write_private,
)
from sharding.genesis import find_pool_name, load_genesis

DEFAULT_SEED = "shardnet"
LOCAL_CHAIN_ID = "shardnet-local"  # seed-only testnets (--deterministic-keys, tests)
# The committed docker-compose.yml / docker-stack.yml: a fixed, public salt, so the files
# stay reproducible. Anyone can derive those validator keys: local development only.
DEV_SALT = "shardnet-dev-public-salt"
DEV_CHAIN_ID = "shardnet-dev"
SALT_BYTES = 16  # 128 random bits per testnet
CHAIN_ID_BYTES = 6  # shardnet-<12 hex digits>: unique per init
DEFAULT_BASE_PORT = 26600
DOCKER_P2P_PORT = 26656
DOCKER_API_PORT = 8000
DOCKER_API_HOST_BASE = 8000
ASSETS = ("COIN", "USD", "ETH")
ACCOUNT_BALANCE = 1_000_000_000_000
POOL_RESERVE = 1_000_000_000_000_000
POOLS = (("COIN-USD", ("COIN", "USD")), ("ETH-USD", ("ETH", "USD")), ("COIN-ETH", ("COIN", "ETH")))
# A farm on each of POOLS (sharding/farms.py): COIN rewards for staked LP shares,
# funded at genesis (10^6 blocks of rewards each).
FARM_REWARD_ASSET = "COIN"
FARM_REWARD_PER_BLOCK = 1_000_000_000
FARM_BUDGET = 1_000_000_000_000_000
# Lending (issue 18): a market per asset on shard 0, priced in USD by the TWAP of
# pools placed on that shard; shallow on purpose (one account's swaps move them:
# the price-shock workload).
LENDING_SHARD = 0
LENDING_QUOTE = "USD"
LENDING_POOL_RESERVE = 1_000_000_000_000


@dataclass(frozen=True)
class TestnetSpec:
    __test__ = False  # not a pytest test class, despite the name

    shards: int = 2
    validators: int = 4
    accounts: int = 1000
    seed: str = DEFAULT_SEED
    base_port: int = DEFAULT_BASE_PORT
    chain_id: str = LOCAL_CHAIN_ID
    docker: bool = False
    salt: str = ""  # "" = seed-only validator keys (reproducible, public)
    # Chaos testnets only (`testnet init --faults`): each node's config gets
    # `[faults] enabled = true`, its fault endpoint on 127.0.0.1 (docs/NODE.md).
    faults: bool = False
    # `testnet init --latency --bandwidth` (issue 19): each node's `[net_emulation]`.
    # "userspace": the node delays its own p2p traffic (local processes; a container
    # whose kernel has no netem); "netem": the container's qdisc does (docker-node).
    net_mode: str = "off"
    net_latency_ms: int = 0
    net_rate_bit: int = 0

    def check(self) -> None:
        if self.shards < 1:
            raise ValueError("--shards must be >= 1")
        if self.validators < 4 or (self.validators - 1) % 3:
            raise ValueError("--validators must be 3f+1 with f >= 1 (4, 7, 10, ...)")
        if self.accounts < 1:
            raise ValueError("--accounts must be >= 1")
        if (self.accounts * ACCOUNT_BALANCE + POOL_RESERVE * 2 + FARM_BUDGET * len(POOLS)
                >= 2**64):
            raise ValueError("--accounts too large: total supply must fit in a u64")


def fresh_identity(spec: TestnetSpec) -> TestnetSpec:
    """``spec`` with a random chain id and a random validator-key salt: what every
    ``testnet init`` gets unless asked for seed-only keys."""
    return replace(spec, salt=secrets.token_hex(SALT_BYTES),
                   chain_id=f"shardnet-{secrets.token_hex(CHAIN_ID_BYTES)}")


def dev_spec() -> TestnetSpec:
    """The spec of the committed root compose files: default topology, public dev salt."""
    return TestnetSpec(docker=True, salt=DEV_SALT, chain_id=DEV_CHAIN_ID)


def spec_from_env(env: Mapping[str, str]) -> TestnetSpec:
    """The testnet a container derives from its environment (the compose file's
    ``SHARDNET_*`` variables). Without ``SHARDNET_SALT`` / ``SHARDNET_CHAIN_ID`` (a compose
    file from before they existed): seed-only keys, chain ``shardnet-local``."""
    return TestnetSpec(
        shards=int(env.get("SHARDNET_SHARDS", "2")),
        validators=int(env.get("SHARDNET_VALIDATORS", "4")),
        accounts=int(env.get("SHARDNET_ACCOUNTS", "1000")),
        seed=env.get("SHARDNET_SEED", DEFAULT_SEED),
        chain_id=env.get("SHARDNET_CHAIN_ID", LOCAL_CHAIN_ID),
        salt=env.get("SHARDNET_SALT", ""),
        docker=True,
        faults=env.get("SHARDNET_FAULTS", "").lower() in ("1", "true", "yes"),
    )


def validator_key(seed: str, shard: int, index: int, salt: str = "") -> KeyPair:
    """Validator ``index`` of ``shard``: from the seed alone without a salt (anyone who
    knows the seed can derive it), else from (seed, salt)."""
    if not salt:
        return KeyPair.derive(f"{seed}/validator/{shard}", index)
    return KeyPair.derive(json.dumps(["validator", seed, salt, shard]), index)


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


def lending_pools(shards: int) -> list[dict[str, Any]]:
    """The pools that price the lending markets: each asset against the quote, on the
    lending shard (``find_pool_name``: ``COIN-USD-lending``, ``-1``, ...)."""
    return [{"name": find_pool_name(f"{name}-{LENDING_QUOTE}-lending", LENDING_SHARD, shards),
             "assets": [name, LENDING_QUOTE],
             "reserves": [LENDING_POOL_RESERVE, LENDING_POOL_RESERVE]}
            for name in ASSETS if name != LENDING_QUOTE]


def lending_markets(shards: int) -> list[dict[str, Any]]:
    """A market per asset (the genesis defaults of sharding/genesis.py ``MarketSpec``),
    each priced by its ``lending_pools`` pool (the quote asset needs none)."""
    pools = {pool["assets"][0]: pool["name"] for pool in lending_pools(shards)}
    return [{"asset": name, "price_pool": pools[name]} if name in pools else {"asset": name}
            for name in ASSETS]


def genesis_document(spec: TestnetSpec, nodes: list[NodeEntry]) -> dict[str, Any]:
    validators: list[list[dict[str, Any]]] = [[] for _ in range(spec.shards)]
    for node in nodes:
        api_host = node.p2p_host if spec.docker else "127.0.0.1"
        validators[node.shard].append({
            "index": node.index,
            "public_key": validator_key(spec.seed, node.shard, node.index,
                                        spec.salt).public_key.hex(),
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
                  for name, pair in POOLS] + lending_pools(spec.shards),
        "farms": [{"pool": name, "reward_asset": FARM_REWARD_ASSET,
                   "reward_per_block": FARM_REWARD_PER_BLOCK, "budget": FARM_BUDGET}
                  for name, _ in POOLS],
        "lending_shard": LENDING_SHARD,
        "lending_quote": LENDING_QUOTE,
        "markets": lending_markets(spec.shards),
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
        + ('[faults]\nenabled = true\n' if spec.faults else '')
        + (f'[net_emulation]\nmode = "{spec.net_mode}"\nlatency_ms = {spec.net_latency_ms}\n'
           f'bandwidth_bits_per_s = {spec.net_rate_bit}\n' if spec.net_mode != "off" else '')
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
                        nodes=nodes, accounts=AccountsEntry(seed=spec.seed, count=spec.accounts),
                        salt=spec.salt)
    root.mkdir(parents=True, exist_ok=True)
    testnet.genesis_path.write_bytes(genesis_bytes)
    for node in nodes:
        if only is not None and node.name != only:
            continue
        home = testnet.home(node.name)
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(render_config(node_config(spec, node, nodes)))
        (home / "genesis.json").write_bytes(genesis_bytes)
        write_node_key(home / "node_key.json",
                       validator_key(spec.seed, node.shard, node.index, spec.salt))
    testnet.write_manifest(manifest)
    if not spec.docker:
        from scripts.cli.testnet.compose_file import render_compose

        docker_spec = replace(spec, docker=True)
        docker_nodes = node_entries(docker_spec)
        # Owner-only, like the manifest: they carry the validator-key salt.
        write_private(root / "docker-compose.yml",
                      render_compose(docker_spec, docker_nodes).encode())
        write_private(root / "docker-stack.yml",
                      render_compose(docker_spec, docker_nodes, swarm=True).encode())
        # Scrape configs (local processes, compose services) and recording rules.
        from scripts.cli.testnet.prometheus import write_files

        write_files(root, nodes, docker_nodes)
    return manifest
