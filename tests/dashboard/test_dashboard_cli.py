"""``shardnet dashboard``'s command line: every failure is one ``Error:`` line, exit 1."""

from __future__ import annotations

import socket
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from scripts.dashboard.cli import dashboard, serve
from tests.dashboard.fakes import network_of


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(dashboard, list(args), env={"SHARDNET_URL": ""})
    return result.exit_code, result.output


@pytest.mark.parametrize(("args", "says", "exit_code"), [
    (("--url", "http://127.0.0.1:9"), "no node answers /v1/network", 3),  # unreachable
    (("--json",), "--json goes with --once", 2),  # usage
    (("--interval", "5s", "--window", "1s"), "--window must be at least --interval", 2),
    (("--interval", "0s"), "not a positive duration", 2),
    (("--port", "70000"), "70000", 2),
])
def test_a_failure_is_one_error_line(args: tuple[str, ...], says: str, exit_code: int) -> None:
    code, output = _run(*args)
    assert code == exit_code, output  # scripts/cli/exits.py
    lines = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and says in lines[0], output
    assert "Traceback" not in output


def test_a_missing_testnet_folder_is_one_line(tmp_path: Path) -> None:
    code, output = _run("--testnet", str(tmp_path / "nowhere"))
    assert code == 2 and output.startswith("Error: ") and len(output.splitlines()) == 1


async def test_a_port_in_use_is_one_line_naming_it() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(click.ClickException, match=f"cannot listen on 127.0.0.1:{port}"):
            await serve(network_of([]), port, 1.0, 60.0)
    finally:
        taken.close()


async def test_once_without_json_is_a_line_per_shard_and_per_node_down() -> None:
    from scripts.cli.load.targets import NodeTarget
    from scripts.dashboard.cli import _once, _summary

    down = [NodeTarget(f"shard{s}-node0", s, 0, "http://127.0.0.1:9") for s in (0, 1)]
    text = _summary(await _once(network_of(down), 1.0, 60.0))
    lines = text.splitlines()
    assert lines[0].endswith("0/2 nodes up (fake)")
    assert lines[1].startswith("shard 0: height -,") and "0/1 nodes up" in lines[1]
    assert lines[3].startswith("shard0-node0: unreachable: cannot connect")
