"""All programs on a real 2 x 4 testnet (issue 18): eight node processes on 127.0.0.1.

Transfers and swaps in both directions, liquidity and a farm (stake, harvest), lending
(supply from both shards, one by receipt; a cross-shard repayment without a debt
refunded; a cross-shard withdrawal; a borrow near the limit; swaps that crash the
collateral's price pool; once the TWAP follows, a liquidation that succeeds), then
``shardnet audit --wait`` passes:
supply = balances + pool reserves + market cash + farm holdings + in flight, per asset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from consensus.kernel.codec import encode
from consensus.kernel.crypto import KeyPair
from scripts.cli.client import ApiFailure, call
from scripts.cli.main import main
from sharding.accounts import derive_account, shard_of
from sharding.genesis import load_genesis
from sharding.tx import (
    AddLiquidity,
    Borrow,
    Call,
    Harvest,
    Liquidate,
    Repay,
    Stake,
    Supply,
    Swap,
    Transfer,
    TxBody,
    Withdraw,
    sign_tx,
    tx_hash,
)
from tests.support.node import CHAIN_ID, LocalTestnet, local_testnet, submit, wait_until

pytestmark = pytest.mark.integration

SHARDS = 2
COIN, USD = 0, 1


def accounts_of(shard: int) -> list[KeyPair]:
    keys = [derive_account("shardnet", i) for i in range(60)]
    return [k for k in keys if shard_of(k.public_key, SHARDS) == shard]


class Sender:
    """Signs with consecutive nonces per key and remembers every hash per shard."""

    def __init__(self) -> None:
        self.nonces: dict[bytes, int] = {}
        self.sent: dict[int, list[str]] = {0: [], 1: []}

    def batch(self, net: LocalTestnet, calls: list[tuple[KeyPair, Call]]) -> list[str]:
        by_shard: dict[int, list[bytes]] = {}
        hashes = []
        for key, call_ in calls:
            nonce = self.nonces.get(key.public_key, 0)
            self.nonces[key.public_key] = nonce + 1
            tx = sign_tx(key, TxBody(CHAIN_ID, key.public_key, nonce, call_))
            shard = shard_of(key.public_key, SHARDS)
            by_shard.setdefault(shard, []).append(encode(tx))
            hashes.append(tx_hash(tx).hex())
            self.sent[shard].append(hashes[-1])
        for shard, raws in by_shard.items():
            answer = submit(net.shard_nodes(shard)[0].api_url, raws)
            assert answer["accepted"] == len(raws), answer
        return hashes


def status_of(net: LocalTestnet, digest: str) -> dict[str, Any]:
    for shard in range(SHARDS):
        try:
            found: dict[str, Any] = call(
                "GET", f"{net.shard_nodes(shard)[1].api_url}/v1/txs/{digest}", timeout_s=3)
        except ApiFailure:
            continue
        return found
    return {"status": "unknown"}


def settled(net: LocalTestnet, hashes: list[str]) -> Callable[[], bool]:
    return lambda: all(status_of(net, h)["status"] in ("finalized", "failed") for h in hashes)


def lending(net: LocalTestnet, address: bytes) -> dict[str, Any]:
    result: dict[str, Any] = call(
        "GET", f"{net.shard_nodes(0)[2].api_url}/v1/lending/{address.hex()}", timeout_s=3)
    return result


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTestnet]:
    with local_testnet(tmp_path_factory.mktemp("defi"), shards=SHARDS,
                       start_shards=(0, 1)) as testnet:
        yield testnet


def test_all_programs_then_the_audit_passes(net: LocalTestnet) -> None:
    genesis = load_genesis(net.root / "genesis.json")
    assert genesis.lending is not None and genesis.lending.shard == 0
    market = genesis.lending.address
    shock_pool = next(p for p in genesis.pools if p.name.startswith("COIN-USD-lending"))
    pools = {shard: [p for p in genesis.pools
                     if shard_of(p.address, SHARDS) == shard and not p.name.endswith("lending")]
             for shard in range(SHARDS)}
    farmed = {farm.pool for farm in genesis.farms}
    zero, one = accounts_of(0), accounts_of(1)
    borrower, usd_supplier, shocker, liquidator = zero[:4]
    remote = one[0]
    sender = Sender()

    # 1. Transfers and swaps both ways, liquidity + farm on each shard, supplies.
    calls: list[tuple[KeyPair, Call]] = [
        (zero[4], Transfer(one[4].public_key, COIN, 1_000)),
        (one[5], Transfer(zero[5].public_key, USD, 2_000)),
    ]
    harvests: list[tuple[KeyPair, Call]] = []  # a block after the stake
    for shard, here in ((0, zero), (1, one)):
        if pools[1 - shard]:
            far = pools[1 - shard][0]
            calls.append((here[6], Swap(far.address, far.asset_a, 10_000, 0)))
        farm_pool = next((p for p in pools[shard] if p.name in farmed), None)
        if farm_pool is not None:
            farmer = here[7]
            calls += [(farmer, AddLiquidity(farm_pool.address, 10**9, 10**9, 0)),
                      (farmer, Stake(farm_pool.address, 10**8))]
            harvests.append((farmer, Harvest(farm_pool.address)))
    calls += [
        (borrower, Supply(market, COIN, 10**9)),
        (usd_supplier, Supply(market, USD, 10**10)),
        (remote, Supply(market, USD, 10**9)),  # by a SUPPLY receipt
        (remote, Repay(market, USD, 5_000)),  # no debt: refunded by a REFUND receipt
    ]
    first = sender.batch(net, calls)
    wait_until(settled(net, first), 40, "the first batch final")
    outcomes = [(type(c).__name__, status_of(net, h)) for (_, c), h in zip(calls, first,
                                                                             strict=True)]
    assert all(found["status"] == "finalized" for _, found in outcomes), [
        (name, found["status"], found.get("outcome")) for name, found in outcomes]
    assert lending(net, remote.public_key)["positions"][0]["supplied"] == 10**9

    # 2. A borrow near the limit (collateral factor 0.75 at the genesis price 1); the
    # farmers harvest what their stake earned since the last block.
    second = sender.batch(net, [(borrower, Borrow(market, USD, 7 * 10**8)),
                                (remote, Withdraw(market, USD, 4 * 10**8)), *harvests])
    wait_until(settled(net, second), 20, "the borrow, the withdrawal and the harvests final")
    assert {status_of(net, h)["status"] for h in second} == {"finalized"}
    # The remote withdrawal went by a WITHDRAW request and came home as a credit.
    assert lending(net, remote.public_key)["positions"][0]["supplied"] == 6 * 10**8
    assert lending(net, borrower.public_key)["liquidatable"] is False

    # 3. Price shock: COIN dumped into its price pool; the TWAP follows within 2N blocks.
    shock = sender.batch(net, [(shocker, Swap(shock_pool.address, COIN, 4 * 10**11, 0))])
    wait_until(settled(net, shock), 20, "the shock swap final")
    wait_until(lambda: lending(net, borrower.public_key)["liquidatable"], 30,
               "the borrower liquidatable once the TWAP follows the shock")

    # 4. The liquidation succeeds; a repayment of what is left.
    liquidated = sender.batch(net, [
        (liquidator, Liquidate(market, borrower.public_key, USD, 10**8, COIN)),
        (borrower, Repay(market, USD, 10**8)),
    ])
    wait_until(settled(net, liquidated), 20, "the liquidation final")
    assert [status_of(net, h)["status"] for h in liquidated] == ["finalized", "finalized"]
    seized = lending(net, liquidator.public_key)["positions"]
    assert seized and seized[0]["asset"] == COIN and seized[0]["shares"] > 10**8

    # 5. The audit at quiescence: exit 0.
    result = CliRunner().invoke(main, ["audit", "--testnet", str(net.root), "--wait", "30"])
    assert result.exit_code == 0, result.output
