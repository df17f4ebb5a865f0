"""Lending wallet commands (issue 18): ``shardnet tx supply|withdraw|borrow|repay|liquidate``
and the lending part of ``shardnet account``.

The lending program's address (``--market``) defaults to the one a node of the
lending shard reports (``GET /v1/lending/{address}``: every shard is asked until one
runs the markets). Supply, repay and withdraw may be sent from any shard (they travel as
receipts; a withdrawal from another shard is a request answered by a credit);
borrow and liquidate only from the lending shard (a node of another shard refuses
them: ``market_not_local``). Registered on the ``tx`` group by
one import line in scripts/cli/wallet.py.
"""

from __future__ import annotations

from typing import Any

import click

from scripts.cli.client import ApiFailure, Client, call
from scripts.cli.exits import Unreachable, UsageFailure
from scripts.cli.wallet import (
    U64,
    SignerArgs,
    _address,
    _ask,
    _asset,
    _client,
    _sign_and_send,
    tx,
    with_sender,
)
from sharding.tx import Borrow, Call, Liquidate, Repay, Supply, Withdraw

MARKET_HELP = ("The lending program's address (hex). Default: the one the lending shard's "
               "nodes report.")


def find_lending(client: Client, address: bytes) -> dict[str, Any] | None:
    """``GET /v1/lending/{address}`` from the first shard that runs the markets, or
    None when none does. A shard that does not answer is skipped."""
    for shard in range(client.num_shards):
        try:
            found: dict[str, Any] = call(
                "GET", f"{client.url_for(shard)}/v1/lending/{address.hex()}")
        except ApiFailure as exc:
            if exc.status in (400, 404):
                continue
            raise
        except OSError:
            continue
        return found
    return None


def _market(market: str | None, options: dict[str, Any]) -> bytes:
    if market is not None:
        return _address(market, "--market")
    client = _client(options["url"], options["testnet"])
    found = _ask("finding the lending markets", lambda: find_lending(client, b"\x00" * 32))
    if found is None:
        raise Unreachable("no shard answers with lending markets (GET /v1/lending): "
                          "give --market")
    return bytes.fromhex(str(found["lending_address"]))


def _send(make: Any, market: str | None, options: dict[str, Any]) -> None:
    call_: Call = make(_market(market, options))
    _sign_and_send(call_, options)


market_option = click.option("--market", default=None, help=MARKET_HELP)


@tx.command("supply")
@click.option("--asset", default="COIN", show_default=True)
@click.option("--amount", type=U64, required=True)
@market_option
@with_sender
def supply(asset: str, amount: int, market: str | None, **options: Any) -> None:
    """Supply AMOUNT of ASSET to its lending market (from any shard): mints supply
    shares that earn interest and count as collateral."""
    _send(lambda m: Supply(m, _asset(asset), amount), market, options)


@tx.command("withdraw")
@click.option("--asset", default="COIN", show_default=True)
@click.option("--amount", type=U64, required=True, help="Underlying amount to take out.")
@market_option
@with_sender
def withdraw(asset: str, amount: int, market: str | None, **options: Any) -> None:
    """Withdraw AMOUNT of ASSET (from any shard: a request by receipt answered by a credit;
    the position must stay healthy)."""
    _send(lambda m: Withdraw(m, _asset(asset), amount), market, options)


@tx.command("borrow")
@click.option("--asset", default="COIN", show_default=True)
@click.option("--amount", type=U64, required=True)
@market_option
@with_sender
def borrow(asset: str, amount: int, market: str | None, **options: Any) -> None:
    """Borrow AMOUNT of ASSET against the collateral (lending shard only)."""
    _send(lambda m: Borrow(m, _asset(asset), amount), market, options)


@tx.command("repay")
@click.option("--asset", default="COIN", show_default=True)
@click.option("--amount", type=U64, required=True,
              help="At most this much of the debt (the excess stays, or is refunded).")
@market_option
@with_sender
def repay(asset: str, amount: int, market: str | None, **options: Any) -> None:
    """Repay up to AMOUNT of the sender's debt in ASSET (from any shard)."""
    _send(lambda m: Repay(m, _asset(asset), amount), market, options)


@tx.command("liquidate")
@click.option("--borrower", required=True, help="The borrower's address (hex).")
@click.option("--debt-asset", default="COIN", show_default=True)
@click.option("--amount", type=U64, required=True,
              help="Debt to repay (at most the close factor of it).")
@click.option("--collateral-asset", default="USD", show_default=True)
@market_option
@with_sender
def liquidate(borrower: str, debt_asset: str, amount: int, collateral_asset: str,
              market: str | None, **options: Any) -> None:
    """Repay AMOUNT of a borrower's debt whose health factor is below 1 and take its
    collateral shares worth AMOUNT x (1 + bonus) (lending shard only)."""
    debt, collateral = _asset(debt_asset), _asset(collateral_asset)
    if debt == collateral:
        raise UsageFailure("--debt-asset and --collateral-asset must differ")
    target = _address(borrower, "--borrower")
    _send(lambda m: Liquidate(m, target, debt, amount, collateral), market, options)


__all__ = ["SignerArgs", "find_lending"]
