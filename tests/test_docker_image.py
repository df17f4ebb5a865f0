"""The shardnet image (Dockerfile + scripts/build_images.sh): CLI, non-root, healthcheck.

Skipped with a visible reason when ``docker info`` fails. The image is built once per
session, and only when missing or older than the tree (see tests/docker_support.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from node.cli import COMMANDS
from tests.docker_support import (
    container,
    docker,
    ensure_image,
    inspect_image,
    require_docker,
    run_in_image,
)

pytestmark = pytest.mark.docker

HEALTH_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def image() -> str:
    require_docker()
    return ensure_image()


@pytest.fixture(scope="session")
def image_config(image: str) -> dict[str, Any]:
    info = inspect_image(image)
    assert info is not None
    config: dict[str, Any] = info["Config"]
    return config


def test_help_lists_the_cli(image: str) -> None:
    result = run_in_image(image, ["--help"], options=["--network", "none"])
    assert result.returncode == 0, result.stderr
    assert "Usage: shardnet" in result.stdout
    listed = result.stdout.split("Commands:", 1)[1].split()
    for command in ["bench", *COMMANDS]:
        assert command in listed, f"`shardnet --help` in {image} does not list {command}"


def test_runs_as_a_fixed_non_root_user(image: str, image_config: dict[str, Any]) -> None:
    assert image_config["User"] not in ("", "root", "0")
    result = run_in_image(
        image, ["-c", "id -u; id -g; stat -c %u /data"], options=["--entrypoint", "sh"]
    )
    assert result.returncode == 0, result.stderr
    uid, gid, data_owner = result.stdout.split()
    assert uid != "0" and gid != "0"
    assert uid == "10001", "the compose generator and docs rely on uid 10001"
    assert data_owner == uid, "/data must be writable by the node's user"


def test_entrypoint_command_and_volume(image_config: dict[str, Any]) -> None:
    assert image_config["Entrypoint"] == ["shardnet"]
    assert image_config["Cmd"] == ["node", "--home", "/data"]
    assert "/data" in (image_config.get("Volumes") or {})
    env = dict(item.split("=", 1) for item in image_config["Env"])
    assert env["API_PORT"].isdigit()


def test_healthcheck_asks_the_status_endpoint(image_config: dict[str, Any]) -> None:
    health = image_config["Healthcheck"]
    command = " ".join(health["Test"])
    assert health["Test"][0] == "CMD" and health["Test"][1] == "python"
    assert "API_PORT" in command and "/v1/status" in command and "127.0.0.1" in command
    assert health["Interval"] > 0 and health["Timeout"] > 0 and health["Retries"] > 0


def _status_server(port: int) -> str:
    """Python for a stand-in node API: 200 on GET /v1/status, 404 elsewhere."""
    return (
        "import http.server\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        ok = self.path == '/v1/status'\n"
        "        self.send_response(200 if ok else 404); self.end_headers()\n"
        "        self.wfile.write(b'{}')\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )


def _health(container_id: str) -> dict[str, Any]:
    state = json.loads(docker("inspect", "-f", "{{json .State}}", container_id).stdout)
    health: dict[str, Any] = state.get("Health") or {}
    return health


def test_healthcheck_turns_healthy_when_the_api_answers(
    image: str, image_config: dict[str, Any]
) -> None:
    """The image's own healthcheck command, against a stand-in API on a non-default port."""
    port = 18081
    options = [
        "--network", "none",
        "--entrypoint", "python",
        "--env", f"API_PORT={port}",
        "--health-interval", "1s",
        "--health-start-period", "0s",
    ]  # fmt: skip
    with container(image, ["-c", _status_server(port)], options=options) as container_id:
        docker("start", container_id)
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while (status := _health(container_id).get("Status")) != "healthy":
            assert status in ("starting", None), _health(container_id)
            assert time.monotonic() < deadline, f"not healthy after {HEALTH_TIMEOUT_S} s"
            time.sleep(0.5)
        # The same command fails when nothing answers on API_PORT.
        probe = image_config["Healthcheck"]["Test"][1:]
        wrong = docker("exec", "--env", "API_PORT=18082", container_id, *probe, check=False)
        assert wrong.returncode != 0
