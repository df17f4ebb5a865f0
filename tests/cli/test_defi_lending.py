"""``shardnet tx supply|withdraw|borrow|repay|liquidate`` (issue 18): each signs the call
it names, fully offline with ``--market --raw --nonce --chain-id``; usage errors exit 2,
no node answering for the market address exits 3."""

from __future__ import annotations

import json

import pytest

from scripts.cli import exits
from sharding.accounts import derive_account
from sharding.genesis import lending_address
from sharding.tx import (
    Borrow,
    Call,
    Liquidate,
    Repay,
    Supply,
    Withdraw,
    decode_tx,
    verify_tx_signature,
)
from tests.support.cli import offline_wallet, run  # noqa: F401 (the fixture)

MARKET = lending_address(0, 2)
BORROWER = derive_account("shardnet", 5).public_key
OFFLINE = ("--market", MARKET.hex(), "--raw", "--nonce", "4", "--chain-id", "c", "--json")


pytestmark = pytest.mark.usefixtures("offline_wallet")


@pytest.mark.parametrize(
    ("args", "call"),
    [
        (("supply", "--asset", "usd", "--amount", "10"), Supply(MARKET, 1, 10)),
        (("withdraw", "--asset", "COIN", "--amount", "7"), Withdraw(MARKET, 0, 7)),
        (("borrow", "--asset", "ETH", "--amount", "5"), Borrow(MARKET, 2, 5)),
        (("repay", "--amount", "9"), Repay(MARKET, 0, 9)),
        (("liquidate", "--borrower", BORROWER.hex(), "--debt-asset", "USD", "--amount", "3",
          "--collateral-asset", "COIN"), Liquidate(MARKET, BORROWER, 1, 3, 0)),
    ],
)
def test_lending_commands_sign_the_call_they_name(args: tuple[str, ...], call: Call) -> None:
    result = run("tx", *args, *OFFLINE)
    assert result.exit_code == 0, result.output
    tx = decode_tx(bytes.fromhex(json.loads(result.stdout)["raw"]))
    assert tx.body.call == call
    assert (tx.body.nonce, tx.body.chain_id) == (4, "c")
    assert verify_tx_signature(tx)


def test_liquidating_into_the_same_asset_is_a_usage_error() -> None:
    result = run("tx", "liquidate", "--borrower", BORROWER.hex(), "--debt-asset", "USD",
                 "--amount", "3", "--collateral-asset", "USD", *OFFLINE)
    assert result.exit_code == exits.USAGE
    assert "must differ" in result.output


def test_a_bad_market_address_is_a_usage_error() -> None:
    result = run("tx", "supply", "--amount", "1", "--market", "zz", "--raw", "--nonce", "0",
                 "--chain-id", "c")
    assert result.exit_code == exits.USAGE
    assert "--market" in result.output


def test_without_market_and_without_nodes_the_command_says_what_to_give() -> None:
    result = run("tx", "supply", "--amount", "1", "--url", "http://127.0.0.1:9")
    assert result.exit_code == exits.UNREACHABLE
    assert "Traceback" not in result.output
