"""``shardnet testnet stop|start|restart|kill|pause|resume NODE`` on a real local testnet.

One shard of four validators (f = 1) started with ``testnet up``; one node is
perturbed by hand through the CLI while the others keep committing, observed over
the HTTP API with bounded waits. Every node is stopped afterwards, also on failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from scripts.cli.testnet.generate import TestnetSpec, generate
from scripts.cli.testnet.layout import Manifest, TestnetDir
from scripts.cli.testnet.processes import running_pid, stop_node, url_status
from tests.support.node import free_base_port, signed_transfers, submit, tx_state, wait_until

REPO = Path(__file__).resolve().parents[2]


def shardnet(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, check=False)


def control(root: Path, verb: str, node: str, *extra: str) -> dict[str, Any]:
    """Run a verb with --json; it must succeed with one JSON object."""
    done = shardnet("testnet", verb, node, "--testnet", str(root), "--json", *extra)
    assert done.returncode == 0, done.stderr + done.stdout
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["ok"] and result["action"] == verb and result["backend"] == "local"
    return result


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def height(url: str) -> int:
    status = url_status(url, timeout_s=2.0)
    return -1 if status is None else int(status["height"])


class Net:
    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root, self.manifest, self.dir = root, manifest, TestnetDir(root)
        self.url = {n.name: n.api_url.rstrip("/") for n in manifest.nodes}

    def commit_batch(self, count: int, nonce: int, witnesses: list[str]) -> tuple[list[str], int]:
        """Submit ``count`` transfers to the first witness; wait until every witness has
        them finalized. Their hashes, and the lowest height among the witnesses."""
        raws, hashes = signed_transfers(count, shard=0, num_shards=1, start_nonce=nonce)
        assert submit(self.url[witnesses[0]], raws)["accepted"] == count
        wait_until(lambda: all(tx_state(self.url[w], h) == "finalized"
                               for w in witnesses for h in hashes),
                   90, f"{count} transfers finalized on {', '.join(witnesses)}")
        return hashes, min(height(self.url[w]) for w in witnesses)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    root = tmp_path / "net"
    manifest = generate(TestnetSpec(shards=1, validators=4, accounts=50,
                                    base_port=free_base_port(8)), root)
    testnet = TestnetDir(root)
    try:
        up = shardnet("testnet", "up", "--testnet", str(root))
        assert up.returncode == 0, up.stderr + up.stdout
        yield Net(root, manifest)
    finally:
        shardnet("testnet", "down", "--testnet", str(root))
        for node in manifest.nodes:  # should `down` itself have failed
            stop_node(testnet, node.name, timeout_s=10)


@pytest.mark.integration
def test_pause_then_resume_a_node_and_commits_continue(net: Net) -> None:
    paused = control(net.root, "pause", "shard0-node1")
    assert (paused["before"], paused["after"], paused["changed"]) == ("running", "paused", True)
    tree = [psutil.Process(paused["pid"])]
    tree += tree[0].children(recursive=True)
    assert all(p.status() == psutil.STATUS_STOPPED for p in tree)
    assert url_status(net.url["shard0-node1"], timeout_s=1.0) is None
    # Pausing again changes nothing; `status` shows it paused.
    assert control(net.root, "pause", "0/1")["changed"] is False
    status = shardnet("testnet", "status", "--testnet", str(net.root))
    assert status.returncode == 1  # exits.CHECK_FAILED: a node does not answer
    assert "1 of 4 nodes do not answer: shard0-node1" in status.stderr
    assert "paused" in next(line for line in status.stdout.splitlines() if "shard0-node1" in line)

    # f = 1: the three others commit without it.
    hashes, committed = net.commit_batch(20, 0, ["shard0-node0", "shard0-node2",
                                                 "shard0-node3"])
    assert committed >= 1
    assert tx_state(net.url["shard0-node1"], hashes[0]) == "unreachable"

    resumed = control(net.root, "resume", "s0n1")
    assert (resumed["before"], resumed["after"]) == ("paused", "running")
    assert resumed["pid"] == paused["pid"]
    assert all(p.status() != psutil.STATUS_STOPPED for p in tree if p.is_running())
    # The resumed node catches up with what was committed while it slept ...
    wait_until(lambda: height(net.url["shard0-node1"]) >= committed, 90,
               f"shard0-node1 catching up to height {committed}")
    wait_until(lambda: all(tx_state(net.url["shard0-node1"], h) == "finalized" for h in hashes),
               60, "the paused-time transfers finalized on shard0-node1")
    # ... and the four commit together again.
    net.commit_batch(10, 1, ["shard0-node1", "shard0-node0", "shard0-node2", "shard0-node3"])


@pytest.mark.integration
def test_stop_start_restart_a_node(net: Net) -> None:
    name = "shard0-node2"
    first_pid = running_pid(net.dir, name)
    assert first_pid is not None
    stopped = control(net.root, "stop", name, "--timeout", "10")
    assert (stopped["before"], stopped["after"], stopped["changed"]) == (
        "running", "stopped", True)
    assert stopped["pid"] == first_pid and gone(first_pid)
    assert running_pid(net.dir, name) is None and not net.dir.pid_file(name).exists()
    # Stopping a stopped node is a no-op; pausing it is an error naming the fix.
    again = shardnet("testnet", "stop", name, "--testnet", str(net.root))
    assert again.returncode == 0 and "already stopped" in again.stdout
    refused = shardnet("testnet", "pause", name, "--testnet", str(net.root))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert f"{name} is not running" in refused.stderr and "testnet start" in refused.stderr

    _, committed = net.commit_batch(20, 0, ["shard0-node0", "shard0-node1", "shard0-node3"])

    started = control(net.root, "start", name)
    assert (started["before"], started["after"], started["changed"]) == (
        "stopped", "running", True)
    assert started["pid"] not in (None, first_pid)
    assert url_status(net.url[name]) is not None  # `start` waited for the API
    wait_until(lambda: height(net.url[name]) >= committed, 90, f"{name} catching up")

    restarted = control(net.root, "restart", "0/2")
    assert restarted["before"] == "running" and restarted["after"] == "running"
    assert restarted["pid"] not in (None, started["pid"])
    assert gone(started["pid"])
    assert running_pid(net.dir, name) == restarted["pid"]
    assert height(net.url[name]) >= committed  # its state survived the restart

    killed = control(net.root, "kill", name)
    assert killed["after"] == "stopped" and running_pid(net.dir, name) is None
    assert control(net.root, "start", name)["changed"] is True
    net.commit_batch(10, 1, [name, "shard0-node0", "shard0-node1", "shard0-node3"])


def test_unknown_node_is_a_one_line_error(tmp_path: Path) -> None:
    root = tmp_path / "net"
    generate(TestnetSpec(shards=1, validators=4, accounts=10), root)
    for verb in ("pause", "stop", "start", "restart", "resume", "kill"):
        done = shardnet("testnet", verb, "shard7-node0", "--testnet", str(root))
        assert done.returncode == 2, (verb, done.stderr)  # exits.USAGE
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith("Error: unknown node 'shard7-node0': valid names are "
                                      "shard0-node0, shard0-node1, shard0-node2, shard0-node3")
    as_json = shardnet("testnet", "pause", "9/9", "--testnet", str(root), "--json")
    assert as_json.returncode == 2
    answer = json.loads(as_json.stdout)
    assert answer["ok"] is False and answer["error"].startswith("unknown node '9/9'")
    # Nothing was started by the refusals.
    assert not any((root / "run").glob("*.pid"))

    missing = shardnet("testnet", "pause", "shard0-node0", "--testnet", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1  # exits.USAGE
    assert "testnet.json not found" in missing.stderr and "testnet init" in missing.stderr

    local_cut = shardnet("testnet", "disconnect", "shard0-node0", "--testnet", str(root))
    assert local_cut.returncode == 1 and local_cut.stderr.count("\n") == 1
    assert "--compose" in local_cut.stderr

    not_running = shardnet("testnet", "resume", "shard0-node0", "--testnet", str(root))
    assert not_running.returncode == 1 and "shard0-node0 is not running" in not_running.stderr
