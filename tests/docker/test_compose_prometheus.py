"""The compose file's `monitoring` profile: a 1x4 project with Prometheus (the offline
image of Dockerfile.prometheus) scraping every node, and the recording rules evaluated.
Runs when a Docker engine and Compose are present (skipped with a visible reason
otherwise); the images are built offline when missing; ``down -v`` after, also on failure."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.cli.compose import compose_available, run_compose
from scripts.cli.testnet import prometheus as prom
from scripts.cli.testnet.generate import TestnetSpec, fresh_identity, generate
from tests.support.docker import REPO, ensure_image, inspect_image, require_docker
from tests.support.node import wait_until

NODES = [f"shard0-node{i}" for i in range(4)]
PROMETHEUS = f"http://127.0.0.1:{prom.HOST_PORT}"
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]


def ensure_prometheus_image() -> None:
    if inspect_image(prom.IMAGE) is not None:
        return
    result = subprocess.run(["bash", str(REPO / "scripts/image/build_prometheus_image.sh")],
                            cwd=REPO, capture_output=True, text=True, timeout=1200,
                            check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        pytest.skip(f"the Prometheus image did not build (Debian mirror unreachable?):\n{tail}")


def query(expr: str) -> list[dict[str, Any]]:
    url = f"{PROMETHEUS}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            doc = json.load(response)
    except OSError:
        return []  # not up yet
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    require_docker()
    if not compose_available():
        pytest.skip("Docker tests skipped: neither `docker compose` nor `docker-compose` works")
    ensure_image()
    ensure_prometheus_image()
    root = tmp_path / "compose"
    generate(fresh_identity(TestnetSpec(shards=1, validators=4, accounts=100)), root)
    args = ["-p", f"shardnet-prom-{uuid.uuid4().hex[:8]}", "-f", str(root / "docker-compose.yml")]
    try:
        run_compose([*args, "--profile", "monitoring", "up", "-d", *NODES, "prometheus"],
                    capture_output=True, text=True, timeout=300, cwd=root)
        yield root
    finally:
        run_compose([*args, "--profile", "monitoring", "down", "-v", "--remove-orphans"],
                    check=False, capture_output=True, timeout=300, cwd=root)


def test_prometheus_scrapes_every_node_and_records_per_shard(project: Path) -> None:
    def all_up() -> bool:
        up = query('up{job="shardnet"}')
        return len(up) == 4 and all(sample["value"][1] == "1" for sample in up)

    wait_until(all_up, 180, "Prometheus: up == 1 for the 4 node targets")
    up = query('up{job="shardnet"}')
    assert {(s["metric"]["node"], s["metric"]["shard"]) for s in up} == {
        (name, "0") for name in NODES}
    # The nodes' own series arrive with the labels the rules aggregate by.
    info = query("shardnet_build_info")
    assert len(info) == 4 and all(s["metric"]["version"] for s in info)
    assert len(query("process_cpu_seconds_total")) == 4
    # The rules loaded and evaluate per shard (after two scrapes: rate needs two samples).
    wait_until(lambda: bool(query("shard:shardnet_blocks_committed:rate1m")), 120,
               "the recording rule shard:shardnet_blocks_committed:rate1m")
    (ratio,) = query("shard:up:ratio")
    assert ratio["metric"]["shard"] == "0" and ratio["value"][1] == "1"
