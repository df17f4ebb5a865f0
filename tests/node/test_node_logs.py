from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from node import logs as node_logs
from node.logs import configure_logging

HASHES = [f"{i:064x}" for i in range(2_000)]


@pytest.fixture
def reset_logging() -> Iterator[None]:
    yield
    node_logs._stop_writer()
    structlog.reset_defaults()
    for handler in logging.getLogger().handlers:
        handler.close()
    logging.getLogger().handlers.clear()


def lines_of(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def read_trace(path: Path) -> list[dict[str, Any]]:
    node_logs._stop_writer()  # drains the writer thread's queue into the file
    files = [*sorted(path.parent.glob(f"{path.name}.*"), reverse=True), path]
    return [json.loads(line) for part in files for line in part.read_text().splitlines()]


def test_structlog_and_stdlib_records_are_json_lines(reset_logging: None) -> None:
    import libp2p  # noqa: F401  (detaches its logger on import: the case to cover)

    out = io.StringIO()
    configure_logging("json", "info", stream=out, context={"node": "shard0-node1", "shard": 0})
    structlog.get_logger().bind(node="shard0-node1", shard=0).info("block.committed", height=3)
    logging.getLogger("libp2p.transport").warning("Failed to open TCP stream")
    logging.getLogger("libp2p.transport").info("chatty detail")
    chatty = logging.getLogger("libp2p.network.auto_connector")
    chatty.setLevel(logging.INFO)  # as py-libp2p does for some of its loggers
    chatty.info("AUTO_CONNECTOR_STATE")
    lines = lines_of(out)
    assert lines[0]["event"] == "block.committed" and lines[0]["node"] == "shard0-node1"
    assert lines[0]["height"] == 3 and lines[0]["level"] == "info" and "ts" in lines[0]
    assert lines[1]["event"] == "p2p.libp2p_warning"
    assert lines[1]["text"] == "Failed to open TCP stream"
    assert lines[1]["logger"] == "libp2p.transport" and lines[1]["level"] == "warning"
    assert lines[1]["node"] == "shard0-node1" and lines[1]["shard"] == 0
    assert len(lines) == 2


def test_block_of_2000_txs_is_a_short_log_line_and_a_full_trace_record(
        tmp_path: Path, reset_logging: None) -> None:
    out = io.StringIO()
    trace = tmp_path / "logs" / "trace.jsonl"
    configure_logging("json", "info", stream=out, trace_file=trace)
    log = structlog.get_logger().bind(node="shard0-node1", shard=0)
    log.info("block.committed", height=9, txs_count=2_000, txs=HASHES)
    log.info("receipt.relayed", dst_shard=1, height=9, count=2_000, origins=HASHES)
    log.info("tx.rejected", tx=HASHES[5], error="bad_nonce")
    text = out.getvalue()
    assert all(len(line) < 1_000 for line in text.splitlines())
    committed, relayed, rejected = lines_of(out)
    assert "txs" not in committed and committed["count"] == 2_000
    assert committed["txs_sample"] == HASHES[:3]
    assert "origins" not in relayed and relayed["origins_sample"] == HASHES[:3]
    assert rejected["tx"] == HASHES[5]
    records = read_trace(trace)
    assert [r["event"] for r in records] == ["block.committed", "receipt.relayed",
                                             "tx.rejected"]
    assert records[0]["txs"] == HASHES and records[1]["origins"] == HASHES
    assert records[0]["node"] == "shard0-node1" and records[0]["height"] == 9
    # The trace record and its log line share node, event and ts (how --trace joins them).
    assert records[0]["ts"] == committed["ts"]


def test_trace_is_written_at_level_warning_while_info_lines_are_not(
        tmp_path: Path, reset_logging: None) -> None:
    out = io.StringIO()
    trace = tmp_path / "trace.jsonl"
    configure_logging("json", "warning", stream=out, trace_file=trace)
    log = structlog.get_logger().bind(node="shard0-node0", shard=0)
    log.info("tx.forwarded", txs=HASHES[:10], count=10)
    log.debug("pbft.detail")
    log.warning("mempool.full", txs=5)
    assert [r["event"] for r in lines_of(out)] == ["mempool.full"]
    assert [r["event"] for r in read_trace(trace)] == ["tx.forwarded"]


def test_log_file_rotates_at_its_size_and_keeps_its_backups(
        tmp_path: Path, reset_logging: None) -> None:
    path = tmp_path / "logs" / "shard0-node0.log"
    bytes_max, backups = 20_000, 3
    configure_logging("json", "info", file=path, file_bytes_max=bytes_max,
                      file_backups=backups)
    log = structlog.get_logger().bind(node="shard0-node0", shard=0)
    for height in range(2_000):  # ~250 KB: over ten times the whole budget
        log.info("block.committed", height=height, block="ab" * 32)
    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == [path.name] + [f"{path.name}.{i}" for i in (1, 2, 3)]
    assert all(f.stat().st_size <= bytes_max for f in files)
    newest = json.loads(path.read_text().splitlines()[-1])
    assert newest["height"] == 1_999
    # Backups are whole JSON lines, older the higher the number.
    first_of = {f.name: json.loads(f.read_text().splitlines()[0])["height"] for f in files}
    assert first_of[f"{path.name}.3"] < first_of[f"{path.name}.1"] < first_of[path.name]


def test_trace_file_rotates_at_its_size(tmp_path: Path, reset_logging: None) -> None:
    trace = tmp_path / "trace.jsonl"
    configure_logging("json", "info", stream=io.StringIO(), trace_file=trace,
                      trace_bytes_max=50_000, trace_backups=2)
    log = structlog.get_logger().bind(node="shard0-node0", shard=0)
    for height in range(40):  # 40 x ~13 KB
        log.info("block.committed", height=height, txs=HASHES[:200])
    node_logs._stop_writer()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["trace.jsonl", "trace.jsonl.1", "trace.jsonl.2"]
    # One event is one line: a file may pass the bound by at most that line.
    assert all(f.stat().st_size <= 50_000 + 14_000 for f in files)


def test_libp2p_warnings_about_a_down_peer_are_one_line_until_it_reconnects(
        reset_logging: None) -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    tcp = logging.getLogger("libp2p.transport.tcp.tcp")
    for _ in range(40):
        tcp.error("Failed to open TCP stream: %s",
                  "all attempts to connect to 127.0.0.1:26600 failed")
    tcp.error("Failed to open TCP stream: %s", "all attempts to connect to 127.0.0.1:26601 failed")
    log = structlog.get_logger().bind(node="shard0-node0", shard=0)
    log.info("p2p.connected", peer="12D3KooWx", address="/ip4/127.0.0.1/tcp/26600")
    tcp.error("Failed to open TCP stream: %s", "all attempts to connect to 127.0.0.1:26600 failed")
    lines = lines_of(out)
    assert [(r["event"], r.get("peer")) for r in lines] == [
        ("p2p.libp2p_warning", "127.0.0.1:26600"), ("p2p.libp2p_warning", "127.0.0.1:26601"),
        ("p2p.connected", "12D3KooWx"), ("p2p.libp2p_warning", "127.0.0.1:26600")]
    first = lines[0]
    assert first["level"] == "warning" and first["libp2p_level"] == "error"
    assert first["text"] == "Failed to open TCP stream: all attempts to connect to " \
                            "127.0.0.1:26600 failed"
    assert lines[2]["libp2p_suppressed"] == 39  # the recovery counts what was not logged


def test_libp2p_repeats_are_logged_again_after_the_interval_with_the_count() -> None:
    now = [0.0]
    bridge = node_logs.Libp2pBridge(repeat_s=60, clock=lambda: now[0])

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("libp2p.protocol_muxer.multiselect_client", logging.ERROR,
                                 __file__, 1, "MultiselectClient handshake: read failed: %s",
                                 (text,), None)

    passed = [bridge.filter(record(f"stream reset {i}")) for i in range(10)]
    assert passed == [True] + [False] * 9  # no peer named: keyed by the text's shape
    now[0] = 61.0
    again = record("stream reset 11")
    assert bridge.filter(again)
    assert again.msg == "p2p.libp2p_warning"
    assert getattr(again, "shardnet_fields")["suppressed"] == 9  # noqa: B009


def test_store_bytes_metric_reads_the_database_files(tmp_path: Path) -> None:
    from node.config import load_config
    from node.main import load_node
    from scripts.cli.testnet.generate import TestnetSpec, generate
    from scripts.cli.testnet.layout import TestnetDir

    generate(TestnetSpec(shards=1, validators=4, accounts=10), tmp_path)
    config = load_config(TestnetDir(tmp_path).home("shard0-node0"))

    async def scrape() -> str:
        node = await load_node(config)
        try:
            return node.metrics.render().decode()
        finally:
            await node.parts.store.close()

    text = asyncio.run(scrape())
    (line,) = [x for x in text.splitlines() if x.startswith("shardnet_store_bytes ")]
    assert float(line.split()[1]) > 0
    assert "shardnet_log_trace_dropped_total 0.0" in text


def test_trace_events_past_a_full_queue_are_dropped_and_counted_not_waited_for() -> None:
    import queue

    handler = node_logs._TraceQueueHandler(queue.Queue(1))  # no writer thread draining it
    before = node_logs.trace_dropped()
    for height in range(3):
        handler.emit(logging.makeLogRecord({"msg": {"event": "block.committed", "h": height}}))
    assert node_logs.trace_dropped() - before == 2


def test_output_appended_to_the_log_file_follows_it_across_rotations(tmp_path: Path) -> None:
    """A local testnet appends the node's stdout/stderr to the file the node's logging
    rotates: what the process prints after a rollover (a crash) is in the current file."""
    import subprocess
    import sys

    path = tmp_path / "node.log"
    script = (
        "import sys, structlog\n"
        "from pathlib import Path\n"
        "from node.logs import configure_logging\n"
        f"configure_logging('json', 'info', file=Path({str(path)!r}), file_bytes_max=20_000,"
        " file_backups=2)\n"
        "log = structlog.get_logger()\n"
        "for height in range(400):\n"
        "    log.info('block.committed', height=height, block='ab' * 32)\n"
        "print('fatal: the last words', file=sys.stderr, flush=True)\n")
    with path.open("ab") as out:
        subprocess.run([sys.executable, "-c", script], stdout=out, stderr=subprocess.STDOUT,
                       check=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert (tmp_path / "node.log.1").exists()
    assert path.read_text().rstrip().endswith("fatal: the last words")
