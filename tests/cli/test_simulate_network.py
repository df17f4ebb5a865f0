"""``shardnet simulate --shards N`` / ``--network``: seeds of the whole-network
simulator (node/sim/), with byzantine nodes, link faults and crashes placed from the
command line, so that the replay line of a failing seed reproduces it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node.faults.state import BYZANTINE_MODES, NONE
from node.sim.checkers import CrossShardChecker
from node.sim.faults import FAULT_KINDS
from scripts.cli import simulate as simulate_module
from scripts.cli.simulate import simulate


def test_the_cli_knows_the_simulators_kinds_and_modes() -> None:
    assert simulate_module.NETWORK_FAULT_KINDS == FAULT_KINDS
    assert set(simulate_module.BYZANTINE_MODES) == set(BYZANTINE_MODES) - {NONE}


def test_network_seeds_print_totals_and_json(tmp_path: Path) -> None:
    args = ["--network", "--shards", "2", "--validators", "4", "--seeds", "1", "--start", "2",
            "--txs", "8", "--faults", "drop,delay"]
    table = CliRunner().invoke(simulate, args)
    assert table.exit_code == 0, table.output
    assert "seeds: 1" in table.output and "failed: []" in table.output
    assert "receipts:" in table.output and "blocks:" in table.output
    out = tmp_path / "summary.json"
    report = json.loads(CliRunner().invoke(simulate, [*args, "--json", "--out",
                                                      str(out)]).output)
    assert report["seeds"] == 1 and report["failed"] == [] and report["txs"] == 8
    (run,) = report["runs"]
    assert run["ok"] and run["blocks"] == report["blocks"] > 0
    assert run["faults"]["drop"] > 0
    assert json.loads(out.read_text())["blocks"] == report["blocks"]


def test_two_shards_run_the_network_simulator_by_default() -> None:
    result = CliRunner().invoke(simulate, ["--shards", "2", "--seeds", "1", "--start", "5",
                                           "--txs", "8", "--faults", "none", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["receipts"] > 0 and report["txs"] == 8
    assert report["runs"][0]["repro"].startswith("shardnet simulate --network --shards 2")


def test_a_byzantine_primary_placed_from_the_command_line_is_refused_by_its_shard() -> None:
    result = CliRunner().invoke(simulate, [
        "--shards", "2", "--seeds", "2", "--start", "410000", "--txs", "16", "--faults",
        "none", "--byzantine", "0/0=fabricate_inbound", "--byzantine",
        "1/0=fabricate_inbound", "--link-fault", "1/3:0:2000:delay=20,loss=0.1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["failed"] == []
    assert report["byzantine_acts"]["fabricate_inbound"] > 0
    assert sum(report["bad_refusals"].values()) > 0
    assert all("--byzantine 0/0=fabricate_inbound --byzantine 1/0=fabricate_inbound "
               "--link-fault 1/3:0:2000:delay=20,loss=0.1" in run["repro"]
               for run in report["runs"])


def test_a_failing_network_seed_exits_1_with_its_replay_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(self: CrossShardChecker, *_: Any) -> None:
        self.violations.append("example violation")

    monkeypatch.setattr(CrossShardChecker, "check_final", failing)
    result = CliRunner().invoke(simulate, ["--network", "--shards", "2", "--seeds", "1",
                                           "--start", "4", "--txs", "4", "--faults", "none",
                                           "--byzantine", "1/2=withhold_votes",
                                           "--crash", "0/1:500:1000", "--soak", "2"])
    assert result.exit_code == 1
    assert "seed 4: FAILED" in result.output and "example violation" in result.output
    assert ("replay: shardnet simulate --network --shards 2 --validators 4 --seeds 1 "
            "--start 4 --txs 8 --faults none --byzantine 1/2=withhold_votes "
            "--crash 0/1:500:1000 --soak 2") in result.output


@pytest.mark.parametrize(("args", "said"), [
    (["--faults", "lightning"], "lightning"),
    (["--byzantine", "0/0/primary"], "SHARD/INDEX=MODE"),
    (["--byzantine", "0/0=lying"], "unknown byzantine mode 'lying'"),
    (["--byzantine", "0/0=wrong_roots", "--byzantine", "0/1=equivocate"], "f = 1"),
    (["--byzantine", "5/0=wrong_roots"], "no such node"),
    (["--link-fault", "0/1:0:100:teleport"], "bad rule"),
    (["--link-fault", "0/1:0:100:loss=2"], "loss"),
    (["--link-fault", "0/1:soon:100:partition"], "SHARD/INDEX:AT_MS:DURATION_MS"),
    (["--link-fault", "0/1:0:100:partition,peers=0/1"], "names itself"),
    (["--link-fault", "0/1:0:100:partition,peers=3/0"], "no node 3/0"),
    (["--crash", "0/1"], "SHARD/INDEX:AT_MS:DOWN_MS"),
    (["--crash", "0/9:100:100"], "no node 0/9"),
    (["--real-signatures"], "Ed25519"),
])
def test_the_network_simulator_refuses_what_it_cannot_run(args: list[str], said: str) -> None:
    result = CliRunner().invoke(simulate, ["--shards", "2", "--seeds", "1", *args])
    assert result.exit_code == 2, result.output
    assert said in result.output
    assert "Traceback" not in result.output


def test_byzantine_nodes_need_the_network_simulator() -> None:
    result = CliRunner().invoke(simulate, ["--byzantine", "0/0=wrong_roots"])
    assert result.exit_code == 2 and "--shards 2 or more" in result.output
