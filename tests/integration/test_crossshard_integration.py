"""Cross-shard receipts on a real 2 x 4 testnet: eight node processes on 127.0.0.1.

Transfers and swaps cross in both directions and every one reaches ``finalized``;
receipts emitted while their destination is down, whose relayers are killed before
it comes up, still arrive (the pull path); at the end every channel is drained and
the supply adds up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from consensus.kernel.codec import decode, encode
from consensus.kernel.crypto import KeyPair
from scripts.cli.client import ApiFailure, call
from scripts.cli.testnet.processes import wait_healthy
from sharding.accounts import derive_account, program_address, shard_of
from sharding.block import BlockHeader, SourceHeader
from sharding.crossshard import ReceiptBundle, Validators, verify_bundle
from sharding.genesis import load_genesis, total_supply
from sharding.merkle import InclusionProof
from sharding.receipts import Receipt
from sharding.tx import Swap, Transfer, TxBody, sign_tx, tx_hash
from tests.support.node import CHAIN_ID, LocalTestnet, local_testnet, submit, wait_until

pytestmark = pytest.mark.integration

SHARDS = 2


def accounts_of(shard: int, count: int, skip: int = 0) -> list[KeyPair]:
    keys = [derive_account("shardnet", i) for i in range(200)]
    return [k for k in keys if shard_of(k.public_key, SHARDS) == shard][skip:skip + count]


def pool_on(shard: int) -> tuple[bytes, int]:
    """A pool living on ``shard`` and an asset it takes (COIN-USD: 0, ETH-USD: 1)."""
    for name in ("COIN-USD", "ETH-USD", "COIN-ETH"):
        address = program_address(name)
        if shard_of(address, SHARDS) == shard:
            return address, 1 if "USD" in name else 0
    raise AssertionError(f"no pool on shard {shard}")


class Nonces:
    def __init__(self) -> None:
        self.next: dict[bytes, int] = {}

    def sign(self, key: KeyPair, call_: Transfer | Swap) -> tuple[bytes, str]:
        nonce = self.next.get(key.public_key, 0)
        self.next[key.public_key] = nonce + 1
        tx = sign_tx(key, TxBody(CHAIN_ID, key.public_key, nonce, call_))
        return encode(tx), tx_hash(tx).hex()


def crossing_load(nonces: Nonces, src: int, count: int, skip: int) -> tuple[list[bytes], list[str]]:
    """From ``src``: transfers to the other shard, swaps on its pool (some refunded on
    slippage) and local transfers, in turn."""
    dst = 1 - src
    senders = accounts_of(src, 8, skip)
    recipients = accounts_of(dst, 4)
    locals_ = accounts_of(src, 4, skip + 8)
    pool, asset = pool_on(dst)
    raws, hashes = [], []
    for i in range(count):
        sender = senders[i % len(senders)]
        kind = i % 4
        if kind == 0:
            call_: Transfer | Swap = Transfer(recipients[i % 4].public_key, 0, 1000 + i)
        elif kind == 1:
            call_ = Swap(pool, asset, 5_000 + i, 1)
        elif kind == 2:
            call_ = Swap(pool, asset, 5_000, 10**15)  # slippage: refunded from the pool's shard
        else:
            call_ = Transfer(locals_[i % 4].public_key, 1, 7)
        raw, digest = nonces.sign(sender, call_)
        raws.append(raw)
        hashes.append(digest)
    return raws, hashes


def statuses(net: LocalTestnet, shard: int, hashes: list[str]) -> dict[str, str]:
    url = net.shard_nodes(shard)[2].api_url  # node 2 stays up in every phase
    found = {}
    for digest in hashes:
        try:
            found[digest] = str(call("GET", f"{url}/v1/txs/{digest}", timeout_s=5)["status"])
        except (ApiFailure, OSError):
            found[digest] = "unknown"
    return found


def all_finalized(net: LocalTestnet, shard: int, hashes: list[str]) -> bool:
    return set(statuses(net, shard, hashes).values()) == {"finalized"}


def audits(net: LocalTestnet) -> dict[int, dict[str, Any]]:
    return {s: call("GET", f"{net.shard_nodes(s)[2].api_url}/v1/audit", timeout_s=5)
            for s in range(SHARDS)}


def drained(net: LocalTestnet) -> bool:
    reports = audits(net)
    return all(int(reports[d]["in_cursor"][str(s)]) == int(reports[s]["out_seq"][str(d)])
               for s in range(SHARDS) for d in range(SHARDS) if s != d)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTestnet]:
    with local_testnet(tmp_path_factory.mktemp("net"), shards=SHARDS,
                       start_shards=(0,)) as testnet:
        yield testnet


def test_receipts_reach_a_destination_started_after_their_relayers_died(
        net: LocalTestnet) -> None:
    nonces = Nonces()
    raws, hashes = crossing_load(nonces, src=0, count=24, skip=0)
    assert submit(net.shard_nodes(0)[1].api_url, raws)["accepted"] == 24
    wait_until(lambda: not {"pending", "unknown"} & set(statuses(net, 0, hashes).values()),
               60, "the load committed on shard 0")
    # Shard 1 is down: nothing crossing can be final yet.
    assert "finalized" in statuses(net, 0, hashes).values()  # the local transfers
    assert "committed" in statuses(net, 0, hashes).values()
    # Kill the relayers of every block so far (proposer 0 at view 0, and node 1).
    assert {net.status(n.name)["view"] for n in net.shard_nodes(0)[2:]} == {0}
    for node in net.shard_nodes(0)[:2]:
        net.kill(node.name)
    for node in net.shard_nodes(1):
        net.start(node.name)
    assert not wait_healthy(net.shard_nodes(1), 60)
    # Shard 1 pulls the receipts from shard 0's surviving nodes and applies them; the
    # swaps' outputs and refunds wait for shard 0 to come back.
    wait_until(lambda: int(audits(net)[1]["in_cursor"]["0"]) ==
               int(audits(net)[0]["out_seq"]["1"]), 60, "shard 1 applied every receipt")
    # ... by the pull path alone: the only nodes that pushed them are dead.
    received = [line for node in net.shard_nodes(1) for line in
                net.log_text(node.name).splitlines() if '"receipt.received"' in line]
    assert received and all('"via": "pull"' in line for line in received)
    for node in net.shard_nodes(0)[:2]:
        net.start(node.name)
    assert not wait_healthy(net.shard_nodes(0)[:2], 60)
    wait_until(lambda: all_finalized(net, 0, hashes), 90, "every transaction finalized")


def test_transfers_and_swaps_in_both_directions_finalize_and_the_audit_balances(
        net: LocalTestnet) -> None:
    nonces = Nonces()
    sent: dict[int, list[str]] = {}
    for src in range(SHARDS):
        raws, hashes = crossing_load(nonces, src=src, count=40, skip=20)
        assert submit(net.shard_nodes(src)[0].api_url, raws)["accepted"] == 40
        sent[src] = hashes
    for src, hashes in sent.items():
        wait_until(lambda src=src, hashes=hashes: all_finalized(net, src, hashes), 90,
                   f"shard {src}'s transactions finalized")
    wait_until(lambda: drained(net), 30, "every channel drained")
    reports = audits(net)
    genesis = load_genesis(net.root / "genesis.json")
    for asset, supply in total_supply(genesis).items():
        held = sum(int(r["balances"].get(str(asset), 0)) + int(r["reserves"].get(str(asset), 0))
                   for r in reports.values())
        flying = sum(int(reports[s]["sent"][str(d)][str(asset)]) -
                     int(reports[d]["received"][str(s)][str(asset)])
                     for s in range(SHARDS) for d in range(SHARDS) if s != d)
        assert flying == 0
        assert held == supply, genesis.asset_name(asset)
    # A swap's journey: debit on its shard, the pool's shard, the output back home.
    one = call("GET", f"{net.shard_nodes(0)[0].api_url}/v1/txs/{sent[0][1]}", timeout_s=5)
    assert [hop["shard"] for hop in one["hops"]] == [0, 1, 0]
    refunded = call("GET", f"{net.shard_nodes(1)[0].api_url}/v1/txs/{sent[1][2]}", timeout_s=5)
    assert refunded["status"] == "finalized" and [h["shard"] for h in refunded["hops"]] == [1, 0, 1]


def test_receipts_route_serves_proofs_that_verify_against_certified_headers(
        net: LocalTestnet) -> None:
    answer = call("GET", f"{net.shard_nodes(0)[3].api_url}/v1/receipts?dst=1&from=1&to=40",
                  timeout_s=10)
    assert answer["out_seq"] >= 40 and len(answer["receipts"]) == 40
    genesis = load_genesis(net.root / "genesis.json")
    validators = Validators(genesis.chain_id,
                            [[v.public_key for v in vs] for vs in genesis.validators])
    sources = {src["height"]: SourceHeader(decode(bytes.fromhex(src["header"]), BlockHeader,
                                                  4096), bytes.fromhex(src["certificate"]))
               for src in answer["sources"]}
    proven = 0
    for height, source in sources.items():
        mine = [r for r in answer["receipts"] if r["height"] == height]
        bundle = ReceiptBundle(
            source, [decode(bytes.fromhex(r["encoded"]), Receipt, 4096) for r in mine],
            [InclusionProof(r["proof"]["index"], r["proof"]["tree_size"],
                            [bytes.fromhex(node) for node in r["proof"]["path"]])
             for r in mine])
        proven += len(verify_bundle(bundle, 1, validators))
    assert proven == 40
    assert [r["seq"] for r in answer["receipts"]] == list(range(1, 41))

