"""``shardnet load --mix`` with liquidity and farm calls (issue 18): every call stays on
the sender's shard, a stake comes after the sender's deposit and a harvest after its
stake, and the stream, executed by the spec, succeeds for every kind and keeps the
audit (PROTOCOL.md section 6)."""

from __future__ import annotations

from collections import Counter

import pytest

from scripts.cli.load.accounts import build_universe
from scripts.cli.load.signer import sign_items
from scripts.cli.load.workload import Intent, Workload, WorkloadError, WorkloadSpec, parse_mix
from sharding.audit import compute_audit
from sharding.block import GENESIS_PREV_HASH
from sharding.executor import build_block
from sharding.genesis import genesis_state, load_genesis, make_genesis_dict, total_supply
from sharding.tx import decode_tx

MIX = "add_liquidity=20,remove_liquidity=10,stake=30,unstake=10,harvest=30"
GENESIS = load_genesis(make_genesis_dict(num_shards=2, validators_per_shard=1, accounts=16,
                                         farm_budget=10**12, farm_reward_per_block=10**6))


def stream(mix: str, count: int, senders: int = 6) -> tuple[Workload, list[Intent]]:
    universe = build_universe(GENESIS, "load", 16, senders)
    workload = Workload(WorkloadSpec(parse_mix(mix), rng_seed=7), universe)
    return workload, [workload.next() for _ in range(count)]


def test_pool_calls_stay_home_and_come_in_a_possible_order() -> None:
    workload, intents = stream(MIX, 400)
    seen: dict[tuple[int, bytes], set[str]] = {}
    for intent in intents:
        sender = workload.universe.senders[intent.sender]
        assert intent.src_shard == intent.dst_shard == sender.shard
        done = seen.setdefault((intent.sender, intent.target), set())
        if intent.kind in ("stake", "remove_liquidity"):
            assert "add_liquidity" in done, intent
        if intent.kind in ("harvest", "unstake"):
            assert "stake" in done, intent
        done.add(intent.kind)
    assert set(Counter(i.kind for i in intents)) == {
        "add_liquidity", "remove_liquidity", "stake", "unstake", "harvest"}


def test_the_same_seed_gives_the_same_stream() -> None:
    assert stream(MIX, 200)[1] == stream(MIX, 200)[1]


def test_farm_calls_without_a_farm_are_refused() -> None:
    plain = load_genesis(make_genesis_dict(num_shards=2, validators_per_shard=1, accounts=16))
    universe = build_universe(plain, "load", 16, 4)
    with pytest.raises(WorkloadError, match="no farm"):
        Workload(WorkloadSpec(parse_mix("stake=1")), universe)
    Workload(WorkloadSpec(parse_mix("add_liquidity=1")), universe)  # pools suffice


def test_the_stream_executes_every_kind_successfully_and_keeps_the_audit() -> None:
    workload, intents = stream(MIX, 240)
    states = {shard: genesis_state(GENESIS, shard) for shard in range(2)}
    nonces: Counter[int] = Counter()
    by_shard: dict[int, list[tuple[str, bytes]]] = {0: [], 1: []}
    for intent in intents:
        index = workload.universe.senders[intent.sender].index
        (signed,), _ = sign_items(GENESIS.chain_id, "load", [
            (index, nonces[index], intent.kind, intent.target, intent.asset, intent.amount)])
        nonces[index] += 1
        by_shard[intent.src_shard].append((intent.kind, signed[0]))
    ok: Counter[str] = Counter()
    for shard, items in by_shard.items():
        # Blocks of 20 at heights 1, 3, 5...: farms accrue between them.
        for start in range(0, len(items), 20):
            chunk = items[start:start + 20]
            _, result, rejected = build_block(
                states[shard], [decode_tx(raw) for _, raw in chunk], [],
                height=1 + start // 10, view=0, prev_hash=GENESIS_PREV_HASH,
                time_ms=1 + start, proposer=0)
            assert not rejected
            ok.update(kind for (kind, _), outcome in zip(chunk, result.outcomes, strict=True)
                      if outcome.ok)
            states[shard].apply_prepared(result.prepared)
    assert set(ok) == {"add_liquidity", "remove_liquidity", "stake", "unstake", "harvest"}
    assert compute_audit(states, [], total_supply(GENESIS)).ok
