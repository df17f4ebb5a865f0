"""Node control without processes: NODE names, the state of a container from
``docker inspect``, and the one-line refusals (the verbs themselves run in
tests/integration/test_node_control.py and tests/docker/test_node_control_compose.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scripts.cli.testnet.control import ComposeNodes, ControlError, resolve
from scripts.cli.testnet.generate import TestnetSpec, generate

NAMES = [f"shard{s}-node{i}" for s in range(2) for i in range(4)]


@pytest.mark.parametrize("given", ["shard1-node2", "s1n2", "1/2", "1.2", "S1N2"])
def test_node_forms_resolve_to_the_testnet_name(given: str) -> None:
    assert resolve(NAMES, given) == "shard1-node2"


@pytest.mark.parametrize("given", ["shard2-node0", "1/4", "s0", "", "shard0-node0 ", "*"])
def test_unknown_node_is_refused_listing_the_valid_names(given: str) -> None:
    with pytest.raises(ControlError) as refused:
        resolve(NAMES, given)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"unknown node {given!r}")
    assert ", ".join(NAMES) in message


def _inspect(project: str, *, running: bool, paused: bool, on_network: bool) -> dict[str, Any]:
    networks = {f"{project}_shardnet": {}} if on_network else {}
    return {"State": {"Running": running, "Paused": paused},
            "Config": {"Labels": {"com.docker.compose.project": project,
                                  "com.docker.compose.service": "shard0-node1"}},
            "NetworkSettings": {"Networks": networks}}


def test_container_state_from_docker_inspect(tmp_path: Path) -> None:
    generate(TestnetSpec(shards=1, validators=4, accounts=10), tmp_path)
    nodes = ComposeNodes(tmp_path)
    assert nodes._state(_inspect("p", running=True, paused=False, on_network=True)) == "running"
    assert nodes._state(_inspect("p", running=True, paused=True, on_network=True)) == "paused"
    assert nodes._state(_inspect("p", running=False, paused=False, on_network=True)) == "stopped"
    assert nodes._state(_inspect("p", running=True, paused=False,
                                 on_network=False)) == "disconnected"


def test_compose_project_without_a_compose_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ControlError) as refused:
        ComposeNodes(tmp_path / "nowhere")
    assert "docker-compose.yml not found" in str(refused.value)
    assert "\n" not in str(refused.value)
