"""Node control: start, stop, kill, pause, resume, restart one node of a testnet.

One module serves ``shardnet testnet start|stop|kill|restart|pause|resume|disconnect|
connect NODE``, ``testnet up/down/status`` and the fault-injection tools, over two
backends with the same verbs:

- ``LocalNodes``: the node processes of a testnet folder (``run/<node>.pid``). A node
  is its process tree (the node and its executor workers), handled with psutil:
  pause = SIGSTOP, resume = SIGCONT, stop = SIGTERM then SIGKILL after a bounded
  grace period, kill = SIGKILL, start = the command ``testnet up`` runs. A pid is
  only signalled while its command line still names that node's home.
- ``ComposeNodes``: the containers of a compose project, with the docker CLI
  (stop, kill, start, restart, pause, unpause, network disconnect/connect).

Every verb returns a ``ControlResult`` (a one-line ``describe()``, a JSON-ready
``as_dict()``) or raises ``ControlError`` with one line saying what to fix.
Verbs are idempotent where that is natural (stopping a stopped node, resuming a
running one); pausing or killing a node that does not run is an error.

    nodes = open_nodes(root=Path("testnets/default"))
    nodes.pause("shard0-node1"); nodes.resume("0/1")
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import click
import psutil

from scripts.cli.exits import USAGE
from scripts.cli.testnet.layout import NodeEntry, TestnetDir

STOP_TIMEOUT_S = 15.0
KILL_WAIT_S = 5.0
SIGNAL_WAIT_S = 5.0
NODE_NAME = re.compile(r"shard(\d+)-node(\d+)")
SHORT_NAME = re.compile(r"(?:s(\d+)n(\d+)|(\d+)[/.](\d+))")

State = Literal["running", "paused", "stopped", "disconnected"]
VERBS = ("start", "stop", "kill", "restart", "pause", "resume", "disconnect", "connect")


class ControlError(click.ClickException):
    """A verb could not be carried out; the message is one line saying what to fix
    (a ClickException: on the command line, ``Error: <message>`` and exit 1)."""


class ControlUsageError(ControlError):
    """What was named does not exist: the testnet folder, compose file or node (exit 2,
    ``exits.USAGE``)."""

    exit_code = USAGE


@dataclass
class ControlResult:
    action: str
    node: str
    backend: str
    before: str
    after: str
    changed: bool
    pid: int | None = None
    container: str | None = None
    elapsed_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"ok": True, **asdict(self)}

    def describe(self) -> str:
        where = (f" (pid {self.pid})" if self.pid is not None else
                 f" (container {self.container})" if self.container else "")
        if not self.changed:
            return f"{self.node} was already {self.before}: nothing to {self.action}"
        past = {"start": "started", "stop": "stopped", "kill": "killed",
                "restart": "restarted", "pause": "paused", "resume": "resumed",
                "disconnect": "disconnected", "connect": "reconnected"}[self.action]
        return f"{past} {self.node}{where}: {self.before} -> {self.after}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (psutil: Linux, macOS, Windows); 0.0 when
    it is gone or not ours to read."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def wait_for(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def resolve(names: Sequence[str], node: str) -> str:
    """``node`` as one of ``names``: the name itself (``shard0-node1``), ``s0n1`` or
    ``0/1`` (shard/index). Unknown names raise ControlError listing the valid ones."""
    if node in names:
        return node
    short = SHORT_NAME.fullmatch(node.strip().lower())
    if short is not None:
        shard, index = (int(g) for g in short.groups() if g is not None)
        candidate = f"shard{shard}-node{index}"
        if candidate in names:
            return candidate
    listed = ", ".join(names) if names else "none"
    raise ControlUsageError(f"unknown node {node!r}: valid names are {listed} "
                            "(or SHARD/INDEX, e.g. 0/1)")


class NodeControl(Protocol):
    backend: str

    def names(self) -> list[str]: ...
    def state(self, name: str) -> State: ...
    def api_url(self, name: str) -> str | None: ...
    def start(self, node: str) -> ControlResult: ...
    def stop(self, node: str, timeout_s: float = STOP_TIMEOUT_S) -> ControlResult: ...
    def kill(self, node: str) -> ControlResult: ...
    def restart(self, node: str, timeout_s: float = STOP_TIMEOUT_S) -> ControlResult: ...
    def pause(self, node: str) -> ControlResult: ...
    def resume(self, node: str) -> ControlResult: ...
    def disconnect(self, node: str) -> ControlResult: ...
    def connect(self, node: str) -> ControlResult: ...


def open_nodes(root: Path | None = None, compose: Path | None = None,
               project: str | None = None) -> NodeControl:
    """The compose project at ``compose`` when given, else the testnet folder ``root``."""
    if compose is not None:
        return ComposeNodes(compose, project)
    if root is None:
        raise ControlUsageError(
            "give a testnet folder (--testnet) or a compose project (--compose)")
    return LocalNodes(root)


def _timed(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# ---------------------------------------------------------------------------
# Local processes


def node_command(home: Path) -> list[str]:
    """The command that runs the node of ``home`` (what ``testnet up`` starts)."""
    return [sys.executable, "-m", "scripts.cli", "node", "--home", str(home)]


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _signal_all(processes: Sequence[psutil.Process], sig: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)


def _reap(processes: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until ``processes`` are gone (reaping our own children); the ones still alive."""
    if not wait_for(lambda: all(_gone(p) for p in processes), timeout_s):
        return [p for p in processes if not _gone(p)]
    for process in processes:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(process.pid, os.WNOHANG)
    return []


class NodeProcesses:
    """The node processes of a testnet folder, by node name (no manifest needed)."""

    def __init__(self, testnet: TestnetDir) -> None:
        self.dir = testnet

    def process(self, name: str) -> psutil.Process | None:
        """Node ``name``'s process if it is alive and still runs that node's home."""
        try:
            pid = int(self.dir.pid_file(name).read_text().strip())
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            if str(self.dir.home(name)) not in " ".join(process.cmdline()):
                return None
        except (OSError, ValueError, psutil.Error):
            return None
        return process

    def pid(self, name: str) -> int | None:
        process = self.process(name)
        return None if process is None else process.pid

    def state(self, name: str) -> State:
        process = self.process(name)
        if process is None:
            return "stopped"
        try:
            stopped = process.status() == psutil.STATUS_STOPPED
        except psutil.Error:
            return "stopped"
        return "paused" if stopped else "running"

    def spawn(self, name: str, env: dict[str, str] | None = None) -> int:
        """Launch node ``name`` unless it runs; its pid. No waiting, no checks."""
        if (process := self.process(name)) is not None:
            return process.pid
        log_path = self.dir.log(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.dir.pid_file(name).parent.mkdir(parents=True, exist_ok=True)
        repo_root = Path(__file__).resolve().parents[3]
        child_env = {**os.environ, **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(repo_root), child_env.get("PYTHONPATH", "")) if p
        )
        with log_path.open("ab") as log:
            child = subprocess.Popen(
                # The node rotates its own log (RotatingFileHandler); output written
                # before its logging starts (or a crash) is appended here too.
                [*node_command(self.dir.home(name)), "--log-file", str(log_path)],
                stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, env=child_env,
            )
        self.dir.pid_file(name).write_text(f"{child.pid}\n")
        return child.pid

    def terminate(self, name: str, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM the node (SIGCONT too, should it be paused), SIGKILL its tree after
        ``timeout_s``; True if it was running."""
        process = self.process(name)
        if process is None:
            self.dir.pid_file(name).unlink(missing_ok=True)
            return False
        tree = _tree(process)
        _signal_all(tree[:1], signal.SIGTERM)
        _signal_all(tree, signal.SIGCONT)
        if _reap(tree[:1], timeout_s):
            _signal_all(tree, signal.SIGKILL)
        # The node stops its executor workers; any left over die with it.
        if leftover := _reap(tree, KILL_WAIT_S):
            _signal_all(leftover, signal.SIGKILL)
            _reap(leftover, KILL_WAIT_S)
        self.dir.pid_file(name).unlink(missing_ok=True)
        return True

    def terminate_all(self, names: Iterable[str],
                      timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
        """``terminate`` the named nodes at once, each from its own thread, so a testnet
        stops in about its slowest node's time rather than the sum (8 nodes at load 25:
        8.4 s -> 1.7 s, median of 3); the names that were running, in the given order."""
        names = list(names)
        if not names:
            return []
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            ran = list(pool.map(lambda name: self.terminate(name, timeout_s), names))
        return [name for name, running in zip(names, ran, strict=True) if running]

    def crash(self, name: str) -> bool:
        """SIGKILL the node's whole tree (a crash); True if it was running."""
        process = self.process(name)
        if process is None:
            return False
        tree = _tree(process)
        _signal_all(tree, signal.SIGKILL)
        _reap(tree, KILL_WAIT_S)
        return True



class LocalNodes(NodeProcesses):
    """The verbs over the node processes of the testnet folder ``root``."""

    backend = "local"

    def __init__(self, root: Path) -> None:
        super().__init__(TestnetDir(root))
        try:
            self.manifest = self.dir.load_manifest()
        except FileNotFoundError as exc:
            raise ControlUsageError(str(exc)) from None
        except (OSError, ValueError) as exc:
            raise ControlUsageError(f"{self.dir.manifest_path}: {exc}") from None

    @property
    def nodes(self) -> list[NodeEntry]:
        return list(self.manifest.nodes)

    def names(self) -> list[str]:
        return [node.name for node in self.manifest.nodes]

    def api_url(self, name: str) -> str | None:
        return next((n.api_url.rstrip("/") for n in self.manifest.nodes if n.name == name), None)

    def _running(self, node: str, action: str) -> tuple[str, psutil.Process, State]:
        name = resolve(self.names(), node)
        process = self.process(name)
        if process is None:
            raise ControlError(f"{name} is not running: nothing to {action} (start it with "
                               f"`shardnet testnet start {name} --testnet {self.dir.root}`)")
        return name, process, self.state(name)

    def start(self, node: str) -> ControlResult:
        started = time.monotonic()
        name = resolve(self.names(), node)
        before = self.state(name)
        if before == "paused":
            raise ControlError(f"{name} is paused, not stopped: "
                               f"`shardnet testnet resume {name} --testnet {self.dir.root}`")
        pid = self.spawn(name)
        return ControlResult("start", name, self.backend, before, self.state(name),
                             before == "stopped", pid=pid, elapsed_ms=_timed(started))

    def stop(self, node: str, timeout_s: float = STOP_TIMEOUT_S) -> ControlResult:
        started = time.monotonic()
        name = resolve(self.names(), node)
        before, pid = self.state(name), self.pid(name)
        changed = self.terminate(name, timeout_s)
        return ControlResult("stop", name, self.backend, before, self.state(name), changed,
                             pid=pid, elapsed_ms=_timed(started))

    def kill(self, node: str) -> ControlResult:
        started = time.monotonic()
        name, process, before = self._running(node, "kill")
        self.crash(name)
        return ControlResult("kill", name, self.backend, before, self.state(name), True,
                             pid=process.pid, elapsed_ms=_timed(started))

    def restart(self, node: str, timeout_s: float = STOP_TIMEOUT_S) -> ControlResult:
        started = time.monotonic()
        name = resolve(self.names(), node)
        before = self.state(name)
        self.terminate(name, timeout_s)
        pid = self.spawn(name)
        return ControlResult("restart", name, self.backend, before, self.state(name), True,
                             pid=pid, elapsed_ms=_timed(started))

    def _signal(self, node: str, action: str, sig: int, want: State) -> ControlResult:
        started = time.monotonic()
        name, process, before = self._running(node, action)
        if before == want:
            return ControlResult(action, name, self.backend, before, before, False,
                                 pid=process.pid, elapsed_ms=_timed(started))
        tree = _tree(process)
        _signal_all(tree, sig)
        if not wait_for(lambda: self.state(name) in (want, "stopped"), SIGNAL_WAIT_S):
            raise ControlError(f"{name} (pid {process.pid}) did not become {want} within "
                               f"{SIGNAL_WAIT_S:.0f}s after {signal.Signals(sig).name}")
        return ControlResult(action, name, self.backend, before, self.state(name), True,
                             pid=process.pid, elapsed_ms=_timed(started))

    def pause(self, node: str) -> ControlResult:
        return self._signal(node, "pause", signal.SIGSTOP, "paused")

    def resume(self, node: str) -> ControlResult:
        return self._signal(node, "resume", signal.SIGCONT, "running")

    def disconnect(self, node: str) -> ControlResult:
        resolve(self.names(), node)
        raise ControlError("disconnect and connect need a compose network (--compose DIR): "
                           "local processes share 127.0.0.1; `pause` cuts a local node off")

    connect = disconnect


# ---------------------------------------------------------------------------
# Compose containers


class ComposeNodes:
    """The node containers of a compose project (the folder or file ``path``)."""

    backend = "compose"

    def __init__(self, path: Path, project: str | None = None) -> None:
        from scripts.cli.testnet.compose_file import NETWORK

        path = Path(path)
        self.file = path if path.suffix in (".yml", ".yaml") else path / "docker-compose.yml"
        if not self.file.is_file():
            raise ControlUsageError(f"{self.file} not found: give the folder of a compose "
                                    "file (`shardnet testnet init` writes one) or the file "
                                    "itself")
        self.cwd = self.file.parent
        self.args = ["-f", str(self.file), *(["-p", project] if project else [])]
        self.network_suffix = f"_{NETWORK}"
        self._names: list[str] | None = None

    def _run(self, command: Sequence[str], timeout_s: float = 120) -> str:
        try:
            done = subprocess.run(list(command), cwd=self.cwd, capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
        except FileNotFoundError:
            raise ControlError(f"{command[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise ControlError(f"`{' '.join(command[:3])} ...` did not finish within "
                               f"{timeout_s:.0f}s: is the Docker engine answering?") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise ControlError(f"`{' '.join(command[:3])} ...` failed: "
                               f"{lines[-1] if lines else done.returncode}")
        return done.stdout

    def _compose(self, *args: str) -> str:
        from scripts.cli.compose import ComposeNotFound, compose_command

        try:
            command = compose_command()
        except ComposeNotFound as exc:
            raise ControlError(str(exc)) from None
        return self._run([*command, *self.args, *args])

    def _docker(self, *args: str, timeout_s: float = 120) -> str:
        return self._run(["docker", *args], timeout_s)

    def names(self) -> list[str]:
        if self._names is None:
            services = self._compose("config", "--services").split()
            self._names = sorted((s for s in services if NODE_NAME.fullmatch(s)),
                                 key=lambda s: tuple(int(g) for g in NODE_NAME.fullmatch(s)
                                                     .groups()))  # type: ignore[union-attr]
        return self._names

    def container(self, name: str) -> str | None:
        ids = self._compose("ps", "-a", "-q", name).split()
        return ids[0] if ids else None

    def inspect(self, container: str) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self._docker("inspect", container))[0]
        return info

    def network(self, info: dict[str, Any]) -> str:
        labels = (info.get("Config") or {}).get("Labels") or {}
        return f"{labels.get('com.docker.compose.project', '')}{self.network_suffix}"

    def _state(self, info: dict[str, Any]) -> State:
        state = info.get("State") or {}
        if state.get("Paused"):
            return "paused"
        if not state.get("Running"):
            return "stopped"
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        return "running" if self.network(info) in networks else "disconnected"

    def state(self, name: str) -> State:
        container = self.container(name)
        return "stopped" if container is None else self._state(self.inspect(container))

    def api_url(self, name: str) -> str | None:
        container = self.container(name)
        if container is None:
            return None
        ports = (self.inspect(container).get("NetworkSettings") or {}).get("Ports") or {}
        bound = ports.get("8000/tcp") or []
        return f"http://127.0.0.1:{bound[0]['HostPort']}" if bound else None

    def _target(self, node: str) -> tuple[str, str, dict[str, Any]]:
        name = resolve(self.names(), node)
        container = self.container(name)
        if container is None:
            raise ControlError(f"{name} has no container: start the project with "
                               f"`docker compose up -d` in {self.cwd}")
        return name, container, self.inspect(container)

    def _verb(self, node: str, action: str, docker_args: Callable[[str, dict[str, Any]],
              list[str]], *, needs: tuple[State, ...], skip: tuple[State, ...],
              timeout_s: float = 120) -> ControlResult:
        started = time.monotonic()
        name, container, info = self._target(node)
        before = self._state(info)
        short = container[:12]
        if before in skip:
            return ControlResult(action, name, self.backend, before, before, False,
                                 container=short, elapsed_ms=_timed(started))
        if before not in needs:
            hint = ("start it first" if before == "stopped" else
                    "resume it first" if before == "paused" else "connect it first")
            raise ControlError(f"{name} is {before}: cannot {action} it ({hint})")
        self._docker(*docker_args(container, info), timeout_s=timeout_s)
        after = self._state(self.inspect(container))
        return ControlResult(action, name, self.backend, before, after, True,
                             container=short, elapsed_ms=_timed(started))

    def start(self, node: str) -> ControlResult:
        return self._verb(node, "start", lambda c, _: ["start", c], needs=("stopped",),
                          skip=("running", "disconnected", "paused"))

    def stop(self, node: str, timeout_s: float = STOP_TIMEOUT_S) -> ControlResult:
        return self._verb(node, "stop", lambda c, _: ["stop", "-t", f"{timeout_s:.0f}", c],
                          needs=("running", "disconnected", "paused"), skip=("stopped",),
                          timeout_s=timeout_s + 60)

    def kill(self, node: str) -> ControlResult:
        return self._verb(node, "kill", lambda c, _: ["kill", c],
                          needs=("running", "disconnected", "paused"), skip=())

    def restart(self, node: str, timeout_s: float = STOP_TIMEOUT_S) -> ControlResult:
        return self._verb(node, "restart",
                          lambda c, _: ["restart", "-t", f"{timeout_s:.0f}", c],
                          needs=("running", "disconnected", "stopped"), skip=(),
                          timeout_s=timeout_s + 60)

    def pause(self, node: str) -> ControlResult:
        return self._verb(node, "pause", lambda c, _: ["pause", c],
                          needs=("running", "disconnected"), skip=("paused",))

    def resume(self, node: str) -> ControlResult:
        return self._verb(node, "resume", lambda c, _: ["unpause", c],
                          needs=("paused",), skip=("running", "disconnected"))

    def disconnect(self, node: str) -> ControlResult:
        return self._verb(node, "disconnect",
                          lambda c, info: ["network", "disconnect", self.network(info), c],
                          needs=("running",), skip=("disconnected",))

    def connect(self, node: str) -> ControlResult:
        def args(container: str, info: dict[str, Any]) -> list[str]:
            labels = (info.get("Config") or {}).get("Labels") or {}
            service = labels.get("com.docker.compose.service", "")
            return ["network", "connect", *(["--alias", service] if service else []),
                    self.network(info), container]

        return self._verb(node, "connect", args, needs=("disconnected",), skip=("running",))
