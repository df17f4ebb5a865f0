"""``shardnet testnet pause|resume|disconnect|connect NODE --compose``: the node-control
verbs against a compose project's containers (docker pause/unpause, network
disconnect/connect), observed over the nodes' HTTP API.

A generated 1 shard x 4 validators compose file under a unique project name; the
image is built offline when missing or stale (``ensure_image``); ``down -v`` after,
also on failure. Skipped with a visible reason when Docker or Compose is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.cli.compose import compose_available, run_compose
from scripts.cli.testnet.generate import TestnetSpec, generate
from scripts.cli.testnet.processes import url_status
from tests.support.docker import docker, ensure_image, require_docker
from tests.support.node import signed_transfers, submit, tx_state, wait_until

REPO = Path(__file__).resolve().parents[2]
NODES = [f"shard0-node{i}" for i in range(4)]
URL = {name: f"http://127.0.0.1:{8000 + i}" for i, name in enumerate(NODES)}
pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    require_docker()
    if not compose_available():
        pytest.skip("Docker tests skipped: neither `docker compose` nor `docker-compose` works")
    ensure_image()
    root = tmp_path_factory.mktemp("compose-control")
    generate(TestnetSpec(shards=1, validators=4, accounts=50), root)
    name = f"shardnet-ctl-{uuid.uuid4().hex[:8]}"
    args = ["-p", name, "-f", str(root / "docker-compose.yml")]
    try:
        run_compose([*args, "up", "-d", *NODES], capture_output=True, text=True, timeout=300,
                    cwd=root)
        wait_until(lambda: all(url_status(url) is not None for url in URL.values()), 180,
                   "the four containers answering /v1/status")
        yield root, name
    finally:
        run_compose([*args, "down", "-v", "--remove-orphans"], check=False, capture_output=True,
                    timeout=300, cwd=root)


def control(project: tuple[Path, str], verb: str, node: str) -> dict[str, Any]:
    root, name = project
    done = subprocess.run(
        [sys.executable, "-m", "scripts.cli", "testnet", verb, node, "--compose", str(root),
         "--project", name, "--json"],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["ok"] and result["backend"] == "compose" and result["action"] == verb
    return result


def container_state(project: tuple[Path, str], node: str) -> dict[str, Any]:
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project[1]}",
                 "--filter", f"label=com.docker.compose.service={node}").stdout.split()
    info: dict[str, Any] = json.loads(docker("inspect", ids[0]).stdout)[0]
    return info


def commit(count: int, nonce: int, witnesses: list[str]) -> list[str]:
    raws, hashes = signed_transfers(count, shard=0, num_shards=1, start_nonce=nonce)
    assert submit(URL[witnesses[0]], raws)["accepted"] == count
    wait_until(lambda: all(tx_state(URL[w], h) == "finalized" for w in witnesses
                           for h in hashes), 120, f"commit on {', '.join(witnesses)}")
    return hashes


def test_compose_pause_then_resume_a_container_and_commits_continue(
        project: tuple[Path, str]) -> None:
    paused = control(project, "pause", "shard0-node1")
    assert (paused["before"], paused["after"]) == ("running", "paused")
    assert container_state(project, "shard0-node1")["State"]["Paused"] is True
    hashes = commit(10, 0, ["shard0-node0", "shard0-node2", "shard0-node3"])
    assert tx_state(URL["shard0-node1"], hashes[0]) == "unreachable"

    resumed = control(project, "resume", "0/1")
    assert (resumed["before"], resumed["after"]) == ("paused", "running")
    assert container_state(project, "shard0-node1")["State"]["Paused"] is False
    wait_until(lambda: all(tx_state(URL["shard0-node1"], h) == "finalized" for h in hashes),
               120, "the resumed container catching up")


def test_compose_disconnect_then_connect_a_container(project: tuple[Path, str]) -> None:
    network = f"{project[1]}_shardnet"
    cut = control(project, "disconnect", "shard0-node3")
    assert (cut["before"], cut["after"]) == ("running", "disconnected")
    assert network not in container_state(project, "shard0-node3")["NetworkSettings"]["Networks"]
    hashes = commit(10, 1, ["shard0-node0", "shard0-node1", "shard0-node2"])

    joined = control(project, "connect", "shard0-node3")
    assert (joined["before"], joined["after"]) == ("disconnected", "running")
    networks = container_state(project, "shard0-node3")["NetworkSettings"]["Networks"]
    assert "shard0-node3" in (networks[network].get("Aliases") or [])
    wait_until(lambda: all(tx_state(URL["shard0-node3"], h) == "finalized" for h in hashes),
               120, "the reconnected container catching up")
