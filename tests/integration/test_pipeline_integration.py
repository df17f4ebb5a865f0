"""A real 4-validator shard at ``consensus.pipeline_depth = 2`` (issue 16, deliverable 1):
separate node processes on 127.0.0.1, small blocks so that the primary proposes height
h+1 on its own block h before h commits. Every transfer commits once on all four, the
replicas agree on every block and root, and the primary's log shows proposals built on
a block still in flight (``block.proposed`` with ``on_tip`` false: the pipeline ran)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.defaults import CONSENSUS_PIPELINE_DEPTH
from scripts.cli.client import call
from tests.support.node import (
    LocalTestnet,
    local_testnet,
    signed_transfers,
    submit,
    tx_state,
    wait_until,
)

pytestmark = pytest.mark.integration

TXS = 240


def depth_two(text: str) -> str:
    text = text.replace(f"pipeline_depth = {CONSENSUS_PIPELINE_DEPTH}", "pipeline_depth = 2")
    return text.replace("block_txs_max = 2000", "block_txs_max = 20")


def proposed_ahead(log: str) -> int:
    """How many of the node's proposals were built on a block still in flight
    (``block.proposed`` with ``on_tip`` false: its parent was not committed)."""
    ahead = 0
    for line in log.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "block.proposed" and event.get("on_tip") is False:
            ahead += 1
    return ahead


def test_a_shard_at_depth_two_commits_every_transfer_once_and_agrees(tmp_path: Path) -> None:
    with local_testnet(tmp_path, edit_config=depth_two) as net:
        names = [n.name for n in net.shard_nodes(0)]
        config = (net.dir.home(names[0]) / "config.toml").read_text()
        assert "pipeline_depth = 2" in config and "block_txs_max = 20" in config
        raws, hashes = signed_transfers(TXS, shard=0, num_shards=1, senders=40)
        for start in range(0, TXS, 60):
            assert submit(net.node(names[1]).api_url, raws[start:start + 60])["accepted"] == 60
        urls = [net.node(name).api_url for name in names]
        wait_until(lambda: all(tx_state(url, digest) in ("committed", "finalized")
                               for url in urls for digest in hashes), 120,
                   "every transfer committed on all four")
        assert_agreement(net, names)
        assert proposed_ahead(net.log_text(names[0])) > 0


def assert_agreement(net: LocalTestnet, names: list[str]) -> None:
    height = min(net.height(name) for name in names)
    assert height >= TXS // 20
    for h in range(1, height + 1):
        blocks = {(b["hash"], b["state_root"]) for b in
                  (call("GET", f"{net.node(name).api_url}/v1/blocks/{h}") for name in names)}
        assert len(blocks) == 1, f"height {h}: {blocks}"
