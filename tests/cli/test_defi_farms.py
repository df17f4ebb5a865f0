"""``shardnet tx add-liquidity|remove-liquidity|stake|harvest|unstake`` (issue 18):
each signs the call it names, fully offline with ``--raw --nonce --chain-id``."""

from __future__ import annotations

import json

import pytest

from scripts.cli import exits
from sharding.accounts import program_address
from sharding.tx import (
    AddLiquidity,
    Call,
    Harvest,
    RemoveLiquidity,
    Stake,
    Unstake,
    decode_tx,
    verify_tx_signature,
)
from tests.support.cli import offline_wallet, run  # noqa: F401 (the fixture)

POOL = program_address("COIN-USD")
OFFLINE = ("--raw", "--nonce", "4", "--chain-id", "c", "--json")


pytestmark = pytest.mark.usefixtures("offline_wallet")


@pytest.mark.parametrize(
    ("args", "call"),
    [
        (("add-liquidity", "--pool", "coin-usd", "--amount-a", "10", "--amount-b", "20",
          "--min-shares", "3"), AddLiquidity(POOL, 10, 20, 3)),
        (("remove-liquidity", "--pool", "COIN-USD", "--shares", "7", "--min-b", "2"),
         RemoveLiquidity(POOL, 7, 0, 2)),
        (("stake", "--pool", "COIN-USD", "--shares", "5"), Stake(POOL, 5)),
        (("harvest", "--pool", POOL.hex()), Harvest(POOL)),
        (("unstake", "--pool", "COIN-USD", "--shares", "9"), Unstake(POOL, 9)),
    ],
)
def test_farm_commands_sign_the_call_they_name(args: tuple[str, ...], call: Call) -> None:
    result = run("tx", *args, *OFFLINE)
    assert result.exit_code == 0, result.output
    tx = decode_tx(bytes.fromhex(json.loads(result.stdout)["raw"]))
    assert tx.body.call == call
    assert (tx.body.nonce, tx.body.chain_id) == (4, "c")
    assert verify_tx_signature(tx)


def test_a_bad_pool_address_is_a_one_line_usage_error() -> None:
    result = run("tx", "stake", "--pool", "zz" * 32, "--shares", "1", *OFFLINE)
    assert result.exit_code == exits.USAGE, result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_negative_share_count_is_a_usage_error() -> None:
    result = run("tx", "unstake", "--pool", "COIN-USD", "--shares", "-1", *OFFLINE)
    assert result.exit_code == exits.USAGE


def test_testnet_init_writes_a_farm_on_every_default_pool() -> None:
    from scripts.cli.testnet.generate import (
        FARM_BUDGET,
        POOLS,
        TestnetSpec,
        genesis_document,
        node_entries,
    )
    from sharding.genesis import load_genesis, total_supply

    spec = TestnetSpec(shards=2)
    genesis = load_genesis(genesis_document(spec, node_entries(spec)))
    assert [farm.pool for farm in genesis.farms] == [name for name, _ in POOLS]
    coin = genesis.assets["COIN"]
    assert all(farm.reward_asset == coin and farm.budget == FARM_BUDGET
               for farm in genesis.farms)
    assert total_supply(genesis)[coin] >= len(POOLS) * FARM_BUDGET
