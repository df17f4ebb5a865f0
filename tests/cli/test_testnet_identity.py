"""Each ``shardnet testnet init`` is its own chain with its own validator keys (issue 14,
finding 9): a transaction signed for one testnet does not replay on another, and the
public account seed does not give the validator keys. ``--deterministic-keys`` keeps
the old seed-only testnet for reproducible tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from consensus.kernel.codec import encode
from node.keys import load_node_key
from scripts.cli.client import ApiFailure, Client, call
from scripts.cli.testnet.cli import testnet as net_cli
from scripts.cli.testnet.generate import (
    DEFAULT_SEED,
    LOCAL_CHAIN_ID,
    generate,
    spec_from_env,
    validator_key,
)
from scripts.cli.testnet.layout import Manifest, TestnetDir
from scripts.cli.testnet.processes import start_node, stop_node, wait_healthy
from sharding.accounts import derive_account, shard_of
from sharding.genesis import Genesis, load_genesis
from sharding.tx import Transfer, TxBody, sign_tx
from tests.support.node import free_base_port


def init(root: Path, *args: str) -> Manifest:
    result = CliRunner().invoke(net_cli, ["init", "--testnet", str(root), "--shards", "1",
                                          "--accounts", "10", *args])
    assert result.exit_code == 0, result.output
    manifest = TestnetDir(root).load_manifest()
    assert f"chain {manifest.chain_id}" in result.output
    return manifest


def validator_keys(genesis: Genesis) -> set[bytes]:
    return {v.public_key for shard in genesis.validators for v in shard}


def seed_only_keys(genesis: Genesis) -> set[bytes]:
    return {validator_key(DEFAULT_SEED, v.shard, v.index).public_key
            for shard in genesis.validators for v in shard}


def compose_env(compose: str, service: str) -> dict[str, str]:
    """The ``environment:`` of one service of a generated compose file."""
    lines = compose.splitlines()
    start = lines.index(f"  {service}:")
    env: dict[str, str] = {}
    for line in lines[start + 1:]:
        if line.startswith("  ") and not line.startswith("   "):
            break  # the next service
        key, sep, value = line.strip().partition(": ")
        if line.startswith("      ") and sep and key.startswith("SHARDNET_"):
            env[key] = json.loads(value) if value.startswith('"') else value
    return env


def test_two_testnets_have_different_chain_ids_and_validator_keys(tmp_path: Path) -> None:
    first, second = init(tmp_path / "a"), init(tmp_path / "b")
    assert first.chain_id != second.chain_id
    assert LOCAL_CHAIN_ID not in (first.chain_id, second.chain_id)
    assert first.salt != second.salt and len(first.salt) == len(second.salt) == 32
    genesis = {name: load_genesis(tmp_path / name / "genesis.json") for name in "ab"}
    assert genesis["a"].chain_id == first.chain_id and genesis["b"].chain_id == second.chain_id
    keys = {name: validator_keys(g) for name, g in genesis.items()}
    assert len(keys["a"]) == len(keys["b"]) == 4 and not keys["a"] & keys["b"]
    # Knowing the public seed does not give any validator's key.
    assert not (keys["a"] | keys["b"]) & seed_only_keys(genesis["a"])
    for name, manifest in (("a", first), ("b", second)):
        root = tmp_path / name
        # Each node holds the key its genesis names (it starts: check_identity).
        for node in manifest.nodes:
            held = load_node_key(TestnetDir(root).home(node.name) / "node_key.json")
            assert held.public_key == genesis[name].validators[node.shard][node.index].public_key
        # The salt is private: in the manifest and compose files, not in the genesis that
        # GET /v1/network serves to anyone.
        assert manifest.salt not in (root / "genesis.json").read_text()
        assert manifest.salt not in (root / "nodes/shard0-node0/genesis.json").read_text()
        assert (root / "testnet.json").stat().st_mode & 0o777 == 0o600
        for compose in ("docker-compose.yml", "docker-stack.yml"):
            assert (root / compose).stat().st_mode & 0o777 == 0o600
            text = (root / compose).read_text()
            assert f'SHARDNET_SALT: "{manifest.salt}"' in text
            assert f'SHARDNET_CHAIN_ID: "{manifest.chain_id}"' in text
        # Funded accounts stay the seed's: any wallet and load generator knows them.
        (group,) = genesis[name].accounts
        assert (group.seed, group.count) == (DEFAULT_SEED, 10)


def test_container_derives_the_testnets_keys_from_its_compose_environment(
        tmp_path: Path) -> None:
    manifest = init(tmp_path / "net")
    local = load_genesis(tmp_path / "net" / "genesis.json")
    compose = (tmp_path / "net" / "docker-compose.yml").read_text()
    env = compose_env(compose, "shard0-node2")
    assert env["SHARDNET_NODE"] == "shard0-node2"
    # What `testnet docker-node` does inside the container.
    generate(spec_from_env(env), tmp_path / "container", only="shard0-node2")
    derived = load_genesis(tmp_path / "container" / "genesis.json")
    assert derived.chain_id == manifest.chain_id
    assert [[v.public_key for v in s] for s in derived.validators] == [
        [v.public_key for v in s] for s in local.validators]
    held = load_node_key(TestnetDir(tmp_path / "container").home("shard0-node2") /
                         "node_key.json")
    assert held.public_key == local.validators[0][2].public_key
    # A compose file from before salts: seed-only keys on shardnet-local, as it was.
    old = {k: v for k, v in env.items() if k not in ("SHARDNET_SALT", "SHARDNET_CHAIN_ID")}
    assert (spec_from_env(old).salt, spec_from_env(old).chain_id) == ("", LOCAL_CHAIN_ID)


def test_seed_only_flag_gives_reproducible_keys(tmp_path: Path) -> None:
    first = init(tmp_path / "a", "--deterministic-keys")
    second = init(tmp_path / "b", "--deterministic-keys")
    assert first.chain_id == second.chain_id == LOCAL_CHAIN_ID
    assert first.salt == second.salt == ""
    assert (tmp_path / "a/genesis.json").read_bytes() == (tmp_path / "b/genesis.json").read_bytes()
    genesis = load_genesis(tmp_path / "a" / "genesis.json")
    assert validator_keys(genesis) == seed_only_keys(genesis)
    for node in first.nodes:
        keys = [load_node_key(TestnetDir(tmp_path / name).home(node.name) / "node_key.json")
                for name in "ab"]
        assert keys[0].private_bytes == keys[1].private_bytes
    assert "SHARDNET_SALT: \"\"" in (tmp_path / "a" / "docker-compose.yml").read_text()


@pytest.mark.integration
def test_tx_signed_for_one_testnet_is_refused_by_another(tmp_path: Path) -> None:
    """A transfer signed for testnet A (as the wallet signs: A's chain id from A's folder)
    submitted to a node of testnet B: 400 wrong_chain. The same transfer signed with B's
    chain id is admitted, so the chain id is what refused it."""
    roots = {name: tmp_path / name for name in "ab"}
    for root in roots.values():
        init(root, "--base-port", str(free_base_port(8)))
    chains = {name: Client.from_testnet(root).chain_id for name, root in roots.items()}
    assert chains["a"] != chains["b"]
    target = TestnetDir(roots["b"])
    node = next(n for n in target.load_manifest().nodes if n.name == "shard0-node0")
    sender = derive_account(DEFAULT_SEED, 0)  # funded on both: accounts are seed-derived
    recipient = derive_account(DEFAULT_SEED, 1).public_key
    assert shard_of(sender.public_key, 1) == node.shard

    def signed(chain_id: str) -> str:
        body = TxBody(chain_id, sender.public_key, 0, Transfer(recipient, 0, 5))
        return encode(sign_tx(sender, body)).hex()

    try:
        start_node(target, node.name)
        assert wait_healthy([node], 120) == [], target.log(node.name).read_text()[-3000:]
        with pytest.raises(ApiFailure) as refused:
            call("POST", f"{node.api_url}/v1/txs", {"tx": signed(chains["a"])})
        assert refused.value.status == 400
        assert refused.value.body["error"] == "wrong_chain"
        assert chains["a"] in refused.value.body["detail"]
        admitted = call("POST", f"{node.api_url}/v1/txs", {"tx": signed(chains["b"])})
        assert admitted["accepted"] is True
    finally:
        stop_node(target, node.name, timeout_s=10)


def test_a_chaos_testnets_containers_arm_their_fault_endpoints_and_others_do_not(
        tmp_path: Path) -> None:
    """`testnet init --faults` reaches the containers (their config is derived from the
    compose environment): partition and byzantine scenarios work against compose too."""
    init(tmp_path / "chaos", "--faults")
    init(tmp_path / "plain")
    for name, armed in (("chaos", True), ("plain", False)):
        env = compose_env((tmp_path / name / "docker-compose.yml").read_text(), "shard0-node1")
        assert spec_from_env(env).faults is armed
        generate(spec_from_env(env), tmp_path / f"{name}-container", only="shard0-node1")
        config = (TestnetDir(tmp_path / f"{name}-container").home("shard0-node1") /
                  "config.toml").read_text()
        assert ("[faults]\nenabled = true" in config) is armed
