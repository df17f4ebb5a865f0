"""End to end in Docker: the committed compose file, black-box over the nodes' HTTP API.

Offline image build (when the image is missing or stale), compose up, wait until
every node is healthy, submit transactions, read them back from another node of
the shard, find them with the log inspector, then ``down -v``. Skipped with a
visible reason when ``docker info`` fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.cli.client import ApiFailure, Client, call
from scripts.cli.compose import compose_available, run_compose
from scripts.cli.testnet.generate import DEV_CHAIN_ID, dev_spec, node_entries
from tests.support.docker import ensure_image, require_docker
from tests.support.node import signed_transfers, submit, tx_state, wait_until

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def compose_project() -> Iterator[list[str]]:
    require_docker()
    if not compose_available():
        pytest.skip("Docker tests skipped: neither `docker compose` nor `docker-compose` works")
    ensure_image()
    args = ["-p", f"shardnet-e2e-{uuid.uuid4().hex[:8]}", "-f", str(REPO / "docker-compose.yml")]
    try:
        run_compose([*args, "up", "-d"], capture_output=True, text=True, timeout=300, cwd=REPO)
        yield args
    finally:
        run_compose([*args, "down", "-v", "--remove-orphans"], check=False, capture_output=True,
                    timeout=300, cwd=REPO)


def test_compose_testnet_commits_and_serves_from_every_node(compose_project: list[str]) -> None:
    nodes = node_entries(dev_spec())
    urls = {node.name: node.api_url for node in nodes}

    def healthy() -> bool:
        for url in urls.values():
            try:
                Client.from_url(url)
            except (OSError, ValueError, KeyError, ApiFailure):
                return False
        return True

    started = time.monotonic()
    wait_until(healthy, 180, "all eight containers answering /v1/status")
    startup_s = time.monotonic() - started
    # Signed for the chain the nodes report (the committed files' development chain).
    chain_id = Client.from_url(urls["shard0-node1"]).chain_id
    assert chain_id == DEV_CHAIN_ID
    raws, hashes = signed_transfers(20, shard=0, num_shards=2, chain_id=chain_id)
    answer = submit(urls["shard0-node1"], raws)
    assert answer["accepted"] == 20
    wait_until(lambda: all(tx_state(urls["shard0-node3"], h) == "finalized" for h in hashes),
               120, "commit, read back from another node")
    # A replica may apply the certificate a moment after node 3: wait for every one.
    shard0 = [f"shard0-node{i}" for i in range(4)]
    wait_until(lambda: all(tx_state(urls[name], h) == "finalized" for name in shard0
                           for h in hashes), 60, "commit on every replica of shard 0")
    latest = {name: call("GET", f"{urls[name]}/v1/blocks/latest") for name in
              ("shard0-node0", "shard0-node2")}
    height = min(block["height"] for block in latest.values())
    assert len({call("GET", f"{urls[name]}/v1/blocks/{height}")["state_root"]
                for name in latest}) == 1
    logs = subprocess.run(
        [sys.executable, "-m", "scripts.cli", "logs", "--compose", str(REPO), "--trace", hashes[0],
         "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "COMPOSE_PROJECT_NAME": compose_project[1]},
    )
    assert logs.returncode == 0, logs.stderr[-2000:]
    events = [json.loads(line) for line in logs.stdout.splitlines()]
    assert any(e["event"] == "tx.received" for e in events)
    assert sum(e["event"] == "block.committed" for e in events) == 4
    print(f"compose start to all healthy: {startup_s:.1f}s")
