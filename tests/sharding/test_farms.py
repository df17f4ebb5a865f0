"""Farms: staking LP shares for per-block rewards (sharding/farms.py, issue 18).

Unit tests are named for what they reject; the properties run random mixes of
liquidity and farm calls over random heights and check the conservation of LP
shares and of the reward asset, that rewards never exceed the budget, and that
a staker's pending reward never decreases while it stays staked.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.kernel.codec import U64_MAX
from consensus.kernel.crypto import KeyPair
from sharding.audit import compute_audit, get_shard_totals
from sharding.executor import commit_block_result, process_tx
from sharding.farms import (
    ACC_SCALE,
    Farm,
    FarmStake,
    compute_accrual,
    compute_pending_reward,
    farm_key,
    get_farm,
    get_stake,
    make_farm,
    stake_key,
)
from sharding.genesis import (
    GenesisError,
    genesis_state,
    load_genesis,
    make_genesis_dict,
    total_supply,
)
from sharding.ledger import Ledger
from sharding.programs import CallContext, declared_access, process_call
from sharding.receipts import Receipt
from sharding.records import (
    CallFailed,
    account_key,
    compute_with_balance,
    get_account,
    get_balance,
    get_lp_shares,
    get_pool,
    get_shard_params,
    lp_key,
    put_account,
)
from sharding.state import Overlay, StateReader, StateView
from sharding.tx import (
    AddLiquidity,
    Call,
    Harvest,
    InvalidTx,
    RemoveLiquidity,
    SignedTx,
    Stake,
    Swap,
    Transfer,
    Unstake,
    check_tx_stateless,
)
from tests.support.ledger import (
    FARM_BUDGET,
    FARM_REWARD_PER_BLOCK,
    get_farm_genesis,
    get_keys,
    get_pool_on,
    make_tx,
    propose,
)

GENESIS = get_farm_genesis()
KEYS = get_keys(0)
POOL = get_pool_on(0)
REMOTE_POOL = get_pool_on(1)
REWARD = GENESIS.farms[0].reward_asset
LOCKED = get_pool(genesis_state(GENESIS, 0), POOL.address).shares  # type: ignore[union-attr]


def fresh() -> Overlay:
    return Overlay(genesis_state(GENESIS, 0))


def run(view: StateView, key: KeyPair, call: Call, height: int) -> None:
    """Run ``call`` as the spec does: in a nested overlay kept only on success."""
    params = get_shard_params(view, height)
    attempt = Overlay(view)
    process_call(attempt, CallContext(params, bytes(32), key.public_key), call)
    attempt.commit()


def reason_of(view: StateView, key: KeyPair, call: Call, height: int) -> str:
    with pytest.raises(CallFailed) as info:
        run(view, key, call, height)
    return info.value.reason


def farm(view: StateReader) -> Farm:
    record = get_farm(view, POOL.address)
    assert record is not None
    return record


def provide(view: StateView, key: KeyPair, amount: int = 100_000, height: int = 1) -> int:
    run(view, key, AddLiquidity(POOL.address, amount, amount, 0), height)
    return get_lp_shares(view, POOL.address, key.public_key)


# ---------------------------------------------------------------------------
# Genesis


def test_genesis_creates_a_funded_farm_on_the_pools_shard_only() -> None:
    assert farm(fresh()) == make_farm(REWARD, FARM_REWARD_PER_BLOCK, FARM_BUDGET)
    assert get_farm(genesis_state(GENESIS, 1), POOL.address) is None
    totals = get_shard_totals(genesis_state(GENESIS, 0))
    plain = get_shard_totals(genesis_state(load_genesis(
        {**make_genesis_dict(num_shards=2, validators_per_shard=1, seed="load", accounts=24,
                             balance=1_000_000, pool_reserve=10_000_000)}), 0))
    # The budget is part of the reward asset's supply, held by the farm (a reserve).
    assert totals.reserves[REWARD] == plain.reserves[REWARD] + FARM_BUDGET


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda f: f.update(pool="NOPE"), "farms[0].pool"),
        (lambda f: f.update(reward_asset="NOPE"), "farms[0].reward_asset"),
        (lambda f: f.update(budget=0), "farms[0].budget"),
        (lambda f: f.update(reward_per_block=0), "farms[0].reward_per_block"),
        (lambda f: f.update(budget=U64_MAX), "assets.COIN"),
    ],
)
def test_genesis_rejects_bad_farms(mutate: object, field: str) -> None:
    spec = make_genesis_dict(num_shards=2, validators_per_shard=1, farm_budget=10)
    mutate(spec["farms"][0])  # type: ignore[operator]
    with pytest.raises(GenesisError) as info:
        load_genesis(spec)
    assert info.value.field == field


def test_genesis_rejects_two_farms_on_one_pool() -> None:
    spec = make_genesis_dict(num_shards=2, validators_per_shard=1, farm_budget=10)
    spec["farms"].append(dict(spec["farms"][0]))
    with pytest.raises(GenesisError) as info:
        load_genesis(spec)
    assert info.value.field == "farms[2].pool"


# ---------------------------------------------------------------------------
# Calls: what they reject


def test_stake_more_than_owned_is_rejected() -> None:
    view = fresh()
    owned = provide(view, KEYS[0])
    assert reason_of(view, KEYS[0], Stake(POOL.address, owned + 1), 2) == "insufficient_shares"
    assert reason_of(view, KEYS[1], Stake(POOL.address, 1), 2) == "insufficient_shares"


def test_stake_on_a_pool_without_a_farm_is_rejected() -> None:
    assert reason_of(fresh(), KEYS[0], Stake(KEYS[1].public_key, 1), 1) == "no_farm"


def test_harvest_with_nothing_staked_is_rejected() -> None:
    view = fresh()
    provide(view, KEYS[0])
    assert reason_of(view, KEYS[0], Harvest(POOL.address), 5) == "nothing_staked"


def test_unstake_more_than_staked_is_rejected() -> None:
    view = fresh()
    owned = provide(view, KEYS[0])
    assert reason_of(view, KEYS[0], Unstake(POOL.address, 1), 2) == "insufficient_stake"
    run(view, KEYS[0], Stake(POOL.address, owned), 2)
    assert reason_of(view, KEYS[0], Unstake(POOL.address, owned + 1), 3) == "insufficient_stake"


def test_second_harvest_in_a_block_has_nothing_pending() -> None:
    view = fresh()
    run(view, KEYS[0], Stake(POOL.address, provide(view, KEYS[0])), 1)
    run(view, KEYS[0], Harvest(POOL.address), 3)
    assert reason_of(view, KEYS[0], Harvest(POOL.address), 3) == "nothing_pending"


def test_dust_harvest_is_rejected_and_the_dust_is_carried() -> None:
    view = fresh()
    run(view, KEYS[0], Stake(POOL.address, provide(view, KEYS[0], 500_000)), 1)
    run(view, KEYS[1], Stake(POOL.address, provide(view, KEYS[1], 1_000)), 1)
    # 100 per block over ~501k shares: 1000 shares earn 1/5 of a unit per block.
    assert reason_of(view, KEYS[1], Harvest(POOL.address), 2) == "dust"
    stake = get_stake(view, POOL.address, KEYS[1].public_key)
    assert stake is not None
    assert compute_pending_reward(farm(view), stake, 2) == 0
    assert compute_pending_reward(farm(view), stake, 10) >= 1  # the dust adds up
    run(view, KEYS[1], Harvest(POOL.address), 10)


def test_budget_exhausted_harvest_gets_what_accrued_then_nothing() -> None:
    view = fresh()
    run(view, KEYS[0], Stake(POOL.address, provide(view, KEYS[0])), 1)
    before = get_balance(view, KEYS[0].public_key, REWARD)
    run(view, KEYS[0], Harvest(POOL.address), 10_000)  # far past the budget's 100 blocks
    paid = get_balance(view, KEYS[0].public_key, REWARD) - before
    assert FARM_BUDGET - 1 <= paid <= FARM_BUDGET  # all of it, up to rounding
    assert farm(view).budget == 0
    assert reason_of(view, KEYS[0], Harvest(POOL.address), 20_000) == "budget_exhausted"


def test_harvest_overflowing_the_balance_is_rejected() -> None:
    view = fresh()
    key = KEYS[0]
    run(view, key, Stake(POOL.address, provide(view, key)), 1)
    account = get_account(view, key.public_key)
    put_account(view, key.public_key, compute_with_balance(account, REWARD, U64_MAX - 10))
    assert reason_of(view, key, Harvest(POOL.address), 3) == "overflow"
    assert reason_of(view, key, Unstake(POOL.address, 1), 3) == "overflow"


def test_farm_calls_must_be_sent_from_the_pools_shard() -> None:
    for call in (Stake(REMOTE_POOL.address, 1), Harvest(REMOTE_POOL.address),
                 Unstake(REMOTE_POOL.address, 1)):
        with pytest.raises(InvalidTx) as info:
            check_tx_stateless(make_tx(KEYS[0], 0, call), GENESIS.chain_id, 0, 2)
        assert info.value.reason == "pool_not_local"


def test_stake_and_unstake_of_zero_shares_are_invalid() -> None:
    for call in (Stake(POOL.address, 0), Unstake(POOL.address, 0)):
        with pytest.raises(InvalidTx) as info:
            check_tx_stateless(make_tx(KEYS[0], 0, call), GENESIS.chain_id, 0, 2)
        assert info.value.reason == "zero_amount"


# ---------------------------------------------------------------------------
# Calls: what they do


def test_equal_stakes_earn_equal_rewards_and_unstake_returns_the_shares() -> None:
    view = fresh()
    a, b = KEYS[0], KEYS[1]
    shares = provide(view, a)
    assert provide(view, b) == shares
    run(view, a, Stake(POOL.address, shares), 1)
    run(view, b, Stake(POOL.address, shares), 1)
    start = [get_balance(view, k.public_key, REWARD) for k in (a, b)]
    run(view, a, Unstake(POOL.address, shares), 11)
    run(view, b, Harvest(POOL.address), 11)
    gained = [get_balance(view, k.public_key, REWARD) - s for k, s in zip((a, b), start,
                                                                            strict=True)]
    # Ten blocks of 100 shared by two equal stakes, rounded down.
    assert gained[0] == gained[1] and 499 <= gained[0] <= 500
    assert get_lp_shares(view, POOL.address, a.public_key) == shares
    assert get_stake(view, POOL.address, a.public_key) is None
    assert farm(view).staked == shares


def test_rewards_wait_in_the_budget_while_nothing_is_staked() -> None:
    view = fresh()
    shares = provide(view, KEYS[0])
    run(view, KEYS[0], Stake(POOL.address, shares), 50)
    assert farm(view).budget == FARM_BUDGET  # blocks 0-50 had no staker: nothing allocated
    run(view, KEYS[0], Harvest(POOL.address), 52)
    assert farm(view).budget == FARM_BUDGET - 2 * FARM_REWARD_PER_BLOCK


def test_accrual_never_allocates_more_than_the_block_reward() -> None:
    farm_ = Farm(0, 7, 1_000, 1_000, 3, (0).to_bytes(16, "big"), 0)
    after = compute_accrual(farm_, 1)
    allocated = farm_.budget - after.budget
    assert allocated <= 7
    # What the three shares may claim is covered by what was allocated.
    claim = 3 * int.from_bytes(after.acc_reward_per_share, "big") // ACC_SCALE
    assert claim <= allocated


def test_farm_calls_declare_their_keys_from_their_arguments() -> None:
    sender = KEYS[0].public_key
    pool = POOL.address
    base = {account_key(sender), farm_key(pool), stake_key(pool, sender)}
    for call, keys in ((Stake(pool, 1), base | {lp_key(pool, sender)}),
                       (Unstake(pool, 1), base | {lp_key(pool, sender)}),
                       (Harvest(pool), base)):
        access = declared_access(make_tx(KEYS[0], 0, call), 2)
        assert access is not None  # partitionable: no optimistic mode needed
        reads, writes = access
        assert reads == writes == frozenset(keys)


# ---------------------------------------------------------------------------
# Properties over random mixes


OPS = ("add", "remove", "stake", "unstake", "harvest")


@st.composite
def mixes(draw: st.DrawFn) -> list[tuple[str, int, int, int]]:
    """(operation, staker, amount, blocks to wait before it)."""
    return draw(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 3),
                                   st.integers(1, 60_000), st.integers(0, 12)),
                         max_size=30))


def make_call(op: str, amount: int) -> Call:
    if op == "add":
        return AddLiquidity(POOL.address, amount, amount, 0)
    if op == "remove":
        return RemoveLiquidity(POOL.address, amount, 0, 0)
    if op == "stake":
        return Stake(POOL.address, amount)
    if op == "unstake":
        return Unstake(POOL.address, amount)
    return Harvest(POOL.address)


def stakes(view: StateReader) -> dict[bytes, FarmStake]:
    found = {}
    for key in KEYS[:4]:
        stake = get_stake(view, POOL.address, key.public_key)
        if stake is not None:
            found[key.public_key] = stake
    return found


@settings(max_examples=80, deadline=None)
@given(mix=mixes())
def test_random_mixes_conserve_shares_and_rewards(mix: list[tuple[str, int, int, int]]) -> None:
    state = genesis_state(GENESIS, 0)
    supply = get_shard_totals(state)
    nonces = [0] * 4
    height = 1
    for op, staker, amount, wait in mix:
        height += wait
        before = farm(state)
        pending_before = {owner: compute_pending_reward(before, stake, height)
                          for owner, stake in stakes(state).items()}
        key = KEYS[staker]
        view = Overlay(state)
        tx = make_tx(key, nonces[staker], make_call(op, amount))
        process_tx(view, get_shard_params(state, height), tx, verify_signature=False)
        state.apply_writes(view.writes)
        nonces[staker] += 1
        after = farm(state)
        current = stakes(state)
        # LP shares: the pool's total is the locked genesis shares, the holders' and
        # the farm's; the farm's is its stakers'.
        pool = get_pool(state, POOL.address)
        assert pool is not None
        held = sum(get_lp_shares(state, POOL.address, k.public_key) for k in KEYS[:4])
        assert after.staked == sum(s.shares for s in current.values())
        assert pool.shares == LOCKED + held + after.staked
        # Every asset (the reward asset too): balances + reserves (the pool's and the
        # farm's holdings) are what the genesis put on this shard.
        totals = get_shard_totals(state)
        for asset in (0, 1, 2):
            assert (totals.balances.get(asset, 0) + totals.reserves.get(asset, 0)
                    == supply.balances.get(asset, 0) + supply.reserves.get(asset, 0))
        # Rewards paid never exceed the budget allocated, which never exceeds the budget,
        # and what the farm still holds covers every staker's pending reward.
        accrued = compute_accrual(after, height)
        assert 0 <= accrued.budget <= accrued.rewards <= FARM_BUDGET
        assert accrued.rewards - accrued.budget >= sum(
            compute_pending_reward(after, s, height) for s in current.values())
        # Pending rewards never decrease while staked (the caller's own were just paid).
        for owner, stake in current.items():
            if owner != key.public_key and owner in pending_before:
                assert compute_pending_reward(after, stake, height) >= pending_before[owner]


# ---------------------------------------------------------------------------
# Ledger: the audit's running totals follow farm writes


def test_ledger_running_totals_count_farm_holdings() -> None:
    ledger = Ledger(GENESIS, 0)
    key = KEYS[0]
    txs = [make_tx(key, 0, AddLiquidity(POOL.address, 100_000, 100_000, 0)),
           make_tx(key, 1, Stake(POOL.address, 50_000))]
    for height, batch in ((1, txs), (5, [make_tx(key, 2, Harvest(POOL.address))])):
        while ledger.height < height - 1:
            empty = ledger.propose([], [], height=ledger.height + 1, view=0,
                                   time_ms=1000 * (ledger.height + 1), proposer=0, txs_max=10)
            ledger.commit(empty.payload, empty.block_hash, ledger.height + 1)
        proposal = ledger.propose(batch, [], height=height, view=0, time_ms=1000 * height,
                                  proposer=0, txs_max=10)
        assert all(outcome.ok for outcome in proposal.result.outcomes)
        ledger.commit(proposal.payload, proposal.block_hash, height)
    # Four blocks of 100 for the one staker, rounded down.
    assert FARM_BUDGET - farm(ledger.state).rewards in (399, 400)
    # The wallet's view (GET /v1/accounts/{address}): LP shares, stake, pending reward.
    assert ledger.account(key.public_key)["liquidity"] == {POOL.name: {
        "lp_shares": 50_000, "staked": 50_000, "pending_reward": 0, "reward_asset": "COIN"}}
    assert "liquidity" not in ledger.account(KEYS[1].public_key)
    recount = get_shard_totals(ledger.state)
    assert ledger.reserves == dict(recount.reserves)
    assert ledger.balances == dict(recount.balances)


# ---------------------------------------------------------------------------
# Two shards: the audit (balances + reserves + farm holdings + in flight = supply)


@st.composite
def two_shard_mixes(draw: st.DrawFn) -> list[list[tuple[int, str, int, int]]]:
    """Per block: (shard, kind, sender, amount) rows; kinds mix cross-shard transfers
    and swaps with liquidity and farm calls."""
    kinds = st.sampled_from(("transfer", "swap", "add", "remove", "stake", "unstake",
                             "harvest", "harvest"))
    row = st.tuples(st.integers(0, 1), kinds, st.integers(0, 2), st.integers(1, 40_000))
    return draw(st.lists(st.lists(row, max_size=8), min_size=1, max_size=6))


@settings(max_examples=40, deadline=None)
@given(blocks=two_shard_mixes())
def test_two_shard_audit_holds_with_farms(blocks: list[list[tuple[int, str, int, int]]]) -> None:
    states = {shard: genesis_state(GENESIS, shard) for shard in (0, 1)}
    supply = total_supply(GENESIS)
    keys = {shard: get_keys(shard)[:3] for shard in (0, 1)}
    pools = {shard: get_pool_on(shard).address for shard in (0, 1)}
    nonces: dict[bytes, int] = {}
    emitted: list[Receipt] = []
    pending: dict[int, list[Receipt]] = {0: [], 1: []}
    for number, rows in enumerate([*blocks, [], []]):
        height = 1 + 3 * number
        txs: dict[int, list[SignedTx]] = {0: [], 1: []}
        for shard, kind, sender, amount in rows:
            key = keys[shard][sender]
            call: Call
            if kind == "transfer":
                call = Transfer(keys[1 - shard][sender].public_key, 0, amount)
            elif kind == "swap":
                call = Swap(pools[1 - shard], 0, amount, 0)
            else:
                call = make_shard_call(kind, pools[shard], amount)
            txs[shard].append(make_tx(key, nonces.get(key.public_key, 0), call))
            nonces[key.public_key] = nonces.get(key.public_key, 0) + 1
        for shard in (0, 1):
            block, result, rejected = propose(states[shard], txs[shard], pending[shard], height)
            assert not rejected
            commit_block_result(states[shard], result)
            emitted.extend(result.receipts)
            applied = {(r.src_shard, r.seq) for r in block.inbound}
            pending[shard] = [r for r in pending[shard] if (r.src_shard, r.seq) not in applied]
            for receipt in result.receipts:
                pending[receipt.dst_shard].append(receipt)
            audit = compute_audit(states, emitted, supply)
            assert audit.ok, audit
    assert compute_audit(states, emitted, supply).in_flight_receipts == 0


def make_shard_call(kind: str, pool: bytes, amount: int) -> Call:
    if kind == "add":
        return AddLiquidity(pool, amount, amount, 0)
    if kind == "remove":
        return RemoveLiquidity(pool, amount, 0, 0)
    if kind == "stake":
        return Stake(pool, amount)
    if kind == "unstake":
        return Unstake(pool, amount)
    return Harvest(pool)
