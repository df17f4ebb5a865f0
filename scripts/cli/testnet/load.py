"""``shardnet testnet load`` and the compose ``loadgen`` service: thin uses of
``shardnet load`` (scripts/load/) with a testnet's defaults.

``--txs N`` sends N transactions at ``--rate`` (default 400 tx/s), every option of
``shardnet load`` passes through (``--cross-shard 0.2``, ``--report DIR``, ...), and
the run ends with the audit like any ``shardnet load``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from scripts.cli.params import json_option, testnet_option

DEFAULT_RATE_TPS = 400.0


def load_args(txs: int, rate_tps: float, extra: Sequence[str]) -> list[str]:
    """``shardnet load`` arguments for N transactions at a rate (the duration lets all
    of them out; ``--max-txs`` stops at N)."""
    duration_s = txs / rate_tps + 1.0
    return ["--max-txs", str(txs), "--rate", f"{rate_tps:g}", "--duration", f"{duration_s:g}s",
            *extra]


def run_load(args: Sequence[str], prog_name: str) -> None:
    """Run ``shardnet load`` with ``args`` (exits with its exit code)."""
    from scripts.cli.load.cli import load as load_command

    load_command.main(args=list(args), prog_name=prog_name)


@click.command("load", context_settings={"ignore_unknown_options": True,
                                         "allow_extra_args": True})
@testnet_option()
@click.option("--txs", type=click.IntRange(1, 10_000_000), default=400, show_default=True)
@click.option("--rate", "rate_tps", type=click.FloatRange(min=1), default=DEFAULT_RATE_TPS,
              show_default=True, help="Offered tx/s.")
@json_option("The load report as JSON on stdout (progress on stderr).")
@click.pass_context
def load(ctx: click.Context, root: Path, txs: int, rate_tps: float, as_json: bool) -> None:
    """N signed transactions at the testnet, with live progress and the audit at the end:
    `shardnet load --testnet DIR --max-txs N` (other `shardnet load` options pass on)."""
    extra = [*ctx.args, "--json"] if as_json else ctx.args
    run_load(["--testnet", str(root), *load_args(txs, rate_tps, extra)],
             "shardnet testnet load")
