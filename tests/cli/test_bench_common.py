"""scripts/bench/common.py: a testnet node that never answered says why (a failed start
is in its log), instead of a bare "nodes not healthy"."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.bench.common import why_not_answering
from scripts.cli.testnet.layout import TestnetDir


def test_an_exited_node_is_reported_with_its_last_log_event(tmp_path: Path) -> None:
    testnet = TestnetDir(tmp_path)
    log = testnet.log("shard1-node0")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("\n".join([
        json.dumps({"event": "node.starting", "level": "info"}),
        "a traceback line that is not JSON",
        json.dumps({"event": "p2p.listen_failed", "level": "error",
                    "error": "[Errno 98] address already in use"}),
    ]) + "\n")
    why = why_not_answering(testnet, "shard1-node0")
    assert why.startswith("exited")  # no pid file: not running
    assert "'p2p.listen_failed'" in why and "address already in use" in why


def test_a_node_without_a_log_is_reported_as_such(tmp_path: Path) -> None:
    assert why_not_answering(TestnetDir(tmp_path), "shard0-node0") == "exited, no log"
