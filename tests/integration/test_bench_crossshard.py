"""``shardnet bench crossshard``: on a real 2 x 4 testnet every cross-shard transfer of the
paced stream is seen finalized on its destination, and the JSON is written (the
figures are the benchmark's, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from scripts.bench.crossshard import percentile
from scripts.cli.main import main
from tests.support.node import free_base_port

pytestmark = pytest.mark.integration


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0


def test_bench_crossshard_finalizes_every_crossing_transfer(tmp_path: Path) -> None:
    out = tmp_path / "crossshard.json"
    result = CliRunner().invoke(main, [
        "bench", "crossshard", "--runs", "1", "--duration", "2", "--rate", "60",
        "--base-port", str(free_base_port(16)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())["rows"][0]
    assert row["committed"] == row["txs"] == 120
    assert 0 < row["cross_shard"] == row["finalized"]
    assert row["cross_commit_p50_ms"] <= row["cross_final_p50_ms"]
