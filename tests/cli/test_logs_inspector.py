"""``shardnet logs``: merge by time, filters, and the journey of one transaction."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scripts.cli.compose import compose_command
from scripts.cli.logs import Filters, logs, parse_line

TX = "ab" * 32


def write_log(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")


def make_testnet(tmp_path: Path) -> Path:
    logs_dir = tmp_path / "logs"
    write_log(logs_dir / "shard0-node0.log", [
        {"ts": "2026-11-22T04:00:00.100Z", "level": "info", "event": "tx.received",
         "node": "shard0-node0", "shard": 0, "txs": [TX]},
        {"ts": "2026-11-22T04:00:00.300Z", "level": "info", "event": "block.proposed",
         "node": "shard0-node0", "shard": 0, "height": 5, "view": 0, "txs": [TX]},
        {"ts": "2026-11-22T04:00:00.500Z", "level": "info", "event": "block.committed",
         "node": "shard0-node0", "shard": 0, "height": 5, "view": 0},
    ])
    write_log(logs_dir / "shard0-node1.log", [
        {"ts": "2026-11-22T04:00:00.200Z", "level": "warning", "event": "pbft.dropped",
         "node": "shard0-node1", "shard": 0, "reason": "bad_signature"},
        {"ts": "2026-11-22T04:00:00.510Z", "level": "info", "event": "block.committed",
         "node": "shard0-node1", "shard": 0, "height": 5, "view": 0},
        {"ts": "2026-11-22T04:00:00.520Z", "level": "info", "event": "block.committed",
         "node": "shard0-node1", "shard": 0, "height": 6, "view": 0},
    ])
    write_log(logs_dir / "shard1-node0.log", [
        {"ts": "2026-11-22T04:00:00.900Z", "level": "info", "event": "receipt.applied",
         "node": "shard1-node0", "shard": 1, "height": 2, "origin": TX, "src_shard": 0},
    ])
    return tmp_path


def run(*args: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(logs, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_merges_all_nodes_by_time(tmp_path: Path) -> None:
    records = run("--testnet", str(make_testnet(tmp_path)))
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    assert len(records) == 7


def test_filters_by_node_level_event_and_height(tmp_path: Path) -> None:
    testnet = str(make_testnet(tmp_path))
    assert {r["node"] for r in run("--testnet", testnet, "--node", "shard0-node1")} == {
        "shard0-node1"}
    assert [r["event"] for r in run("--testnet", testnet, "--level", "warning")] == [
        "pbft.dropped"]
    committed = run("--testnet", testnet, "--event", "block.", "--height", "5")
    assert {(r["node"], r["event"]) for r in committed} == {
        ("shard0-node0", "block.proposed"), ("shard0-node0", "block.committed"),
        ("shard0-node1", "block.committed")}
    assert {r["shard"] for r in run("--testnet", testnet, "--shard", "1")} == {1}


def test_trace_follows_tx_across_nodes_and_shards_in_order(tmp_path: Path) -> None:
    records = run("--testnet", str(make_testnet(tmp_path)), "--trace", TX)
    assert [(r["node"], r["event"]) for r in records] == [
        ("shard0-node0", "tx.received"),
        ("shard0-node0", "block.proposed"),
        ("shard0-node0", "block.committed"),
        ("shard0-node1", "block.committed"),
        ("shard1-node0", "receipt.applied"),
    ]


def test_trace_of_unknown_tx_fails_with_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(logs, ["--testnet", str(make_testnet(tmp_path)),
                                       "--trace", "cd" * 32])
    assert result.exit_code != 0 and "no events mention" in result.output


def test_human_rendering_is_one_line_per_event(tmp_path: Path) -> None:
    result = CliRunner().invoke(logs, ["--testnet", str(make_testnet(tmp_path))])
    lines = result.output.splitlines()
    assert len(lines) == 7 and "block.proposed" in lines[2] and "height=5" in lines[2]


def test_compose_prefix_is_stripped_and_names_the_node() -> None:
    record = parse_line('shard0-node2_1  | {"event": "x", "ts": "t"}', "compose")
    assert record is not None and record["node"] == "shard0-node2_1"
    assert parse_line("plain text", "n") is None


def test_filters_accept_event_prefixes() -> None:
    assert Filters(events=("pbft.",)).accepts({"event": "pbft.view_change"})
    assert not Filters(events=("pbft.",)).accepts({"event": "block.committed"})


def test_trace_reads_each_nodes_trace_files_and_their_backups(tmp_path: Path) -> None:
    """The log lines name only a few sample hashes; the trace files (rotated ones too)
    hold the full lists, and an event present in both is shown once."""
    from scripts.cli.testnet.generate import TestnetSpec, generate
    from scripts.cli.testnet.layout import TestnetDir

    generate(TestnetSpec(shards=2, validators=4, accounts=10), tmp_path)
    testnet = TestnetDir(tmp_path)
    many = [f"{i:064x}" for i in range(1, 500)] + [TX]
    proposed = {"ts": "2026-11-22T04:00:00.300Z", "level": "info", "event": "block.proposed",
                "node": "shard0-node0", "shard": 0, "height": 5}
    write_log(tmp_path / "logs" / "shard0-node0.log", [
        {**proposed, "count": 500, "txs_sample": many[:3]}])
    write_log(tmp_path / "logs" / "shard1-node0.log", [])
    home0 = testnet.home("shard0-node0") / "logs"
    write_log(home0 / "trace.jsonl.1", [
        {"ts": "2026-11-22T04:00:00.100Z", "event": "tx.received", "node": "shard0-node0",
         "shard": 0, "txs": many}])
    write_log(home0 / "trace.jsonl", [{**proposed, "txs": many}])
    write_log(testnet.home("shard0-node1") / "logs" / "trace.jsonl", [
        {"ts": "2026-11-22T04:00:00.510Z", "event": "block.committed", "node": "shard0-node1",
         "shard": 0, "height": 5, "txs": many}])
    write_log(testnet.home("shard1-node0") / "logs" / "trace.jsonl", [
        {"ts": "2026-11-22T04:00:00.900Z", "event": "receipt.applied", "node": "shard1-node0",
         "shard": 1, "height": 2, "origins": many[-2:]}])
    records = run("--testnet", str(tmp_path), "--trace", TX)
    assert [(r["node"], r["event"]) for r in records] == [
        ("shard0-node0", "tx.received"),
        ("shard0-node0", "block.proposed"),
        ("shard0-node1", "block.committed"),
        ("shard1-node0", "receipt.applied"),
    ]
    assert records[1]["txs"] == many  # the trace record, not the sampled log line


def test_log_reading_includes_rotated_backups_in_order(tmp_path: Path) -> None:
    logs_dir = tmp_path / "logs"
    write_log(logs_dir / "shard0-node0.log.2", [
        {"ts": "2026-11-22T04:00:00.100Z", "event": "a", "node": "shard0-node0", "shard": 0}])
    write_log(logs_dir / "shard0-node0.log.1", [
        {"ts": "2026-11-22T04:00:00.200Z", "event": "b", "node": "shard0-node0", "shard": 0}])
    write_log(logs_dir / "shard0-node0.log", [
        {"ts": "2026-11-22T04:00:00.300Z", "event": "c", "node": "shard0-node0", "shard": 0}])
    assert [r["event"] for r in run("--testnet", str(tmp_path))] == ["a", "b", "c"]


FAKE_COMPOSE = '''
import json, pathlib, sys
args = sys.argv[1:]
if args[:2] == ["config", "--services"]:
    print("shard0-node0\\nshard0-node1\\nloadgen")
elif args[0] == "logs":
    print('shard0-node0  | {"ts": "2026-11-22T04:00:00.100Z", "event": "tx.received", '
          '"node": "shard0-node0", "shard": 0, "count": 1, "txs_sample": []}')
elif args[0] == "cp":
    service, _, inside = args[1].partition(":")
    assert inside == f"/data/testnet/nodes/{service}/logs/.", inside
    if service == "shard0-node1":
        sys.exit(1)  # a container that never wrote a trace: skipped
    record = {"ts": "2026-11-22T04:00:00.100Z", "event": "tx.received",
              "node": service, "shard": 0, "txs": ["ab" * 32]}
    pathlib.Path(args[2], "trace.jsonl").write_text(json.dumps(record) + "\\n")
'''


def test_trace_of_a_compose_project_reads_the_containers_trace_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "compose.py"
    fake.write_text(FAKE_COMPOSE)
    monkeypatch.setenv("SHARDNET_COMPOSE", f"{sys.executable} {fake}")
    compose_command.cache_clear()  # an earlier test may have resolved the real one
    try:
        records = run("--compose", str(tmp_path), "--trace", TX)
    finally:
        compose_command.cache_clear()
    assert [(r["node"], r["event"], r["txs"]) for r in records] == [
        ("shard0-node0", "tx.received", [TX])]


def test_follow_goes_on_in_the_new_file_after_the_node_rotates_its_log(tmp_path: Path) -> None:
    from scripts.cli.logs import poll

    path = tmp_path / "shard0-node0.log"
    write_log(path, [{"ts": "t0", "event": "old"}])
    handles = {path: path.open()}
    handles[path].seek(0, 2)
    with path.open("a") as out:
        out.write(json.dumps({"ts": "t1", "event": "before"}) + "\n")
    path.rename(tmp_path / "shard0-node0.log.1")  # RotatingFileHandler's rollover
    write_log(path, [{"ts": "t2", "event": "after"}])
    try:
        assert [r["event"] for r in poll(handles, Filters())] == ["before", "after"]
    finally:
        for handle in handles.values():
            handle.close()
