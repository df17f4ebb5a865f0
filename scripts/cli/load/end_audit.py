"""The end-of-run audit's network half: wait (bounded) for quiescence, then the
conservation audit of ``shardnet audit`` (docs/PROTOCOL.md section 6). The other
half, every transaction sent committed exactly once or rejected with a reason, is
``Tracker.exactly_once``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from scripts.cli import audit as audit_cli
from scripts.cli.load.targets import Network
from scripts.cli.testnet.layout import TestnetDir
from sharding.genesis import total_supply


def block_interval_ms(root: Path | None) -> int:
    if root is None:
        return audit_cli.DEFAULT_BLOCK_INTERVAL_MS
    testnet = TestnetDir(root)
    try:
        return audit_cli.get_block_interval_ms(testnet, testnet.load_manifest())
    except (OSError, ValueError):
        return audit_cli.DEFAULT_BLOCK_INTERVAL_MS


def conservation_audit(network: Network, root: Path | None, wait_s: float,
                       quiet_intervals: int = audit_cli.DEFAULT_QUIET_INTERVALS
                       ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str | None]:
    """(conservation report, quiescence, problem): the report is None when no node of
    some shard answered; ``problem`` says why the audit could not be done cleanly."""
    nodes = [audit_cli.Node(n.name, n.shard, n.url) for n in network.nodes]
    genesis = network.genesis
    names = {asset: name for name, asset in genesis.assets.items()}
    interval = block_interval_ms(root)
    quiet_ms = quiet_intervals * interval
    poll_ms = max(audit_cli.POLL_INTERVAL_MS_MIN, min(audit_cli.POLL_INTERVAL_MS_MAX,
                                                      interval // 2))
    problem = None
    quiescence = None
    try:
        audits, _, waited_ms = audit_cli.wait_for_quiescence(
            nodes, genesis, max(wait_s, 2 * quiet_ms / 1000), quiet_ms, poll_ms)
        quiescence = {"waited_ms": waited_ms, "quiet_intervals": quiet_intervals,
                      "block_interval_ms": interval}
    except audit_cli.NotQuiescent as exc:
        problem = exc.message
        try:
            audits, _ = audit_cli.read_audits(nodes, genesis.num_shards,
                                              audit_cli.HTTP_TIMEOUT_S)
        except click.ClickException as again:
            return None, None, f"{problem}; {again.message}"
    except click.ClickException as exc:
        return None, None, exc.message
    try:
        report = audit_cli.compute_report(audits, total_supply(genesis), names,
                                          require_idle=quiescence is not None)
    except (ValueError, KeyError, TypeError) as exc:
        return None, quiescence, f"malformed /v1/audit answer: {exc}"
    return report, quiescence, problem
