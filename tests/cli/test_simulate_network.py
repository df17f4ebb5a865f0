"""``shardnet simulate --network``: seeds of the whole-network simulator (node/sim/)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from scripts.cli.simulate import simulate
from sharding.simulation_checkers import CrossShardChecker


def test_network_seeds_print_totals_and_json() -> None:
    args = ["--network", "--shards", "2", "--validators", "4", "--seeds", "1", "--start", "2",
            "--txs", "8", "--faults", "drop,delay"]
    table = CliRunner().invoke(simulate, args)
    assert table.exit_code == 0, table.output
    assert "seeds: 1" in table.output and "failed: []" in table.output
    assert "receipts:" in table.output and "blocks:" in table.output
    report = json.loads(CliRunner().invoke(simulate, [*args, "--json"]).output)
    assert report["seeds"] == 1 and report["failed"] == [] and report["txs"] == 8
    (run,) = report["runs"]
    assert run["ok"] and run["blocks"] == report["blocks"] > 0
    assert run["faults"]["drop"] > 0


def test_a_failing_network_seed_exits_1_with_its_replay_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(self: CrossShardChecker, *_: Any) -> None:
        self.violations.append("example violation")

    monkeypatch.setattr(CrossShardChecker, "check_final", failing)
    result = CliRunner().invoke(simulate, ["--network", "--shards", "2", "--seeds", "1",
                                           "--start", "4", "--txs", "4", "--faults", "none"])
    assert result.exit_code == 1
    assert "seed 4: FAILED" in result.output and "example violation" in result.output
    assert ("replay: shardnet simulate --network --shards 2 --validators 4 --seeds 1 "
            "--start 4 --txs 4 --faults none") in result.output


def test_network_refuses_byzantine_and_unknown_faults() -> None:
    runner = CliRunner()
    assert runner.invoke(simulate, ["--network", "--byzantine", "0/0/primary"]).exit_code == 2
    refused = runner.invoke(simulate, ["--network", "--faults", "byzantine_primary"])
    assert refused.exit_code == 2 and "byzantine_primary" in refused.output
