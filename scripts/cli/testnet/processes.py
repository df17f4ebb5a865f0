"""Start and stop a local testnet's node processes.

Each node runs in its own session (process group) with stdout appended to its
log file; its pid goes to ``run/<node>.pid``. Stopping signals only pids we
wrote, and only while the process still runs our command for that home.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scripts.cli.testnet.layout import NodeEntry, TestnetDir

STOP_TIMEOUT_S = 15.0


def node_command(home: Path) -> list[str]:
    return [sys.executable, "-m", "scripts.cli", "node", "--home", str(home)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def running_pid(testnet: TestnetDir, name: str) -> int | None:
    """The pid of node ``name`` if it is alive and still runs that node's home."""
    try:
        pid = int(testnet.pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if str(testnet.home(name)) in _cmdline(pid) else None


def start_node(testnet: TestnetDir, name: str, env: dict[str, str] | None = None) -> int:
    if (pid := running_pid(testnet, name)) is not None:
        return pid
    log_path = testnet.log(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    testnet.pid_file(name).parent.mkdir(parents=True, exist_ok=True)
    repo_root = Path(__file__).resolve().parents[3]
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(repo_root), child_env.get("PYTHONPATH", "")) if p
    )
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            node_command(testnet.home(name)), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, env=child_env,
        )
    testnet.pid_file(name).write_text(f"{process.pid}\n")
    return process.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def stop_node(testnet: TestnetDir, name: str, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM the node, SIGKILL it after ``timeout_s``; True if it was running."""
    pid = running_pid(testnet, name)
    if pid is None:
        testnet.pid_file(name).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: not _alive(pid), timeout_s):
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), 5.0)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    testnet.pid_file(name).unlink(missing_ok=True)
    return True


def kill_node(testnet: TestnetDir, name: str) -> None:
    """SIGKILL (crash) the node, for fault tests."""
    pid = running_pid(testnet, name)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), 5.0)


def wait_for(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


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
