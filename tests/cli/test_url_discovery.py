"""``--url`` / ``SHARDNET_URL`` for ``shardnet audit`` and ``shardnet testnet status``:
the whole network from ``GET /v1/network`` (the helper ``shardnet load`` uses), against
the fake node of the load tests; the testnet folder stays the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import scripts.cli.load.targets as targets
from scripts.cli.audit import audit
from scripts.cli.testnet.cli import testnet as net_cli
from tests.support.load import fake_node

DEAD_URL = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(targets.URL_ENV, raising=False)


def one_line_error(output: str, *needles: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    for needle in needles:
        assert needle in lines[0], output


def test_audit_url_discovers_the_network() -> None:
    with fake_node() as node:
        result = CliRunner().invoke(audit, ["--url", node.url, "--json"],
                                    catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["sources"] == {"0": "shard0-node0"}
    assert report["quiescence"] is None


def test_audit_env_url_and_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    real = targets.discover_urls

    def spy(urls: list[str], **kw: bool) -> targets.Network:
        calls.append(list(urls))
        return real(urls, **kw)

    monkeypatch.setattr(targets, "discover_urls", spy)
    with fake_node() as node:
        monkeypatch.setenv(targets.URL_ENV, node.url + "/")
        result = CliRunner().invoke(audit, ["--json", "--wait", "5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["quiescence"]["block_interval_ms"] == 200
    assert calls == [[node.url]]  # the shared helper, SHARDNET_URL without its slash


def test_audit_unreachable_url_is_one_line() -> None:
    result = CliRunner().invoke(audit, ["--url", DEAD_URL])
    assert result.exit_code == 3  # exits.UNREACHABLE
    one_line_error(result.output, "no node answers /v1/network", DEAD_URL)


def test_audit_testnet_folder_wins_over_env(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(targets.URL_ENV, DEAD_URL)
    result = CliRunner().invoke(audit, ["--testnet", str(tmp_path / "none")])
    assert result.exit_code == 2  # exits.USAGE: no such folder
    one_line_error(result.output, "none")
    assert "/v1/network" not in result.output


def test_status_url_lists_every_node(monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_node() as node:
        result = CliRunner().invoke(net_cli, ["status", "--url", node.url],
                                    catch_exceptions=False)
        monkeypatch.setenv(targets.URL_ENV, node.url)
        from_env = CliRunner().invoke(net_cli, ["status"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert from_env.exit_code == 0, from_env.output
    for name in ("shard0-node0", "shard0-node3"):
        assert name in result.output and name in from_env.output
    assert node.url in result.output  # the title names where the network was found


def test_status_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(net_cli, ["status", "--url", DEAD_URL])
    assert result.exit_code == 3  # exits.UNREACHABLE
    one_line_error(result.output, "no node answers /v1/network")
    result = CliRunner().invoke(net_cli, ["status", "--testnet", str(tmp_path / "none")])
    assert result.exit_code == 2  # exits.USAGE: no such folder
    one_line_error(result.output, "none")
