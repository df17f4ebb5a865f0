"""What every benchmark shares: the machine's facts, its result tables and its JSON file.

Each ``shardnet bench NAME`` measures something different but reports it the same way:
a rich table (or several) on the console, one JSON file under ``bench-results/`` and a
``wrote PATH`` line. The machine facts recorded beside the figures come from here, so
two JSON files of the same run describe the machine alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.table import Table

from consensus.kernel.crypto import (
    BACKEND_CRYPTOGRAPHY,
    VERIFY_BACKEND,
    KeyPair,
    verify_signature,
    verify_signature_cryptography,
)
from scripts.cli.params import json_stdout
from scripts.cli.testnet.generate import TestnetSpec, generate
from scripts.cli.testnet.layout import NodeEntry, TestnetDir
from scripts.cli.testnet.processes import running_pid, start_node, stop_node, wait_healthy


def cores() -> int:
    """Cores this process may run on (its CPU affinity)."""
    return len(os.sched_getaffinity(0))


def python_version() -> str:
    return platform.python_version()


def machine_line() -> str:
    """``"2 cores, python 3.12.3"``: the ``machine`` string of the testnet benchmarks."""
    return f"{cores()} cores, python {python_version()}"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    """The ``machine`` object of the in-process benchmarks' JSON."""
    return {
        "cpus": os.cpu_count(),
        "python": python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process; 0.0 where unavailable (psutil, through
    the node-control module: portable, no ``/proc`` by hand)."""
    from scripts.cli.testnet.control import cpu_seconds as process_cpu_seconds

    return process_cpu_seconds(pid)


def measure_verify_per_s(seconds: float = 1.0,
                         verify: Callable[[bytes, bytes, bytes], bool] = verify_signature,
                         ) -> float:
    """Ed25519 verifications per second on one core: the unit of the crypto ceiling.
    ``verify``: the path this process (and the nodes it starts) uses, unless told."""
    key = KeyPair.derive("bench", 0)
    message = b"x" * 120
    signature = key.sign(message)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(200):
            verify(key.public_key, message, signature)
        count += 200
    return count / (time.perf_counter() - started)


def measure_verify_rates(seconds: float = 1.0) -> dict[str, float]:
    """``measure_verify_per_s`` for the path in use (``VERIFY_BACKEND``, the nodes' too:
    same virtualenv and environment) and for the pure ``cryptography`` one, keyed by
    backend name (one entry when the pure path is the one in use)."""
    rates = {VERIFY_BACKEND: measure_verify_per_s(seconds)}
    if VERIFY_BACKEND != BACKEND_CRYPTOGRAPHY:
        rates[BACKEND_CRYPTOGRAPHY] = measure_verify_per_s(seconds, verify_signature_cryptography)
    return rates


def result_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[object]], *, left: int = 0
) -> Table:
    """A table of ``rows`` under ``columns``: the first ``left`` columns are text (left
    aligned), the others figures (right aligned). Cells that are not strings are ``str``-ed."""
    table = Table(title=title)
    for number, column in enumerate(columns):
        table.add_column(column, justify="left" if number < left else "right")
    for row in rows:
        table.add_row(*(cell if isinstance(cell, str) else str(cell) for cell in row))
    return table


def write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    """``data`` as indented JSON at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


def report(
    console: Console, tables: Sequence[Table], path: Path, data: Any, *, sort_keys: bool = False
) -> None:
    """Print ``tables``, write ``data`` to ``path`` and say so: every benchmark's ending.
    With ``shardnet bench NAME --json`` the console is stderr and ``data`` also goes to
    stdout."""
    for table in tables:
        console.print(table)
    write_json(path, data, sort_keys=sort_keys)
    console.print(f"wrote {path}")
    stdout = json_stdout()
    if stdout is not None:
        stdout.write(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")
        stdout.flush()


async def watch_blocks(session: aiohttp.ClientSession, url: str,
                       on_block: Callable[[dict[str, Any], float], bool]) -> None:
    """Follow the node at ``url`` on ``/v1/events``: ``on_block(block, now)`` for each
    committed block (``now``: ``time.perf_counter()`` at its arrival) until it returns
    True. Times of submission and commit are then on one clock."""
    async with session.get(f"{url}/v1/events",
                           timeout=aiohttp.ClientTimeout(total=None)) as response:
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            now = time.perf_counter()
            if on_block(json.loads(line[6:]), now):
                return


def why_not_answering(testnet: TestnetDir, name: str) -> str:
    """What a node that never answered /v1/status was doing: running or exited, and the
    last event of its log (a failed start says why there, e.g. a port taken)."""
    state = "running" if running_pid(testnet, name) is not None else "exited"
    try:
        with testnet.log(name).open("rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - 8192))
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return f"{state}, no log"
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            detail = entry.get("error") or entry.get("reason") or ""
            return f"{state}, last log event {entry.get('event')!r} {detail}".rstrip()
    return f"{state}, last log line {lines[-1][:200]!r}" if lines else f"{state}, empty log"


@contextlib.contextmanager
def local_testnet(
    spec: TestnetSpec, edit_config: Callable[[str], str] | None = None
) -> Iterator[tuple[Path, list[NodeEntry]]]:
    """A fresh testnet of local processes in a temporary folder, healthy on entry and
    stopped on exit: (its root, its nodes). ``edit_config`` rewrites each config.toml."""
    with tempfile.TemporaryDirectory(prefix="shardnet-bench-") as tmp:
        root = Path(tmp) / "net"
        nodes = list(generate(spec, root).nodes)
        testnet = TestnetDir(root)
        try:
            for node in nodes:
                if edit_config is not None:
                    config = testnet.home(node.name) / "config.toml"
                    config.write_text(edit_config(config.read_text()))
                start_node(testnet, node.name)
            missing = wait_healthy(nodes, 60)
            if missing:
                reasons = "; ".join(f"{name}: {why_not_answering(testnet, name)}"
                                    for name in missing)
                raise click.ClickException(f"nodes not healthy within 60 s: {reasons}")
            yield root, nodes
        finally:
            for node in nodes:
                stop_node(testnet, node.name, timeout_s=10)
