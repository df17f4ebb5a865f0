"""Native programs: transfers and constant-product pools (PROTOCOL.md section 2)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.kernel.codec import U64_MAX
from sharding.accounts import shard_of
from sharding.executor import process_tx
from sharding.genesis import genesis_state
from sharding.programs import (
    compute_add_liquidity,
    compute_remove_liquidity,
    compute_swap,
    compute_swap_output,
    declared_access,
)
from sharding.records import (
    CallFailed,
    Pool,
    get_balance,
    get_lp_shares,
    get_pool,
    get_shard_params,
)
from sharding.state import Overlay
from sharding.tx import (
    AddLiquidity,
    Call,
    InvalidTx,
    RemoveLiquidity,
    SignedTx,
    Swap,
    Transfer,
)
from tests.support.ledger import BALANCE, RESERVE, get_genesis, get_keys, get_pool_on, make_tx

POOL = Pool(asset_a=0, asset_b=1, reserve_a=1_000_000, reserve_b=2_000_000, shares=1_414_213)


def test_swap_output_is_the_uniswap_v2_formula() -> None:
    amount_in, r_in, r_out = 10_000, 1_000_000, 2_000_000
    expected = amount_in * 997 * r_out // (r_in * 1000 + amount_in * 997)
    assert compute_swap_output(amount_in, r_in, r_out) == expected == 19_743


@given(st.integers(1, 2**40), st.integers(1, 2**50), st.integers(1, 2**50))
def test_swap_never_lowers_the_constant_product(amount_in: int, r_in: int, r_out: int) -> None:
    out = compute_swap_output(amount_in, r_in, r_out)
    assert 0 <= out < r_out
    assert (r_in + amount_in) * (r_out - out) >= r_in * r_out


def test_swap_moves_reserves_both_ways() -> None:
    after, asset_out, out = compute_swap(POOL, 0, 10_000, 0)
    assert (asset_out, after.reserve_a, after.reserve_b) == (1, 1_010_000, 2_000_000 - out)
    after, asset_out, out = compute_swap(POOL, 1, 10_000, 0)
    assert (asset_out, after.reserve_a, after.reserve_b) == (0, 1_000_000 - out, 2_010_000)


@pytest.mark.parametrize(
    ("asset_in", "amount_in", "min_out", "reason"),
    [
        (2, 10, 0, "bad_asset"),
        (0, 0, 0, "zero_amount"),
        (1, 1, 0, "zero_output"),
        (0, 10_000, 19_744, "slippage"),
    ],
)
def test_swap_failures_name_their_reason(
    asset_in: int, amount_in: int, min_out: int, reason: str
) -> None:
    with pytest.raises(CallFailed) as info:
        compute_swap(POOL, asset_in, amount_in, min_out)
    assert info.value.reason == reason


def test_swap_fails_on_u64_overflow_of_the_reserve() -> None:
    pool = Pool(0, 1, U64_MAX - 10, 2**62, 1)
    with pytest.raises(CallFailed) as info:
        compute_swap(pool, 0, 1000, 0)
    assert info.value.reason == "overflow"


def test_add_liquidity_keeps_the_price_and_returns_the_excess() -> None:
    shares, taken_a, taken_b = compute_add_liquidity(POOL, 1000, 5000)
    assert shares == 1000 * POOL.shares // POOL.reserve_a
    assert taken_a <= 1000 and taken_b <= 5000
    assert taken_b == math.ceil(shares * POOL.reserve_b / POOL.shares)


def test_first_deposit_into_an_empty_pool_mints_isqrt() -> None:
    empty = Pool(0, 1, 0, 0, 0)
    assert compute_add_liquidity(empty, 400, 900) == (600, 400, 900)


@given(st.integers(1, 10**9), st.integers(1, 10**9), st.integers(1, 10**6))
def test_add_then_remove_never_returns_more_than_deposited(a: int, b: int, _: int) -> None:
    shares, taken_a, taken_b = compute_add_liquidity(POOL, a, b)
    after = Pool(0, 1, POOL.reserve_a + taken_a, POOL.reserve_b + taken_b, POOL.shares + shares)
    out_a, out_b = compute_remove_liquidity(after, shares)
    assert out_a <= taken_a and out_b <= taken_b


# -- calls through process_tx on a genesis state


def run(tx: SignedTx, shard: int = 0) -> tuple[Overlay, str]:
    state = genesis_state(get_genesis(), shard)
    view = Overlay(state)
    outcome, _ = process_tx(view, get_shard_params(state), tx)
    return view, outcome.error


def test_local_transfer_moves_balance_and_consumes_nonce() -> None:
    a, b = get_keys(0)[:2]
    view, error = run(make_tx(a, 0, Transfer(b.public_key, 1, 300)))
    assert error == ""
    assert get_balance(view, a.public_key, 1) == BALANCE - 300
    assert get_balance(view, b.public_key, 1) == BALANCE + 300


def test_transfer_of_more_than_the_balance_is_invalid_and_writes_nothing() -> None:
    """A sender that cannot pay is refused, not a failed call (issue 14 finding 1):
    its nonce is not consumed."""
    a, b = get_keys(0)[:2]
    state = genesis_state(get_genesis(), 0)
    view = Overlay(state)
    with pytest.raises(InvalidTx) as caught:
        process_tx(view, get_shard_params(state), make_tx(a, 0, Transfer(b.public_key, 1,
                                                                          BALANCE + 1)))
    assert caught.value.reason == "insufficient_balance"
    assert view.writes == {}


def test_local_swap_pays_out_the_other_asset() -> None:
    a = get_keys(0)[0]
    pool = get_pool_on(0)
    view, error = run(make_tx(a, 0, Swap(pool.address, 0, 1000, 1)))
    expected = compute_swap_output(1000, RESERVE, RESERVE)
    assert error == ""
    assert get_balance(view, a.public_key, 1) == BALANCE + expected
    record = get_pool(view, pool.address)
    assert record is not None and record.reserve_a == RESERVE + 1000


def test_swap_on_a_missing_pool_fails_with_no_pool() -> None:
    a = get_keys(0)[0]
    missing = next(
        bytes([i]) * 32 for i in range(256) if shard_of(bytes([i]) * 32, 2) == 0
    )
    _, error = run(make_tx(a, 0, Swap(missing, 0, 1000, 1)))
    assert error == "no_pool"


def test_add_and_remove_liquidity_round_trip() -> None:
    a = get_keys(0)[0]
    pool = get_pool_on(0)
    state = genesis_state(get_genesis(), 0)
    view = Overlay(state)
    params = get_shard_params(state)
    outcome, _ = process_tx(view, params, make_tx(a, 0, AddLiquidity(pool.address, 1000, 1000, 1)))
    assert outcome.ok
    shares = get_lp_shares(view, pool.address, a.public_key)
    assert shares == 1000
    outcome, _ = process_tx(
        view, params, make_tx(a, 1, RemoveLiquidity(pool.address, shares, 999, 999))
    )
    assert outcome.ok
    assert get_lp_shares(view, pool.address, a.public_key) == 0
    assert get_balance(view, a.public_key, 0) == BALANCE
    outcome, _ = process_tx(view, params, make_tx(a, 2, RemoveLiquidity(pool.address, 1, 0, 0)))
    assert outcome.error == "insufficient_shares"


def test_add_liquidity_below_min_shares_fails_with_slippage() -> None:
    a = get_keys(0)[0]
    pool = get_pool_on(0)
    _, error = run(make_tx(a, 0, AddLiquidity(pool.address, 1000, 1000, 1001)))
    assert error == "slippage"


# -- declared access covers what execution writes


calls = st.sampled_from(["local", "remote", "swap_local", "swap_remote", "add", "remove"])


@given(calls, st.integers(1, BALANCE * 2))
def test_writes_are_within_declared_access(kind: str, amount: int) -> None:
    a, b = get_keys(0)[:2]
    far = get_keys(1)[0]
    pool0, pool1 = get_pool_on(0).address, get_pool_on(1).address
    calls: dict[str, Call] = {
        "local": Transfer(b.public_key, 0, amount),
        "remote": Transfer(far.public_key, 0, amount),
        "swap_local": Swap(pool0, 0, amount, 0),
        "swap_remote": Swap(pool1, 1, amount, 0),
        "add": AddLiquidity(pool0, amount, amount, 0),
        "remove": RemoveLiquidity(pool0, amount % 1000 + 1, 0, 0),
    }
    state = genesis_state(get_genesis(), 0)
    params = get_shard_params(state)
    base = Overlay(state)
    # Own some LP shares first, so that removals can succeed.
    process_tx(base, params, make_tx(a, 0, AddLiquidity(pool0, 5000, 5000, 0)))
    tx = make_tx(a, 1, calls[kind])
    view = Overlay(base)
    try:
        process_tx(view, params, tx)
    except InvalidTx as exc:  # more than the sender holds: refused, nothing written
        assert exc.reason == "insufficient_balance" and view.writes == {}
    reads, writes = declared_access(tx, 2)
    assert set(view.writes) <= writes <= reads
