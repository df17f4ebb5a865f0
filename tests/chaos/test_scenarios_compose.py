"""The Docker variant: a shipped scenario against a compose project (1 shard x 4
containers), node control through the docker CLI (kill, start). Runs when a Docker
engine and Compose are present (skipped with a visible reason otherwise); the image is
built offline when missing or stale; ``down -v`` after, also on failure."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.chaos.faults import ComposeFaults
from scripts.chaos.manifest import load_scenario
from scripts.chaos.runner import RunOptions, compose_wiper, run_scenario
from scripts.cli.compose import compose_available, run_compose
from scripts.cli.load.targets import discover_urls
from scripts.cli.testnet.control import ComposeNodes
from scripts.cli.testnet.generate import TestnetSpec, generate
from scripts.cli.testnet.processes import url_status
from tests.support.docker import ensure_image, require_docker
from tests.support.node import wait_until

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
NODES = [f"shard0-node{i}" for i in range(4)]
URLS = [f"http://127.0.0.1:{8000 + i}" for i in range(4)]
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    require_docker()
    if not compose_available():
        pytest.skip("Docker tests skipped: neither `docker compose` nor `docker-compose` works")
    ensure_image()
    root = tmp_path / "compose"
    generate(TestnetSpec(shards=1, validators=4, accounts=200), root)
    name = f"shardnet-chaos-{uuid.uuid4().hex[:8]}"
    args = ["-p", name, "-f", str(root / "docker-compose.yml")]
    try:
        run_compose([*args, "up", "-d", *NODES], capture_output=True, text=True, timeout=300,
                    cwd=root)
        wait_until(lambda: all(url_status(url) is not None for url in URLS), 180,
                   "the four containers answering /v1/status")
        yield root, name
    finally:
        run_compose([*args, "down", "-v", "--remove-orphans"], check=False,
                    capture_output=True, timeout=300, cwd=root)


@pytest.mark.parametrize("name", ["primary-crash", "wipe-resync"])
def test_scenario_against_a_compose_project(project: tuple[Path, str], name: str) -> None:
    root, project_name = project
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    control = ComposeNodes(root, project_name)
    network = discover_urls(URLS[:1])
    report, _ = run_scenario(scenario, control, network, ComposeFaults(control.container),
                             root=None, options=RunOptions(seed=1, catchup_s=120),
                             wipe_container=compose_wiper(control.container))
    checks = report["chaos"]["checks"]
    context = {"faults": report["chaos"]["faults"], "checks": checks}
    assert all(check["ok"] for check in checks.values()), context
    assert checks["safety"]["heights_compared"] > 10 and checks["safety"]["forks_total"] == 0
    assert report["audit"]["lost"] == 0 and report["audit"]["duplicated"] == 0
    assert report["chaos"]["faults"][0]["healed_t_s"] is not None
