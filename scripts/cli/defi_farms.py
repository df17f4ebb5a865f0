"""Wallet commands for liquidity and farms (issue 18): ``shardnet tx add-liquidity|
remove-liquidity|stake|harvest|unstake``.

They sign like every ``shardnet tx`` command (scripts/cli/wallet.py: the signer,
``--nonce``, ``--raw``, ``--wait``, ``--json``) and add themselves to the ``tx``
group when wallet.py is imported. Liquidity and farm calls run on the pool's
shard: the sender must live there (the node refuses others at admission with
``pool_not_local``, exit 1). ``shardnet account`` shows the LP shares, stakes and
pending rewards (the node's ``liquidity`` field).
"""

from __future__ import annotations

from typing import Any

import click

from scripts.cli.exits import UsageFailure
from scripts.cli.wallet import U64, _address, _sign_and_send, tx, with_sender
from sharding.accounts import program_address
from sharding.tx import AddLiquidity, Harvest, RemoveLiquidity, Stake, Unstake

POOL_HELP = "Pool name (COIN-USD) or address (hex); the sender must live on its shard."


def pool_address(pool: str) -> bytes:
    """A pool's address from its name (``program_address``) or its hex address."""
    if not pool:
        raise UsageFailure("--pool: give a pool name (COIN-USD) or its address")
    return _address(pool, "--pool") if len(pool) >= 64 else program_address(pool.upper())


@tx.command("add-liquidity")
@click.option("--pool", required=True, help=POOL_HELP)
@click.option("--amount-a", type=U64, required=True,
              help="Most of the pool's first asset (lower id) to deposit.")
@click.option("--amount-b", type=U64, required=True,
              help="Most of the pool's second asset to deposit.")
@click.option("--min-shares", type=U64, default=0, show_default=True,
              help="Fail (slippage) unless the deposit mints at least this many shares.")
@with_sender
def add_liquidity(pool: str, amount_a: int, amount_b: int, min_shares: int,
                  **options: Any) -> None:
    """Deposit into a pool at its price for LP shares (the excess stays with you)."""
    _sign_and_send(AddLiquidity(pool_address(pool), amount_a, amount_b, min_shares), options)


@tx.command("remove-liquidity")
@click.option("--pool", required=True, help=POOL_HELP)
@click.option("--shares", type=U64, required=True, help="LP shares to burn.")
@click.option("--min-a", type=U64, default=0, show_default=True)
@click.option("--min-b", type=U64, default=0, show_default=True)
@with_sender
def remove_liquidity(pool: str, shares: int, min_a: int, min_b: int, **options: Any) -> None:
    """Burn LP shares for their part of the pool's reserves."""
    _sign_and_send(RemoveLiquidity(pool_address(pool), shares, min_a, min_b), options)


@tx.command("stake")
@click.option("--pool", required=True, help=POOL_HELP)
@click.option("--shares", type=U64, required=True, help="LP shares to stake.")
@with_sender
def stake(pool: str, shares: int, **options: Any) -> None:
    """Stake LP shares in the pool's farm (pays what was pending first)."""
    _sign_and_send(Stake(pool_address(pool), shares), options)


@tx.command("harvest")
@click.option("--pool", required=True, help=POOL_HELP)
@with_sender
def harvest(pool: str, **options: Any) -> None:
    """Collect the pending rewards of your stake in the pool's farm."""
    _sign_and_send(Harvest(pool_address(pool)), options)


@tx.command("unstake")
@click.option("--pool", required=True, help=POOL_HELP)
@click.option("--shares", type=U64, required=True, help="Staked shares to take back.")
@with_sender
def unstake(pool: str, shares: int, **options: Any) -> None:
    """Take staked LP shares back (pays the pending rewards too)."""
    _sign_and_send(Unstake(pool_address(pool), shares), options)
