"""The ledger demo runs end to end and its audit balances."""

from __future__ import annotations

from click.testing import CliRunner

from scripts.cli.demo import ledger_demo as demo


def test_demo_applies_blocks_on_two_shards_and_the_audit_balances() -> None:
    result = CliRunner().invoke(demo, [], terminal_width=160)
    assert result.exit_code == 0, result.output
    assert "0 in flight" in result.output
    assert "MISMATCH" not in result.output
    assert "slippage" in result.output
