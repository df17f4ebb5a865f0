"""``shardnet logs``: read, merge, filter and follow the JSON logs of a testnet.

Sources: a local testnet folder (``DIR/logs/*.log``, with the rotated backups
``*.log.N``), explicit files, or a compose project (``docker compose logs``). Lines are
merged by their ``ts``. ``--trace TX`` follows one transaction across nodes and shards
by the links documented in docs/LOGS.md: it reads each node's trace file
(``<home>/logs/trace.jsonl*``, where the node writes every event that names
transactions with the full hash lists its log lines only sample) besides the logs.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from node.config import ConfigError, LogSection, load_config
from scripts.cli.exits import UsageFailure
from scripts.cli.params import json_option, testnet_option

LEVEL_ORDER = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


@dataclass(frozen=True)
class Filters:
    nodes: frozenset[str] = frozenset()
    shards: frozenset[int] = frozenset()
    min_level: str = "debug"
    events: tuple[str, ...] = ()
    height: int | None = None

    def accepts(self, record: dict[str, Any]) -> bool:
        if self.nodes and record.get("node") not in self.nodes:
            return False
        if self.shards and record.get("shard") not in self.shards:
            return False
        if LEVEL_ORDER.get(str(record.get("level")), 20) < LEVEL_ORDER[self.min_level]:
            return False
        if self.events and not any(
            str(record.get("event", "")).startswith(prefix) for prefix in self.events
        ):
            return False
        return self.height is None or record.get("height") == self.height


def parse_line(line: str, source: str) -> dict[str, Any] | None:
    """One log line as a record; a docker-compose prefix ``name  | `` is stripped."""
    text = line.strip()
    if not text.startswith("{") and "| {" in text:
        prefix, _, text = text.partition("| ")
        source = prefix.strip() or source
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    record.setdefault("node", source)
    return record


def read_file(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(errors="replace") as handle:
        for line in handle:
            record = parse_line(line, path.stem)
            if record is not None:
                yield record


def merge(streams: Iterable[Iterator[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Merge per-node streams (each already in time order) by timestamp."""
    return heapq.merge(*streams, key=lambda record: str(record.get("ts", "")))


def log_files(testnet_dir: Path) -> list[Path]:
    if not testnet_dir.is_dir():
        raise UsageFailure(f"no testnet folder {testnet_dir}: give --testnet DIR, --compose "
                           "DIR or --file FILE")
    files = sorted((testnet_dir / "logs").glob("*.log"))
    if not files:
        raise UsageFailure(f"no log files under {testnet_dir / 'logs'} (has the testnet "
                           "run? `shardnet testnet up`)")
    return files


def with_backups(path: Path) -> list[Path]:
    """``path`` after its RotatingFileHandler backups, oldest first (``.N`` ... ``.1``)."""
    backups = [p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()]
    backups.sort(key=lambda p: int(p.suffix[1:]), reverse=True)
    return [*backups, *([path] if path.exists() else [])]


def read_rotated(path: Path) -> Iterator[dict[str, Any]]:
    """One node's records in time order across its rotated files."""
    for part in with_backups(path):
        for record in read_file(part):
            record["node"] = record.get("node") or path.stem
            yield record


TRACE_FILE = LogSection().trace_file


def testnet_trace_files(testnet_dir: Path) -> list[Path]:
    """Each node home's trace file (``[log] trace_file``) in a local testnet folder."""
    files = []
    for home in sorted((testnet_dir / "nodes").glob("*")):
        try:
            config = load_config(home)
        except ConfigError:
            continue
        if config.log.trace_file:
            files.append(config.path(config.log.trace_file))
    return files


def read_traces(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    return merge(read_rotated(path) for path in paths)


NODE_SERVICE = re.compile(r"shard\d+-node\d+")


def compose_trace_records(project_dir: Path) -> list[dict[str, Any]]:
    """The trace files of a compose project's node containers (``docker compose cp``
    works on stopped containers too), read into memory."""
    from scripts.cli.compose import compose_command
    from scripts.cli.testnet.layout import TestnetDir

    services = subprocess.run([*compose_command(), "config", "--services"], cwd=project_dir,
                              capture_output=True, text=True, check=True).stdout.split()
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for service in filter(NODE_SERVICE.fullmatch, services):
            # The container's home, as ``shardnet testnet docker-node`` lays it out.
            inside = TestnetDir(Path("/data/testnet")).home(service) / TRACE_FILE
            target = Path(tmp) / service
            target.mkdir()
            if _copy_out(compose_command(), project_dir, service, f"{inside.parent}/.",
                         target):
                paths.append(target / inside.name)
        records.extend(read_traces(paths))
    return records


def _copy_out(compose: tuple[str, ...], project_dir: Path, service: str, inside: str,
              target: Path) -> bool:
    """Copy a folder out of a service's container, running or stopped: ``compose cp``
    (Compose v2), else the container's id (``ps -a -q``) and ``docker cp`` (Compose v1,
    Debian's docker-compose 1.29, has no ``cp``)."""
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=project_dir, capture_output=True, text=True,
                              check=False, timeout=120)

    if run([*compose, "cp", f"{service}:{inside}", str(target)]).returncode == 0:
        return True
    ids = run([*compose, "ps", "-a", "-q", service]).stdout.split()
    return bool(ids) and run(["docker", "cp", f"{ids[0]}:{inside}", str(target)]).returncode == 0


def compose_records(project_dir: Path) -> Iterator[dict[str, Any]]:
    from scripts.cli.compose import compose_command

    command = [*compose_command(), "logs", "--no-color"]
    output = subprocess.run(command, cwd=project_dir, capture_output=True, text=True,
                            check=True).stdout
    per_service: dict[str, list[dict[str, Any]]] = {}
    for line in output.splitlines():
        record = parse_line(line, "compose")
        if record is not None:
            per_service.setdefault(str(record.get("node")), []).append(record)
    return merge(iter(records) for records in per_service.values())


_HIDDEN = {"ts", "level", "event", "node", "shard", "view", "height"}


def render(record: dict[str, Any]) -> str:
    ts = str(record.get("ts", ""))[11:23]
    context = " ".join(
        f"{key}={record[key]}" for key in ("view", "height") if record.get(key) is not None
    )
    extras = " ".join(
        f"{key}={_short(value)}" for key, value in record.items() if key not in _HIDDEN
    )
    level = str(record.get("level", "info"))[:4].upper()
    return f"{ts} {level:4} {record.get('node', '?'):<14} {record.get('event', '?'):<22} " \
           f"{context} {extras}".rstrip()


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    if isinstance(value, list) and len(value) > 4:
        return f"[{len(value)} items]"
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


def trace(records: Iterable[dict[str, Any]], tx_hash: str) -> list[dict[str, Any]]:
    """The events of one transaction's journey, in time order. ``records`` may hold an
    event twice, as its log line and as its trace record (same node, event and ``ts``):
    it is shown once, as the trace record (with the full hash lists)."""
    tx_hash = tx_hash.lower().removeprefix("0x")
    unique: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for record in records:
        key = (record.get("node"), record.get("event"), record.get("ts"))
        if key not in unique or any(isinstance(record.get(k), list) for k in ("txs", "origins")):
            unique[key] = record
    records = list(unique.values())
    journey: list[dict[str, Any]] = []
    blocks: set[tuple[Any, Any]] = set()
    for record in records:
        txs = record.get("txs")
        mentions = record.get("tx") == tx_hash or record.get("origin") == tx_hash or (
            isinstance(txs, list) and tx_hash in txs
        ) or (isinstance(record.get("origins"), list) and tx_hash in record["origins"])
        if mentions:
            journey.append(record)
            if record.get("event") == "block.proposed":
                blocks.add((record.get("shard"), record.get("height")))
    for record in records:
        if record.get("event") in ("block.committed", "block.executed") and (
            record.get("shard"), record.get("height")
        ) in blocks and record not in journey:
            journey.append(record)
    journey.sort(key=lambda record: str(record.get("ts", "")))
    return journey


def _rotated(path: Path, handle: Any) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
    except OSError:
        return False


def poll(handles: dict[Path, Any], filters: Filters) -> list[dict[str, Any]]:
    """The new records of the followed files, in time order; a file the node rolled over
    (renamed to ``.1``, a new one in its place) is finished, then the new one is read."""
    batch = []
    for path, handle in list(handles.items()):
        lines = handle.readlines()
        if _rotated(path, handle):
            handle.close()
            handles[path] = handle = path.open(errors="replace")
            lines += handle.readlines()
        for line in lines:
            record = parse_line(line, path.stem)
            if record is not None and filters.accepts(record):
                batch.append(record)
    return sorted(batch, key=lambda r: str(r.get("ts", "")))


def follow(paths: list[Path], filters: Filters, as_json: bool, poll_s: float = 0.25,
           duration_s: float | None = None) -> None:
    handles = {path: path.open(errors="replace") for path in paths}
    for handle in handles.values():
        handle.seek(0, 2)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while deadline is None or time.monotonic() < deadline:
            for record in poll(handles, filters):
                click.echo(json.dumps(record) if as_json else render(record))
            time.sleep(poll_s)
    except KeyboardInterrupt:
        pass
    finally:
        for handle in handles.values():
            handle.close()


@click.command("logs")
@testnet_option("testnet_dir", help="Local testnet folder (reads DIR/logs/*.log).")
@click.option("--file", "files", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Read these log files instead.")
@click.option("--compose", "compose_dir", type=click.Path(path_type=Path),
              help="Read the logs of the compose project in this folder.")
@click.option("--node", "nodes", multiple=True, help="Only this node (e.g. shard0-node1).")
@click.option("--shard", "shards", multiple=True, type=int, help="Only this shard.")
@click.option("--level", "min_level", type=click.Choice(list(LEVEL_ORDER)), default="debug")
@click.option("--event", "events", multiple=True, help="Event name or prefix (block., pbft.).")
@click.option("--height", type=int, help="Only events at this height.")
@click.option("--trace", "trace_tx", help="Follow one transaction (hash hex).")
@click.option("--follow", "-f", "follow_", is_flag=True, help="Keep printing new lines.")
@json_option("Print JSON lines on stdout (for piping).")
@click.option("--limit", type=int, default=0, help="Print only the last N matching lines.")
def logs(testnet_dir: Path, files: tuple[Path, ...], compose_dir: Path | None,
         nodes: tuple[str, ...], shards: tuple[int, ...], min_level: str,
         events: tuple[str, ...], height: int | None, trace_tx: str | None, follow_: bool,
         as_json: bool, limit: int) -> None:
    """Merge, filter, follow and trace the JSON logs of a testnet's nodes."""
    filters = Filters(frozenset(nodes), frozenset(shards), min_level, events, height)
    paths = list(files)
    if compose_dir is not None:
        stream = compose_records(compose_dir)
    else:
        paths = paths or log_files(testnet_dir)
        stream = merge(read_rotated(path) for path in paths)
    if trace_tx:
        if compose_dir is not None:
            traces: Iterable[dict[str, Any]] = compose_trace_records(compose_dir)
        elif files:
            traces = []  # explicit files: pass the trace files with --file
        else:
            traces = read_traces(testnet_trace_files(testnet_dir))
        records = trace([*stream, *traces], trace_tx)
        if not records:
            raise click.ClickException(f"no events mention transaction {trace_tx}")
    else:
        records = [record for record in stream if filters.accepts(record)]
    if limit:
        records = records[-limit:]
    out = sys.stdout
    for record in records:
        out.write((json.dumps(record) if as_json else render(record)) + "\n")
    out.flush()
    if follow_ and paths:
        follow(paths, filters, as_json)
