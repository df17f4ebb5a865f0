"""``shardnet testnet``: init, up, status, wallet, logs --trace, down, up again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import load_config
from scripts.cli.client import call
from scripts.cli.testnet.compose_file import render_compose
from scripts.cli.testnet.generate import (
    DEV_CHAIN_ID,
    DEV_SALT,
    TestnetSpec,
    dev_spec,
    generate,
    node_entries,
    validator_key,
)
from scripts.cli.testnet.layout import TestnetDir
from sharding.genesis import load_genesis
from tests.support.node import free_base_port, stop_nodes, wait_until

REPO = Path(__file__).resolve().parents[2]


def shardnet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, check=False)


def test_generated_genesis_and_configs_load(tmp_path: Path) -> None:
    manifest = generate(TestnetSpec(shards=3, validators=7, accounts=50), tmp_path)
    genesis = load_genesis(tmp_path / "genesis.json")
    assert genesis.num_shards == 3 and [len(v) for v in genesis.validators] == [7, 7, 7]
    for node in manifest.nodes:
        config = load_config(TestnetDir(tmp_path).home(node.name))
        assert (config.node.shard, config.node.index) == (node.shard, node.index)
        assert config.p2p.listen_port == node.p2p_port and config.api.port == node.api_port


def test_generator_rejects_validator_count_that_is_not_3f_plus_1(tmp_path: Path) -> None:
    result = shardnet("testnet", "init", "--testnet", str(tmp_path / "t"), "--validators", "5")
    assert result.returncode != 0 and "3f+1" in result.stderr


def test_committed_compose_files_use_the_documented_dev_salt() -> None:
    """The committed root files are the generator's output for the default topology with
    the public development salt and chain: every container derives the same validator
    keys, which are not the seed-only ones, and the README says the salt is public."""
    spec = dev_spec()
    assert (spec.salt, spec.chain_id) == (DEV_SALT, DEV_CHAIN_ID)
    nodes = node_entries(spec)
    compose = (REPO / "docker-compose.yml").read_text()
    stack = (REPO / "docker-stack.yml").read_text()
    assert compose == render_compose(spec, nodes)
    assert stack == render_compose(spec, nodes, swarm=True)
    for text in (compose, stack):
        # Every node service and the load generator carry the salt and the chain.
        assert text.count(f'SHARDNET_SALT: "{DEV_SALT}"') == len(nodes) + 1
        assert text.count(f'SHARDNET_CHAIN_ID: "{DEV_CHAIN_ID}"') == len(nodes) + 1
        assert "anyone can sign as these validators" in text
    assert validator_key(spec.seed, 0, 0, DEV_SALT).public_key != validator_key(
        spec.seed, 0, 0).public_key
    readme = (REPO / "README.md").read_text()
    assert DEV_SALT in readme and DEV_CHAIN_ID in readme


def test_compose_files_pass_validation(tmp_path: Path) -> None:
    from scripts.cli.compose import compose_available, run_compose
    from tests.support.docker import docker, docker_unavailable_reason

    if not compose_available():
        pytest.skip("no `docker compose` or `docker-compose` here")
    generate(TestnetSpec(shards=3, validators=4, accounts=10), tmp_path)
    for root in (REPO, tmp_path):
        checked = run_compose(["-f", str(root / "docker-compose.yml"), "config", "--quiet"],
                              check=False, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
    if docker_unavailable_reason() is None:
        stack = docker("stack", "config", "-c", str(REPO / "docker-stack.yml"), check=False)
        assert stack.returncode == 0, stack.stderr
        assert "profiles" not in stack.stdout


@pytest.mark.integration
def test_up_submit_status_trace_down_and_up_keeps_state(tmp_path: Path) -> None:
    root = tmp_path / "net"
    base = free_base_port(16)
    assert shardnet("testnet", "init", "--testnet", str(root), "--accounts", "100",
                    "--base-port", str(base)).returncode == 0
    testnet = TestnetDir(root)
    try:
        up = shardnet("testnet", "up", "--testnet", str(root))
        assert up.returncode == 0, up.stderr + up.stdout
        assert "API endpoints" in up.stdout and f"127.0.0.1:{base + 1}" in up.stdout
        recipient = json.loads(shardnet("keys", "--index", "7").stdout)["address"]
        sent = shardnet("tx", "transfer", "--testnet", str(root), "--index", "0", "--to",
                        recipient, "--amount", "1234", "--json")
        assert sent.returncode == 0, sent.stderr + sent.stdout
        outcome = json.loads(sent.stdout)  # --json: one document on stdout, progress on stderr
        digest = outcome["hash"]
        # "finalized" when it caused no receipt (or its receipt is applied already).
        assert outcome["status"] in ("committed", "finalized")
        other = f"shard{1 - outcome['shard']}-node2"
        other_url = next(n.api_url for n in testnet.load_manifest().nodes if n.name == other)
        wait_until(lambda: int(call("GET", f"{other_url}/v1/status")["shard_tips"].get(
            str(outcome["shard"]), 0)) >= outcome["height"], 30,
            "the other shard learning the certified tip from the announcement")
        status = shardnet("testnet", "status", "--testnet", str(root))
        assert status.returncode == 0 and "shard0-node0" in status.stdout
        shard = outcome["shard"]
        every_replica = {f"shard{shard}-node{i}" for i in range(4)}

        def traced() -> set[tuple[str, str]]:
            trace = shardnet("logs", "--testnet", str(root), "--trace", digest, "--json")
            return {(e["node"], e["event"]) for e in map(json.loads, trace.stdout.splitlines())}

        wait_until(lambda: {n for n, e in traced() if e == "block.committed"} == every_replica,
                   30, "the commit in every replica's log")
        names = traced()
        assert any(event == "tx.received" for _, event in names)
        assert any(event == "tx.forwarded" for _, event in names)
        assert any(event == "block.proposed" for _, event in names)
        # A cross-shard transfer: debited now. Its receipt may still be in flight or
        # already applied on the other shard (the relay's job): the audit adds up either way.
        far = next(i for i in range(1, 100) if json.loads(shardnet(
            "keys", "--index", str(i)).stdout)["shard"] != shard)
        far_address = json.loads(shardnet("keys", "--index", str(far)).stdout)["address"]
        cross = shardnet("tx", "transfer", "--testnet", str(root), "--index", "0", "--to",
                         far_address, "--amount", "77", "--json")
        assert cross.returncode == 0, cross.stderr + cross.stdout
        crossed = json.loads(cross.stdout)
        assert crossed["outcome"]["receipts"] == 1
        cross_digest = crossed["hash"]
        far_shard = 1 - shard

        def cross_hops() -> set[tuple[str, str]]:
            found = shardnet("logs", "--testnet", str(root), "--trace", cross_digest, "--json")
            return {(e["node"], e["event"]) for e in map(json.loads, found.stdout.splitlines())}

        # Every hop of the cross-shard transfer, read from the nodes' trace files (the
        # log lines only sample the hashes): received, forwarded, proposed, committed on
        # every source replica, the receipt emitted, relayed, received and applied on
        # every destination replica.
        wait_until(lambda: {n for n, e in cross_hops() if e == "receipt.applied"} == {
            f"shard{far_shard}-node{i}" for i in range(4)}, 60,
            "the receipt applied in every destination replica's trace")
        hops = cross_hops()
        assert {n for n, e in hops if e == "block.committed"} == every_replica
        assert {e for _, e in hops} >= {"tx.received", "tx.forwarded", "block.proposed",
                                         "receipt.emitted", "receipt.relayed",
                                         "receipt.received", "receipt.applied"}
        # The log lines themselves stay short: no full hash lists at info level.
        for log in (root / "logs").glob("*.log"):
            for line in log.read_text().splitlines():
                if line.startswith("{"):
                    event = json.loads(line)
                    assert not any(isinstance(event.get(k), list) and len(event[k]) > 3
                                   for k in ("txs", "origins")), event
        audited = shardnet("audit", "--testnet", str(root), "--json")
        assert audited.returncode == 0, audited.stderr + audited.stdout
        report = json.loads(audited.stdout)
        assert report["ok"] and all(row["ok"] for row in report["assets"])
        first_crossed = json.loads(shardnet("keys", "--index", "7").stdout)["shard"] != shard
        (channel,) = [c for c in report["channels"] if c["src"] == shard]
        (back,) = [c for c in report["channels"] if c["src"] != shard]
        assert back["receipts_in_flight"] == 0 and not any(back["in_flight"].values())
        # Receipts apply in channel order, so what is in flight is a suffix of what was sent.
        crossing = [1234, 77] if first_crossed else [77]
        flying = channel["receipts_in_flight"]
        assert report["receipts_in_flight"] == flying and 0 <= flying <= len(crossing)
        coin = next(row for row in report["assets"] if row["asset"] == "COIN")
        assert coin["in_flight"] == channel["in_flight"]["COIN"] == sum(
            crossing[len(crossing) - flying:])
        # --wait: quiescence once the receipt is applied (exit 0, nothing in flight), or
        # one line naming what still moves (exit 2) while nothing delivers it.
        waited = shardnet("audit", "--testnet", str(root), "--wait", "5", "--json")
        if waited.returncode == 0:
            settled = json.loads(waited.stdout)
            assert settled["ok"] and settled["quiescence"] is not None
            assert settled["receipts_in_flight"] == 0
            assert all(row["in_flight"] == 0 for row in settled["assets"])
        else:
            assert waited.returncode == 2, waited.stderr + waited.stdout
            assert waited.stderr.startswith("Error: not quiescent after 5 s: ")
            assert waited.stderr.count("\n") == 1 and "Traceback" not in waited.stderr
        sender = json.loads(shardnet("keys", "--index", "0").stdout)["address"]
        before = json.loads(shardnet("account", sender, "--testnet", str(root)).stdout)
        assert shardnet("testnet", "down", "--testnet", str(root)).returncode == 0
        assert shardnet("testnet", "up", "--testnet", str(root)).returncode == 0
        after = json.loads(shardnet("account", sender, "--testnet", str(root)).stdout)
        assert after["nonce"] == before["nonce"] == 2
        assert after["balances"] == before["balances"]
    finally:
        stop_nodes(testnet, [node.name for node in testnet.load_manifest().nodes],
                   timeout_s=10)


@pytest.mark.integration
def test_node_whose_api_port_is_taken_exits_with_a_clear_error(tmp_path: Path) -> None:
    import socket

    base = free_base_port(8)
    generate(TestnetSpec(shards=1, validators=4, accounts=10, base_port=base), tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 1))  # shard0-node0's API port
        squatter.listen()
        result = shardnet("node", "--home", str(TestnetDir(tmp_path).home("shard0-node0")),
                          timeout=60)
    assert result.returncode != 0
    assert "cannot start the node" in result.stderr and "address already in use" in result.stderr
    assert '"node.start_failed"' in result.stdout


def test_node_with_bad_config_names_the_key(tmp_path: Path) -> None:
    generate(TestnetSpec(shards=1, validators=4, accounts=10), tmp_path)
    home = TestnetDir(tmp_path).home("shard0-node1")
    config = home / "config.toml"
    config.write_text(config.read_text().replace("block_txs_max = 2000", 'block_txs_max = "x"'))
    result = shardnet("node", "--home", str(home), timeout=60)
    assert result.returncode != 0 and "$.consensus.block_txs_max" in result.stderr
