"""``shardnet testnet``: init, up, status, wallet, logs --trace, down, up again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import load_config
from scripts.client import call
from scripts.testnet.compose_file import render_compose
from scripts.testnet.generate import TestnetSpec, generate, node_entries
from scripts.testnet.layout import TestnetDir
from scripts.testnet.processes import stop_node
from sharding.genesis import load_genesis
from tests.node_support import free_base_port, wait_until

REPO = Path(__file__).resolve().parent.parent


def shardnet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
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
    result = shardnet("testnet", "init", "--dir", str(tmp_path / "t"), "--validators", "5")
    assert result.returncode != 0 and "3f+1" in result.stderr


def test_committed_compose_files_are_the_generators_output() -> None:
    spec = TestnetSpec(docker=True)
    nodes = node_entries(spec)
    assert (REPO / "docker-compose.yml").read_text() == render_compose(spec, nodes)
    assert (REPO / "docker-stack.yml").read_text() == render_compose(spec, nodes, swarm=True)


def test_compose_files_pass_validation(tmp_path: Path) -> None:
    from scripts.compose import compose_available, run_compose
    from tests.docker_support import docker, docker_unavailable_reason

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
    assert shardnet("testnet", "init", "--dir", str(root), "--accounts", "100",
                    "--base-port", str(base)).returncode == 0
    testnet = TestnetDir(root)
    try:
        up = shardnet("testnet", "up", "--dir", str(root))
        assert up.returncode == 0, up.stderr + up.stdout
        assert "API endpoints" in up.stdout and f"127.0.0.1:{base + 1}" in up.stdout
        recipient = json.loads(shardnet("keys", "--index", "7").stdout)["address"]
        sent = shardnet("tx", "transfer", "--testnet", str(root), "--index", "0", "--to",
                        recipient, "--amount", "1234")
        assert sent.returncode == 0, sent.stderr + sent.stdout
        digest = sent.stdout.split()[1]
        outcome = json.loads(sent.stdout[sent.stdout.index("{"):])
        assert outcome["status"] == "committed"
        other = f"shard{1 - outcome['shard']}-node2"
        other_url = next(n.api_url for n in testnet.load_manifest().nodes if n.name == other)
        wait_until(lambda: int(call("GET", f"{other_url}/v1/status")["shard_tips"].get(
            str(outcome["shard"]), 0)) >= outcome["height"], 30,
            "the other shard learning the certified tip over gossip")
        status = shardnet("testnet", "status", "--dir", str(root))
        assert status.returncode == 0 and "shard0-node0" in status.stdout
        trace = shardnet("logs", "--testnet", str(root), "--trace", digest, "--json")
        events = [json.loads(line) for line in trace.stdout.splitlines()]
        names = {(e["node"], e["event"]) for e in events}
        shard = outcome["shard"]
        assert any(event == "tx.received" for _, event in names)
        assert any(event == "block.proposed" for _, event in names)
        committed_on = {node for node, event in names if event == "block.committed"}
        assert committed_on == {f"shard{shard}-node{i}" for i in range(4)}
        sender = json.loads(shardnet("keys", "--index", "0").stdout)["address"]
        before = json.loads(shardnet("account", sender, "--testnet", str(root)).stdout)
        assert shardnet("testnet", "down", "--dir", str(root)).returncode == 0
        assert shardnet("testnet", "up", "--dir", str(root)).returncode == 0
        after = json.loads(shardnet("account", sender, "--testnet", str(root)).stdout)
        assert after["nonce"] == before["nonce"] == 1
        assert after["balances"] == before["balances"]
    finally:
        for node in testnet.load_manifest().nodes:
            stop_node(testnet, node.name, timeout_s=10)
