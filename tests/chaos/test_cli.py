"""``shardnet chaos list|run`` refusals, and ``testnet init --faults``."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from click.testing import CliRunner

from scripts.cli.main import main


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_list_shows_every_shipped_scenario() -> None:
    code, output = invoke("chaos", "list", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(output)}
    shipped = {p.stem for p in (Path(__file__).resolve().parents[2] / "scenarios").glob("*.toml")}
    assert set(rows) == shipped and len(shipped) >= 15
    assert not any("error" in row for row in rows.values())
    assert rows["primary-crash"]["actions"] == ["kill"]
    assert rows["f-partitioned"]["faults_endpoint"] is True
    assert rows["shard-restart"]["shards"] == 2


def test_run_refuses_an_unknown_or_broken_scenario(tmp_path: Path) -> None:
    code, output = invoke("chaos", "run", "no-such-scenario")
    assert code == 2 and "no scenario 'no-such-scenario'" in output and "primary-crash" in output
    broken = tmp_path / "broken.toml"
    broken.write_text('[load]\nrate = 10\n[[actions]]\nat = "1s"\naction = "kill"\n'
                      'nodes = "leader"\n')
    code, output = invoke("chaos", "run", str(broken))
    assert code == 2 and "actions[0].nodes" in output and "Traceback" not in output


def test_run_refuses_a_testnet_that_is_not_there_or_not_running(tmp_path: Path) -> None:
    code, output = invoke("chaos", "run", "primary-crash", "--testnet", str(tmp_path / "none"))
    assert code == 2 and "testnet.json not found" in output
    root = tmp_path / "net"
    assert invoke("testnet", "init", "--shards", "1", "--testnet", str(root))[0] == 0
    code, output = invoke("chaos", "run", "primary-crash", "--testnet", str(root))
    assert code == 1 and "not running: shard0-node0" in output


def test_init_with_faults_arms_every_node_and_only_then(tmp_path: Path) -> None:
    armed, plain = tmp_path / "armed", tmp_path / "plain"
    assert invoke("testnet", "init", "--shards", "1", "--faults", "--testnet", str(armed))[0] == 0
    assert invoke("testnet", "init", "--shards", "1", "--testnet", str(plain))[0] == 0
    for i in range(4):
        config = tomllib.loads((armed / "nodes" / f"shard0-node{i}" / "config.toml").read_text())
        assert config["faults"]["enabled"] is True
        config = tomllib.loads((plain / "nodes" / f"shard0-node{i}" / "config.toml").read_text())
        assert config.get("faults", {}).get("enabled", False) is False
