"""A testnet folder's stack on Docker Swarm (docs/SWARM.md): what ``shardnet testnet
swarm up|status|load|down`` do, through the ``docker`` command.

- Placement: validator ``i`` of every shard runs on the machines labelled
  ``shardnet.slot<i>=true``; ``label_nodes`` spreads the slots over the swarm's ready
  machines (slot i on machine i mod M), so with M >= R machines no two validators of a
  shard share one, and with fewer each machine holds as few of them as it can.
- Publishing: the ingress routing mesh needs IPVS in the kernel of each machine
  (``ingress_problem`` looks on this one); without it published ports never answer, and
  the stack is deployed with host-mode ports instead (the port opens on the machine the
  task runs on).
- Load: a one-off ``replicated-job`` service on the stack's overlay network runs
  ``shardnet testnet docker-load --json``; its report is read back from ``docker service
  logs`` (so it needs no published port at all), then the service is removed.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.cli.testnet.compose_file import IMAGE, NETWORK, SLOT_LABEL
from scripts.cli.testnet.generate import TestnetSpec
from scripts.cli.testnet.layout import Manifest, NodeEntry

DEFAULT_STACK = "shardnet"
STACK_LABEL = "com.docker.stack.namespace"
SLOT_PREFIX = SLOT_LABEL.split("{", 1)[0]  # "shardnet.slot"
POLL_S = 1.0


class SwarmError(Exception):
    """One line for the user; ``kind`` picks the exit code (usage, unreachable, check)."""

    def __init__(self, message: str, kind: str = "check") -> None:
        super().__init__(message)
        self.kind = kind


def docker(*args: str, timeout: float = 120, check: bool = True,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``docker ARGS``; a failure is a ``SwarmError`` with docker's last line."""
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True,
                              timeout=timeout, check=False, input=stdin)
    except FileNotFoundError:
        raise SwarmError("the docker command is not installed", "unreachable") from None
    except subprocess.TimeoutExpired:
        raise SwarmError(f"`docker {' '.join(args[:3])}` did not finish in {timeout:g} s",
                         "unreachable") from None
    if check and done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise SwarmError(f"`docker {' '.join(args[:3])}` failed: "
                         f"{lines[-1] if lines else done.returncode}")
    return done


def spec_of(manifest: Manifest) -> TestnetSpec:
    """The spec the folder's containers derive their testnet from."""
    return TestnetSpec(shards=manifest.shards, validators=manifest.validators,
                       accounts=manifest.accounts.count, seed=manifest.accounts.seed,
                       chain_id=manifest.chain_id, salt=manifest.salt, docker=True)


def testnet_env(spec: TestnetSpec) -> dict[str, str]:
    """The ``SHARDNET_*`` environment of the stack's services (compose_file)."""
    return {"SHARDNET_SHARDS": str(spec.shards), "SHARDNET_VALIDATORS": str(spec.validators),
            "SHARDNET_ACCOUNTS": str(spec.accounts), "SHARDNET_SEED": spec.seed,
            "SHARDNET_CHAIN_ID": spec.chain_id, "SHARDNET_SALT": spec.salt}


# -- the swarm -------------------------------------------------------------------------


def require_manager() -> None:
    """This engine is a manager of an active swarm, else a usage error saying how."""
    done = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
                  timeout=60, check=False)
    if done.returncode != 0:
        raise SwarmError(f"`docker info` failed: {done.stderr.strip()[-200:]}", "unreachable")
    state, _, manager = done.stdout.strip().partition(" ")
    if state != "active":
        raise SwarmError(f"this Docker engine is not in a swarm (state {state or '?'}): "
                         "`docker swarm init` first (docs/SWARM.md)", "usage")
    if manager != "true":
        raise SwarmError("this Docker engine is a swarm worker: run it on a manager "
                         "(`docker node ls` works there)", "usage")


def require_image(image: str = IMAGE) -> None:
    if docker("image", "inspect", image, check=False, timeout=60).returncode != 0:
        raise SwarmError(f"{image} is not in this engine: `make images` (and `docker save "
                         f"{image} | ssh HOST docker load` for every other machine)", "usage")


@dataclass(frozen=True, slots=True)
class Machine:
    id: str
    hostname: str


def ready_machines() -> list[Machine]:
    """The swarm's machines that take tasks (ready, active), by hostname."""
    done = docker("node", "ls", "--format", "{{.ID}} {{.Hostname}} {{.Status}} "
                  "{{.Availability}}")
    machines = []
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] == "Ready" and parts[3] == "Active":
            machines.append(Machine(parts[0], parts[1]))
    return sorted(machines, key=lambda m: (m.hostname, m.id))


def slot_plan(validators: int, machines: Sequence[Machine]) -> dict[str, set[int]]:
    """Machine id -> the validator slots it holds: slot i on machine i mod M."""
    plan: dict[str, set[int]] = {m.id: set() for m in machines}
    for slot in range(validators):
        plan[machines[slot % len(machines)].id].add(slot)
    return plan


def label_nodes(validators: int) -> dict[str, list[int]]:
    """Set the ``shardnet.slot<i>`` labels (and remove stale ones); hostname -> slots."""
    machines = ready_machines()
    if not machines:
        raise SwarmError("the swarm has no ready, active machine")
    plan = slot_plan(validators, machines)
    for machine in machines:
        labels = json.loads(docker("node", "inspect", "--format", "{{json .Spec.Labels}}",
                                   machine.id).stdout or "null") or {}
        have = {int(key[len(SLOT_PREFIX):]) for key, value in labels.items()
                if key.startswith(SLOT_PREFIX) and key[len(SLOT_PREFIX):].isdigit()
                and value == "true"}
        want = plan[machine.id]
        args = [*(a for s in sorted(have - want)
                  for a in ("--label-rm", SLOT_LABEL.format(index=s))),
                *(a for s in sorted(want - have)
                  for a in ("--label-add", f"{SLOT_LABEL.format(index=s)}=true"))]
        if args:
            docker("node", "update", *args, machine.id)
    return {m.hostname: sorted(plan[m.id]) for m in machines}


def ingress_problem() -> str | None:
    """Why the ingress routing mesh cannot work on this machine, or None. It balances
    published ports with IPVS: without the kernel's ip_vs (built in or a module),
    `docker stack deploy` succeeds and the ports never answer."""
    if platform.system() != "Linux":
        return None  # Docker Desktop: a Linux VM of its own, with IPVS
    if Path("/proc/net/ip_vs").exists():
        return None
    modules = Path("/lib/modules") / platform.release()
    if modules.is_dir() and any(modules.rglob("ip_vs.ko*")):
        return None  # loadable: dockerd loads it
    return ("the ingress routing mesh is unusable on this machine: its kernel has no IPVS "
            "(/proc/net/ip_vs missing, no ip_vs module), so published ports would not answer")


# -- the stack --------------------------------------------------------------------------


def deploy(stack: str, stack_file: Path) -> None:
    docker("stack", "deploy", "--compose-file", str(stack_file), stack, timeout=300)


@dataclass(frozen=True, slots=True)
class Task:
    service: str
    machine: str
    state: str  # docker's CurrentState, e.g. "Running 5 seconds ago"
    desired: str
    error: str


def tasks(stack: str, current: bool = True) -> list[Task]:
    """The stack's current tasks, or with ``current`` False also the ended ones (newest
    first within a service)."""
    filters = ["--filter", "desired-state=running"] if current else []
    done = docker("stack", "ps", stack, "--no-trunc", *filters, "--format", "{{json .}}",
                  check=False)
    if done.returncode != 0:
        return []
    found = []
    for line in done.stdout.splitlines():
        row = json.loads(line)
        service = str(row.get("Name", "")).split(".", 1)[0]
        found.append(Task(service=service, machine=str(row.get("Node", "")),
                          state=str(row.get("CurrentState", "")),
                          desired=str(row.get("DesiredState", "")),
                          error=str(row.get("Error", ""))))
    return found


def services(stack: str) -> dict[str, str]:
    """Service name -> replicas (``1/1``) of the stack."""
    done = docker("stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}",
                  check=False)
    if done.returncode != 0:
        return {}
    return dict(line.split(maxsplit=1) for line in done.stdout.splitlines() if " " in line)


def wait_running(stack: str, nodes: Sequence[NodeEntry], timeout_s: float
                 ) -> dict[str, str]:
    """Wait until every node service runs one task. The services that do not, each with
    why: as soon as one has no task left to run (it ended and its restart policy does not
    start another), else at the deadline."""
    wanted = {f"{stack}_{n.name}" for n in nodes}
    deadline = time.monotonic() + timeout_s
    while True:
        every = tasks(stack, current=False)
        running = {t.service for t in every if t.desired == "Running"
                   and t.state.startswith("Running")}
        pending = {t.service for t in every if t.desired == "Running"}
        ended = {}
        for task in every:  # newest first: the first ended task of a service says why
            if task.service in wanted - pending and task.service not in ended:
                ended[task.service] = f"ended: {task.state}" + (
                    f" ({task.error})" if task.error else "")
        if ended:
            return ended
        missing = sorted(wanted - running)
        if not missing:
            return {}
        if time.monotonic() > deadline:
            states = {t.service: t.state for t in every if t.desired == "Running"}
            return {m: states.get(m, "no task") for m in missing}
        time.sleep(POLL_S)


def published_urls(nodes: Sequence[NodeEntry], host: str = "127.0.0.1") -> dict[str, str]:
    """Each node's published API port (8000 + k, as compose_file publishes them)."""
    return {n.name: f"http://{host}:{8000 + k}" for k, n in enumerate(nodes)}


def remove(stack: str, timeout_s: float, keep_volumes: bool = False) -> dict[str, Any]:
    """``docker stack rm``, wait until its containers and network are gone, then remove
    its volumes on this machine (other machines keep theirs: docs/SWARM.md)."""
    removed = docker("stack", "rm", stack, check=False, timeout=120).returncode == 0
    deadline = time.monotonic() + timeout_s
    network = f"{stack}_{NETWORK}"

    def left() -> tuple[list[str], bool]:
        containers = docker("ps", "-aq", "--filter", f"label={STACK_LABEL}={stack}",
                            check=False).stdout.split()
        net = docker("network", "ls", "-q", "--filter", f"name=^{network}$",
                     check=False).stdout.split()
        return containers, bool(net)

    containers, net = left()
    while (containers or net) and time.monotonic() < deadline:
        time.sleep(POLL_S)
        containers, net = left()
    volumes: list[str] = []
    if not keep_volumes and not containers:
        volumes = docker("volume", "ls", "-q", "--filter", f"label={STACK_LABEL}={stack}",
                         check=False).stdout.split()
        if volumes:
            docker("volume", "rm", *volumes, check=False, timeout=120)
        volumes = [v for v in volumes if docker("volume", "inspect", v, check=False,
                                                timeout=30).returncode != 0]
    return {"stack": stack, "removed": removed, "containers_left": len(containers),
            "network_left": net, "volumes_removed": volumes}


# -- load inside the overlay network -----------------------------------------------------


def load_job(stack: str, spec: TestnetSpec, load_args: Sequence[str], timeout_s: float,
             image: str = IMAGE) -> dict[str, Any]:
    """Run ``testnet docker-load --json --quiet LOAD_ARGS`` as a one-off job on the
    stack's network; return its report (``{"report": ..., "exit": ..., "service": ...}``).
    The job service is removed afterwards, also on failure."""
    name = f"{stack}_load-{uuid.uuid4().hex[:8]}"
    env = [a for key, value in sorted(testnet_env(spec).items()) for a in ("--env",
                                                                           f"{key}={value}")]
    docker("service", "create", "--detach", "--name", name, "--mode", "replicated-job",
           "--restart-condition", "none", "--no-healthcheck",
           "--network", f"{stack}_{NETWORK}", "--label", f"{STACK_LABEL}={stack}",
           "--log-driver", "json-file", *env, image,
           "testnet", "docker-load", "--json", "--quiet", *load_args, timeout=120)
    try:
        state, error = _wait_job(name, timeout_s)
        logs = docker("service", "logs", "--raw", name, check=False, timeout=120)
        report = _report_in(logs.stdout)
        if report is None:
            tail = " | ".join((logs.stderr or logs.stdout).strip().splitlines()[-3:])
            raise SwarmError(f"the load job {name} ended {state or 'without a state'}"
                             f"{': ' + error if error else ''} without a report "
                             f"(last lines: {tail or 'none'})")
        return {"service": name, "state": state, "error": error, "report": report}
    finally:
        docker("service", "rm", name, check=False, timeout=60)


def _wait_job(name: str, timeout_s: float) -> tuple[str, str]:
    """The job task's final state (``Complete``, ``Failed`` ...) and error."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = docker("service", "ps", name, "--no-trunc", "--format",
                      "{{.CurrentState}}|{{.Error}}", check=False)
        rows = [line.split("|", 1) for line in done.stdout.splitlines() if "|" in line]
        if rows:
            state = rows[0][0].split(" ", 1)[0]
            if state in ("Complete", "Failed", "Rejected", "Shutdown", "Orphaned"):
                return state, rows[0][1].strip()
        if time.monotonic() > deadline:
            raise SwarmError(f"the load job {name} did not finish in {timeout_s:g} s "
                             f"(state: {rows[0][0] if rows else 'no task yet'})")
        time.sleep(POLL_S)


def _report_in(text: str) -> dict[str, Any] | None:
    """The JSON report ``shardnet load --json`` printed (its first line is ``{``)."""
    start = text.find("\n{\n") + 1 if not text.startswith("{") else 0
    if start == 0 and not text.startswith("{"):
        return None
    try:
        report, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def stack_file_path(root: Path, publish: str) -> Path:
    """The folder's stack file for a publish mode (``init`` writes the ingress one)."""
    return root / ("docker-stack.yml" if publish == "ingress" else "docker-stack.host.yml")
