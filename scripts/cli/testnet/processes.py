"""Start and stop a local testnet's node processes; wait for their HTTP API.

The process handling lives in ``scripts.cli.testnet.control`` (the node-control
module behind ``testnet up/down/status`` and the per-node verbs); the functions
here are its by-name shorthands for scripts and tests. Each node runs in its own
session with stdout appended to its log file; its pid goes to ``run/<node>.pid``.
Stopping signals only pids we wrote, and only while the process still runs our
command for that home.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from scripts.cli.testnet.control import (
    STOP_TIMEOUT_S,
    NodeProcesses,
    node_command,
    wait_for,
)
from scripts.cli.testnet.layout import NodeEntry, TestnetDir

__all__ = ["STOP_TIMEOUT_S", "fetch_json", "kill_node", "node_command", "node_status",
           "running_pid", "start_node", "stop_node", "url_status", "wait_for", "wait_healthy"]


def running_pid(testnet: TestnetDir, name: str) -> int | None:
    """The pid of node ``name`` if it is alive and still runs that node's home."""
    return NodeProcesses(testnet).pid(name)


def start_node(testnet: TestnetDir, name: str, env: dict[str, str] | None = None) -> int:
    return NodeProcesses(testnet).spawn(name, env)


def stop_node(testnet: TestnetDir, name: str, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM the node, SIGKILL it after ``timeout_s``; True if it was running."""
    return NodeProcesses(testnet).terminate(name, timeout_s)


def kill_node(testnet: TestnetDir, name: str) -> None:
    """SIGKILL (crash) the node, for fault tests."""
    NodeProcesses(testnet).crash(name)


def fetch_json(url: str, timeout_s: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def node_status(node: NodeEntry, timeout_s: float = 1.0) -> dict[str, Any] | None:
    return url_status(node.api_url, timeout_s)


def url_status(api_url: str, timeout_s: float = 1.0) -> dict[str, Any] | None:
    """``GET /v1/status`` of the node at ``api_url``; None when it does not answer."""
    try:
        status: dict[str, Any] = fetch_json(f"{api_url}/v1/status", timeout_s)
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return status


def wait_healthy(nodes: list[NodeEntry], timeout_s: float) -> list[str]:
    """Wait until every node answers /v1/status; return the names that never did."""
    pending = {node.name: node for node in nodes}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for name, node in list(pending.items()):
            if node_status(node) is not None:
                del pending[name]
        if pending:
            time.sleep(0.2)
    return sorted(pending)
