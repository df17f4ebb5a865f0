"""The ``shardnet`` entry point: commands load lazily, and one whose optional
dependency is missing neither breaks ``--help`` nor the other commands."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from scripts.cli import main as cli_main


@pytest.fixture
def broken_command(monkeypatch: pytest.MonkeyPatch) -> None:
    commands = dict(cli_main.COMMANDS, broken="no_such_package_for_shardnet.cli:cmd")
    monkeypatch.setattr(cli_main.main, "lazy_commands", commands)


def test_help_lists_a_command_whose_dependency_is_missing(broken_command: None) -> None:
    result = CliRunner().invoke(cli_main.main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "broken" in result.output and "unavailable here" in result.output
    assert "testnet" in result.output


def test_running_it_is_a_one_line_error_naming_the_package(broken_command: None) -> None:
    result = CliRunner().invoke(cli_main.main, ["broken", "--count", "3"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no_such_package_for_shardnet" in lines[0], result.output
    assert "Traceback" not in result.output
