"""Emulating separate machines on one (``testnet init --cpus-per-node --latency
--bandwidth``, issue 19): each compose node gets a CPU limit (Compose ``cpus:``) and, on
its network interfaces, an added one-way delay and a rate limit (Linux traffic control,
``tc``, from Debian's iproute2 in the image).

The compose file passes the delay and rate to the container as ``SHARDNET_NET_DELAY_MS``
and ``SHARDNET_NET_RATE_BIT``; the container starts as root with ``NET_ADMIN`` only when
one of them is set, ``docker-node`` installs the qdisc (``apply``) and drops to the
image's unprivileged ``shardnet`` user before it runs the node. Every outcome is one
structlog event: ``net.emulation.applied``, or ``net.emulation.failed`` with a reason
(``no_tc``: iproute2 missing; ``no_netem``: the kernel has no netem qdisc, so the
kernel adds no delay, while it still limits the rate, with tbf; ``not_permitted``: no
``NET_ADMIN``; ``tc_failed``), each with the ``method`` tried (``netem``, ``tbf``).
What the kernel did not apply, the node does in userspace (:func:`userspace_part`:
``[net_emulation] mode = "userspace"`` in its config, node/p2p/shaping.py), and logs
``net.emulation.applied`` with ``method: "userspace"`` once its p2p layer runs. A delay
on every interface of each container doubles in a round trip between two containers:
``--latency 20ms`` adds about 40 ms of RTT (so does the userspace delay).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DELAY_ENV = "SHARDNET_NET_DELAY_MS"
RATE_ENV = "SHARDNET_NET_RATE_BIT"
DELAY_MS_MAX = 2_000  # a round trip of 4 s stays below the p2p heartbeat timeout (5 s)
RATE_BIT_MIN = 8_000  # 8 kbit/s
RATE_BIT_MAX = 100_000_000_000  # 100 gbit/s
CPUS_MAX = 1024.0
QUEUE_PACKETS = 100_000  # netem's queue: large enough not to drop at 1 gbit x 20 ms
RUN_USER = "shardnet"  # the image's unprivileged user (Dockerfile)
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}


class EmulationError(ValueError):
    """A --latency, --bandwidth or --cpus-per-node value that cannot be emulated."""


@dataclass(frozen=True, slots=True)
class Emulation:
    """What the compose file asks each node's container to emulate (None: nothing)."""

    cpus: float | None = None
    delay_ms: int | None = None
    rate_bit: int | None = None

    @property
    def shapes_network(self) -> bool:
        return self.delay_ms is not None or self.rate_bit is not None

    def env(self) -> dict[str, str]:
        """The container environment that asks ``docker-node`` for the qdisc."""
        env = {}
        if self.delay_ms is not None:
            env[DELAY_ENV] = str(self.delay_ms)
        if self.rate_bit is not None:
            env[RATE_ENV] = str(self.rate_bit)
        return env

    def describe(self) -> str:
        parts = []
        if self.cpus is not None:
            parts.append(f"{self.cpus:g} CPUs per node")
        if self.delay_ms is not None:
            parts.append(f"+{self.delay_ms} ms one-way latency")
        if self.rate_bit is not None:
            parts.append(f"{format_rate(self.rate_bit)} per node")
        return ", ".join(parts)


def parse_latency(text: str) -> int:
    """``20ms``, ``0.05s``, ``20`` (ms) -> whole milliseconds in (0, DELAY_MS_MAX]."""
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*", text)
    if not found:
        raise EmulationError(f"latency {text!r} is not a duration like 20ms or 0.05s")
    ms = float(found.group(1)) * (1000 if found.group(2) == "s" else 1)
    if not 1 <= round(ms) <= DELAY_MS_MAX:
        raise EmulationError(f"latency {text!r} must be between 1 ms and {DELAY_MS_MAX} ms")
    return round(ms)


def parse_bandwidth(text: str) -> int:
    """``1gbit``, ``100mbit``, ``512kbit`` (tc's bit units) -> bits per second."""
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(bit|kbit|mbit|gbit)\s*", text.lower())
    if not found:
        raise EmulationError(f"bandwidth {text!r} is not a rate like 1gbit, 100mbit or "
                             "512kbit")
    bits = round(float(found.group(1)) * _RATE_UNITS[found.group(2)])
    if not RATE_BIT_MIN <= bits <= RATE_BIT_MAX:
        raise EmulationError(f"bandwidth {text!r} must be between 8kbit and 100gbit")
    return bits


def parse_cpus(value: float) -> float:
    if not 0.01 <= value <= CPUS_MAX:
        raise EmulationError(f"--cpus-per-node {value:g} must be between 0.01 and "
                             f"{CPUS_MAX:g}")
    return value


def emulation_of(cpus: float | None, delay_ms: int | None, rate_bit: int | None
                 ) -> Emulation | None:
    """The emulation ``testnet init`` asks for, None when none."""
    if cpus is None and delay_ms is None and rate_bit is None:
        return None
    return Emulation(cpus=cpus, delay_ms=delay_ms, rate_bit=rate_bit)


def emulation_param(ctx: Any, param: Any, value: Any) -> Any:
    """click callback of ``--cpus-per-node``, ``--latency``, ``--bandwidth``: parsed, or
    a usage error (exit 2) naming the option."""
    import click

    if value is None:
        return None
    parse: dict[str, Callable[[Any], Any]] = {
        "cpus_per_node": parse_cpus, "latency": parse_latency, "bandwidth": parse_bandwidth}
    try:
        return parse[param.name](value)
    except EmulationError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def format_rate(bits: int) -> str:
    for unit, size in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= size and bits % size == 0:
            return f"{bits // size}{unit}"
    return f"{bits}bit"


def from_env(env: Mapping[str, str]) -> Emulation:
    """The emulation a container's environment asks for; refuses malformed values."""
    delay = env.get(DELAY_ENV, "").strip()
    rate = env.get(RATE_ENV, "").strip()
    try:
        delay_ms = int(delay) if delay else None
        rate_bit = int(rate) if rate else None
    except ValueError:
        raise EmulationError(f"{DELAY_ENV}={delay!r} / {RATE_ENV}={rate!r}: whole numbers "
                             "expected") from None
    if delay_ms is not None and not 1 <= delay_ms <= DELAY_MS_MAX:
        raise EmulationError(f"{DELAY_ENV}={delay_ms} not in [1, {DELAY_MS_MAX}]")
    if rate_bit is not None and not RATE_BIT_MIN <= rate_bit <= RATE_BIT_MAX:
        raise EmulationError(f"{RATE_ENV}={rate_bit} not in [{RATE_BIT_MIN}, {RATE_BIT_MAX}]")
    return Emulation(delay_ms=delay_ms, rate_bit=rate_bit)


def tbf_burst_bytes(rate_bit: int) -> int:
    """tbf's bucket: 10 ms of the rate (at least 16 KiB, one jumbo burst), so the
    kernel's timer granularity does not cap the rate below what is asked."""
    return max(16 * 1024, rate_bit // 8 // 100)


def qdisc_commands(interface: str, emulation: Emulation, netem: bool = True
                   ) -> list[list[str]]:
    """The ``tc`` commands for one interface: netem (delay, and its rate when given),
    or with ``netem`` False (the kernel has none) tbf for the rate alone."""
    root = ["tc", "qdisc", "replace", "dev", interface, "root"]
    if emulation.delay_ms is not None and netem:
        command = [*root, "netem", "delay", f"{emulation.delay_ms}ms",
                   "limit", str(QUEUE_PACKETS)]
        if emulation.rate_bit is not None:
            command += ["rate", f"{emulation.rate_bit}bit"]
        return [command]
    if emulation.rate_bit is not None:
        return [[*root, "tbf", "rate", f"{emulation.rate_bit}bit",
                 "burst", str(tbf_burst_bytes(emulation.rate_bit)), "latency", "100ms"]]
    return []


def interfaces(sys_class_net: Path = Path("/sys/class/net")) -> list[str]:
    """The container's network interfaces but loopback."""
    try:
        return sorted(p.name for p in sys_class_net.iterdir() if p.name != "lo")
    except OSError:
        return []


Run = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


def _reason(stderr: str) -> str:
    text = stderr.lower()
    if "qdisc kind is unknown" in text or "unknown qdisc" in text:
        return "no_netem"
    if "operation not permitted" in text:
        return "not_permitted"
    return "tc_failed"


def apply(emulation: Emulation, log: Any, run: Run = _run,
          devices: Sequence[str] | None = None) -> dict[str, Any]:
    """Install the qdisc on every interface; log and return what happened. Never raises
    for a missing capability of the machine: the node still runs, and the event says
    which part of the emulation is absent."""
    if not emulation.shapes_network:
        return {"applied": False}
    devices = list(interfaces() if devices is None else devices)
    outcome: dict[str, Any] = {"interfaces": devices, "delay_ms": emulation.delay_ms,
                               "rate_bit": emulation.rate_bit}
    netem = True

    def method() -> str:
        return "netem" if netem and emulation.delay_ms is not None else "tbf"

    for device in devices:
        commands = qdisc_commands(device, emulation, netem)
        for command in commands:
            try:
                done = run(command)
            except FileNotFoundError:
                log.error("net.emulation.failed", reason="no_tc", method=method(), **outcome,
                          detail="tc not found: the image lacks iproute2")
                return {**outcome, "applied": False, "reason": "no_tc"}
            if done.returncode == 0:
                continue
            reason = _reason(done.stderr)
            if reason == "no_netem" and netem:
                # No delay possible on this kernel; the rate alone with tbf.
                log.error("net.emulation.failed", reason="no_netem", method="netem",
                          **outcome,
                          detail="the kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): "
                          "the node adds the delay in userspace" + (
                              "; rate limited with tbf" if emulation.rate_bit else ""))
                netem = False
                outcome["delay_ms"] = None
                retry = qdisc_commands(device, emulation, netem=False)
                if not retry:
                    return {**outcome, "applied": False, "reason": "no_netem"}
                command, done = retry[0], run(retry[0])
                if done.returncode == 0:
                    continue
                reason = _reason(done.stderr)
            log.error("net.emulation.failed", reason=reason, method=method(), **outcome,
                      command=" ".join(command), detail=done.stderr.strip()[-300:])
            return {**outcome, "applied": False, "reason": reason}
    result = {**outcome, "applied": True, **({} if netem else {"reason": "no_netem"})}
    log.info("net.emulation.applied", method=method(), **result)
    return result


def userspace_settings(emulation: Emulation) -> dict[str, Any]:
    """The ``TestnetSpec`` fields that make each node emulate ``emulation`` itself
    (``[net_emulation] mode = "userspace"``); none when it shapes nothing."""
    if not emulation.shapes_network:
        return {}
    return {"net_mode": "userspace", "net_latency_ms": emulation.delay_ms or 0,
            "net_rate_bit": emulation.rate_bit or 0}


def userspace_part(asked: Emulation, outcome: dict[str, Any]) -> Emulation:
    """What the node itself must emulate: the part of ``asked`` the kernel did not
    apply (``outcome`` of :func:`apply`): the delay when there is no netem, all of it
    when tc failed or is missing."""
    if not asked.shapes_network:
        return Emulation()
    if not outcome.get("applied"):
        if outcome.get("reason") == "no_netem":  # delay only asked; nothing installed
            return Emulation(delay_ms=asked.delay_ms)
        return Emulation(delay_ms=asked.delay_ms, rate_bit=asked.rate_bit)
    if outcome.get("reason") == "no_netem":  # the rate with tbf; the delay is ours
        return Emulation(delay_ms=asked.delay_ms)
    return Emulation()


def drop_privileges(user: str = RUN_USER) -> None:
    """From root (only an emulating container starts as root) to the image's user."""
    if os.getuid() != 0:
        return
    import pwd

    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir


def entry_logger() -> Any:
    """A JSON structlog logger on stdout for the container entry point (the node
    configures its own logging once it runs)."""
    import structlog

    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stdout),
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                    structlog.processors.JSONRenderer()])
