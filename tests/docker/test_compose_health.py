"""The compose healthcheck means ready (issue 17 finding: it only showed that the API
answered, on a hard-coded port): a node turns healthy with a quorum of its shard peers
connected, and while a transaction waits for its first commit it is not healthy until
that commit.

A generated 1 shard x 4 validators compose file under a unique project name. Two
validators first (no quorum: nothing can commit) with a transfer pending, then the other
two. ``down -v`` after, also on failure. Skipped with a visible reason when Docker,
Compose or the offline image build is unavailable.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
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

NODES = [f"shard0-node{i}" for i in range(4)]
URL = {name: f"http://127.0.0.1:{8000 + i}" for i, name in enumerate(NODES)}
pytestmark = pytest.mark.docker


def health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Project:
    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.args = ["-p", name, "-f", str(root / "docker-compose.yml")]

    def compose(self, *args: str) -> None:
        run_compose([*self.args, *args], capture_output=True, text=True, timeout=300,
                    cwd=self.root)

    def container_health(self, node: str) -> str:
        ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}",
                     "--filter", f"label=com.docker.compose.service={node}").stdout.split()
        state = json.loads(docker("inspect", "-f", "{{json .State}}", ids[0]).stdout)
        return str((state.get("Health") or {}).get("Status"))


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    require_docker()
    if not compose_available():
        pytest.skip("Docker tests skipped: neither `docker compose` nor `docker-compose` works")
    try:
        ensure_image()
    except pytest.fail.Exception as exc:
        pytest.skip(f"Docker tests skipped: the image does not build here: {exc}")
    root = tmp_path / "compose-health"
    generate(TestnetSpec(shards=1, validators=4, accounts=20), root)
    project = Project(root, f"shardnet-health-{uuid.uuid4().hex[:8]}")
    try:
        yield project
    finally:
        run_compose([*project.args, "down", "-v", "--remove-orphans"], check=False,
                    capture_output=True, timeout=300, cwd=root)


def test_compose_health_turns_healthy_only_after_the_first_commit(project: Project) -> None:
    first, later = NODES[:2], NODES[2:]
    project.compose("up", "-d", *first)
    wait_until(lambda: all(url_status(URL[n]) is not None for n in first), 180,
               "the first two containers answering")
    raws, hashes = signed_transfers(1, shard=0, num_shards=1)
    assert submit(URL[first[0]], raws)["accepted"] == 1
    # Two of four: no quorum, the transfer cannot commit; the route says why.
    wait_until(lambda: "no_commit_yet" in health(URL[first[0]])[1]["reasons"], 30,
               "the pending transfer seen by /v1/health")
    code, body = health(URL[first[0]])
    assert code == 503 and "no_peers" in body["reasons"] and body["height"] == 0
    # Several healthcheck rounds (2 s apart) have run: none passed.
    wait_until(lambda: len(_probes(project, first[0])) >= 3, 60, "three health probes")
    assert project.container_health(first[0]) in ("starting", "unhealthy")
    assert all(p["ExitCode"] != 0 for p in _probes(project, first[0]))

    project.compose("up", "-d", *later)
    wait_until(lambda: tx_state(URL[first[0]], hashes[0]) == "finalized", 180,
               "the transfer committed once the shard has a quorum")
    wait_until(lambda: all(project.container_health(n) == "healthy" for n in NODES), 120,
               "every container healthy")
    for node in NODES:
        code, body = health(URL[node])
        assert code == 200 and body["reasons"] == [] and body["height"] >= 1, (node, body)


def _probes(project: Project, node: str) -> list[dict[str, Any]]:
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}",
                 "--filter", f"label=com.docker.compose.service={node}").stdout.split()
    state = json.loads(docker("inspect", "-f", "{{json .State}}", ids[0]).stdout)
    log: list[dict[str, Any]] = (state.get("Health") or {}).get("Log") or []
    return log
