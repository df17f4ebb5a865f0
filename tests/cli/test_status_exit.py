"""``shardnet testnet status``'s exit code says whether the network is up (0 every node
answers, 1 some do not, 3 none does), after the table or the JSON, so a script can use it
as a health check; each failure is one ``Error:`` line naming the silent nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import scripts.cli.testnet.cli as testnet_cli
from scripts.cli import exits
from scripts.cli.params import free_base_port
from scripts.cli.testnet.cli import testnet as net_cli

ANSWER = {"view": 0, "primary": 0, "height": 7, "mempool": 0, "peers": 3, "recent_tps": 0.0}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 x 4 testnet folder whose nodes were never started (ports nobody listens on)."""
    root = tmp_path_factory.mktemp("status") / "tn"
    result = CliRunner().invoke(net_cli, ["init", "--testnet", str(root), "--base-port",
                                          str(free_base_port(16))], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root


def answering(names: set[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes whose API port is in ``names``' answer; the others are silent."""
    def url_status(url: str, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        return dict(ANSWER) if url in names else None

    monkeypatch.setattr(testnet_cli, "url_status", url_status)


def urls(root: Path) -> dict[str, str]:
    manifest = json.loads((root / "testnet.json").read_text())
    return {node["name"]: node["api_url"].rstrip("/") for node in manifest["nodes"]}


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_no_node_answers_exits_unreachable_after_the_table(folder: Path) -> None:
    result = CliRunner().invoke(net_cli, ["status", "--testnet", str(folder)])
    assert result.exit_code == exits.UNREACHABLE, result.output
    assert "shard1-node3" in result.output and "down" in result.output  # the table first
    assert "none of the 8 nodes answers" in error_line(result.output)


def test_no_node_answers_json_is_still_one_document(folder: Path) -> None:
    result = CliRunner().invoke(net_cli, ["status", "--testnet", str(folder), "--json"])
    assert result.exit_code == exits.UNREACHABLE, result.output
    document = json.loads(result.stdout)
    assert [node["status"] for node in document["nodes"]] == [None] * 8


def test_some_silent_nodes_fail_the_check_and_are_named(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    every = urls(folder)
    answering({url for name, url in every.items() if name != "shard0-node1"}, monkeypatch)
    result = CliRunner().invoke(net_cli, ["status", "--testnet", str(folder)])
    assert result.exit_code == exits.CHECK_FAILED, result.output
    line = error_line(result.output)
    assert "1 of 8 nodes do not answer: shard0-node1" in line


def test_every_node_answering_exits_zero(folder: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    answering(set(urls(folder).values()), monkeypatch)
    for args in ([], ["--json"], ["--watch", "--count", "1", "--json"]):
        result = CliRunner().invoke(net_cli, ["status", "--testnet", str(folder), *args])
        assert result.exit_code == exits.OK, (args, result.output)
        assert "Error" not in result.output
