"""``shardnet load --mix`` with lending calls and the ``price-shock`` preset (issue 18):
borrow, repay and liquidate come from the lending shard's senders, supplies from any
shard (one hop by receipt), a borrow after the sender's collateral; the stream,
executed by the spec on the testnet generator's genesis, makes liquidations succeed
after the shocks and keeps the audit (PROTOCOL.md section 6)."""

from __future__ import annotations

from collections import Counter

import pytest

from scripts.cli.load.accounts import build_universe
from scripts.cli.load.signer import sign_items
from scripts.cli.load.workload import Intent, Workload, WorkloadError, WorkloadSpec, parse_mix
from scripts.cli.testnet.generate import TestnetSpec, genesis_document, node_entries
from sharding.audit import compute_audit
from sharding.block import GENESIS_PREV_HASH
from sharding.executor import build_block
from sharding.genesis import genesis_state, load_genesis, make_genesis_dict, total_supply
from sharding.receipts import Receipt
from sharding.tx import decode_tx

SPEC = TestnetSpec(shards=2, accounts=40)
GENESIS = load_genesis(genesis_document(SPEC, node_entries(SPEC)))


def stream(mix: str, count: int, senders: int = 10) -> tuple[Workload, list[Intent]]:
    universe = build_universe(GENESIS, SPEC.seed, SPEC.accounts, senders)
    workload = Workload(WorkloadSpec(parse_mix(mix), rng_seed=3), universe)
    return workload, [workload.next() for _ in range(count)]


def test_price_shock_is_a_preset_of_lending_kinds() -> None:
    assert set(parse_mix("price-shock")) == {"supply", "borrow", "repay", "shock", "liquidate"}


def test_lending_calls_come_from_the_lending_shard_and_supplies_cross_in_one_hop() -> None:
    workload, intents = stream("price-shock", 400)
    lending = workload.universe.lending
    assert lending is not None
    borrowed: set[int] = set()
    for intent in intents:
        if intent.kind == "supply":
            assert intent.dst_shard == lending.shard
            assert intent.inbound_hops == (intent.src_shard != lending.shard)
        else:
            assert intent.src_shard == intent.dst_shard == lending.shard, intent
        if intent.kind == "borrow":
            borrowed.add(intent.sender)
        if intent.kind == "repay":
            assert intent.sender in borrowed
    kinds = Counter(i.kind for i in intents)
    assert set(kinds) == {"supply", "borrow", "repay", "shock", "liquidate"}


def test_lending_kinds_without_markets_are_refused() -> None:
    plain = load_genesis(make_genesis_dict(num_shards=2, validators_per_shard=1, accounts=16))
    universe = build_universe(plain, "load", 16, 4)
    with pytest.raises(WorkloadError, match="no markets"):
        Workload(WorkloadSpec(parse_mix("borrow=1")), universe)


def test_the_price_shock_stream_liquidates_and_keeps_the_audit() -> None:
    workload, intents = stream("price-shock", 500)
    states = {shard: genesis_state(GENESIS, shard) for shard in range(2)}
    nonces: Counter[int] = Counter()
    by_shard: dict[int, list[tuple[str, bytes]]] = {0: [], 1: []}
    for intent in intents:
        index = workload.universe.senders[intent.sender].index
        (signed,), _ = sign_items(GENESIS.chain_id, SPEC.seed, [
            (index, nonces[index], intent.kind, intent.target, intent.asset, intent.amount)])
        nonces[index] += 1
        by_shard[intent.src_shard].append((intent.kind, signed[0]))
    ok: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    receipts: list[Receipt] = []
    for shard, items in by_shard.items():
        # Blocks of 20, 5 heights apart: the TWAP (10-block window) follows the shocks.
        for start in range(0, len(items), 20):
            chunk = items[start:start + 20]
            _, result, rejected = build_block(
                states[shard], [decode_tx(raw) for _, raw in chunk], [],
                height=1 + start // 4, view=0, prev_hash=GENESIS_PREV_HASH,
                time_ms=1 + start, proposer=0)
            assert not rejected, rejected
            for (kind, _), outcome in zip(chunk, result.outcomes, strict=True):
                (ok if outcome.ok else failed)[kind if outcome.ok else
                                               f"{kind}:{outcome.error}"] += 1
            receipts += result.receipts
            states[shard].apply_prepared(result.prepared)
    assert {"supply", "borrow", "repay", "shock", "liquidate"} <= set(ok), (ok, failed)
    assert ok["liquidate"] >= 5, (ok, failed)
    assert compute_audit(states, receipts, total_supply(GENESIS)).ok
