"""Native programs: multi-asset transfer and constant-product pools (PROTOCOL.md section 2).

Integer math only. Swaps follow Uniswap v2 with a 0.3% fee:
``out = in * 997 * R_out // (R_in * 1000 + in * 997)``. Pools are created at
genesis; the shares minted there (``isqrt(R_a * R_b)``) belong to nobody and stay
locked forever, which plays the part of Uniswap's MINIMUM_LIQUIDITY (a pool can
never be drained to zero, and the first-depositor share-inflation attack does
not apply). A pool created empty takes ``isqrt(a * b)`` for its first deposit.
Amounts are u64: a result above ``2**64 - 1`` fails the call with ``overflow``.

Every call declares the state keys it may read and write from its arguments
alone (``declared_access``); the parallel executor partitions a block on it.
Liquidity calls are local to the pool's shard (``check_tx_stateless`` rejects
others): LP shares live next to their pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import msgspec

from consensus.kernel.codec import U64_MAX
from sharding.accounts import shard_of
from sharding.farms import farm_key, process_harvest, process_stake, process_unstake, stake_key
from sharding.lending import (
    process_borrow,
    process_lending_request,
    process_liquidate,
    process_receipt_lending,
)
from sharding.oracle import process_oracle_touch
from sharding.receipts import (
    CREDIT,
    CREDIT_KINDS,
    REPAY,
    SUPPLY,
    SWAP,
    SWAP_OUTPUT,
    WITHDRAW,
    Receipt,
    ReceiptOverflow,
    get_refund,
)
from sharding.records import (
    CallFailed,
    Pool,
    ShardParams,
    account_key,
    get_lp_shares,
    get_pool,
    lp_key,
    market_config_key,
    market_key,
    oracle_key,
    pool_key,
    position_key,
    process_credit,
    process_debit,
    put_lp_shares,
    put_pool,
)
from sharding.state import Overlay, StateView
from sharding.tx import (
    LENDING_CALLS,
    AddLiquidity,
    Borrow,
    Call,
    Harvest,
    Liquidate,
    RemoveLiquidity,
    Repay,
    SignedTx,
    Stake,
    Supply,
    Swap,
    Transfer,
    Unstake,
    Withdraw,
)

FEE_NUMERATOR = 997
FEE_DENOMINATOR = 1000


@dataclass(slots=True)
class CallContext:
    """What a call may know besides its arguments; ``outbox`` collects unstamped receipts."""

    params: ShardParams
    origin: bytes
    sender: bytes
    outbox: list[Receipt] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Pool math (pure)


def compute_swap_output(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    amount_in_with_fee = amount_in * FEE_NUMERATOR
    denominator = reserve_in * FEE_DENOMINATOR + amount_in_with_fee
    if denominator == 0:
        return 0
    return amount_in_with_fee * reserve_out // denominator


def compute_swap(pool: Pool, asset_in: int, amount_in: int, min_out: int) -> tuple[Pool, int, int]:
    """Return (pool after, asset out, amount out) or raise ``CallFailed``."""
    # Verify the pool trades the input asset.
    if asset_in not in (pool.asset_a, pool.asset_b):
        raise CallFailed(f"pool does not trade asset {asset_in}", reason="bad_asset")
    # Verify something goes in.
    if amount_in == 0:
        raise CallFailed("zero input", reason="zero_amount")
    a_to_b = asset_in == pool.asset_a
    reserve_in, reserve_out = (
        (pool.reserve_a, pool.reserve_b) if a_to_b else (pool.reserve_b, pool.reserve_a)
    )
    amount_out = compute_swap_output(amount_in, reserve_in, reserve_out)
    # Verify something comes out.
    if amount_out == 0:
        raise CallFailed("output rounds to zero", reason="zero_output")
    # Verify the output meets the caller's minimum.
    if amount_out < min_out:
        raise CallFailed(f"output {amount_out} < min_out {min_out}", reason="slippage")
    # Verify the reserve stays a u64.
    if reserve_in + amount_in > U64_MAX:
        raise CallFailed("reserve would exceed u64", reason="overflow")
    new_in, new_out = reserve_in + amount_in, reserve_out - amount_out
    if a_to_b:
        after = Pool(pool.asset_a, pool.asset_b, new_in, new_out, pool.shares)
        return after, pool.asset_b, amount_out
    after = Pool(pool.asset_a, pool.asset_b, new_out, new_in, pool.shares)
    return after, pool.asset_a, amount_out


def compute_ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def compute_add_liquidity(pool: Pool, amount_a: int, amount_b: int) -> tuple[int, int, int]:
    """Return (shares minted, amount a taken, amount b taken) for a deposit of at most
    (amount_a, amount_b); the pool keeps its price, the caller keeps the excess."""
    if pool.shares == 0:
        return math.isqrt(amount_a * amount_b), amount_a, amount_b
    if pool.reserve_a == 0 or pool.reserve_b == 0:
        return 0, 0, 0
    shares = min(amount_a * pool.shares // pool.reserve_a, amount_b * pool.shares // pool.reserve_b)
    taken_a = compute_ceil_div(shares * pool.reserve_a, pool.shares)
    taken_b = compute_ceil_div(shares * pool.reserve_b, pool.shares)
    return shares, taken_a, taken_b


def compute_remove_liquidity(pool: Pool, shares: int) -> tuple[int, int]:
    if pool.shares == 0:
        return 0, 0
    return shares * pool.reserve_a // pool.shares, shares * pool.reserve_b // pool.shares


# ---------------------------------------------------------------------------
# Calls (state transitions)


def get_existing_pool(view: StateView, pool: bytes) -> Pool:
    record = get_pool(view, pool)
    # Verify the pool exists.
    if record is None:
        raise CallFailed(f"no pool {pool.hex()[:16]}", reason="no_pool")
    return record


def process_pool_swap(
    view: StateView, pool: bytes, asset_in: int, amount_in: int, min_out: int, height: int
) -> tuple[int, int]:
    """Run a swap against a local pool in block ``height``; return (asset out, amount out)."""
    before = get_existing_pool(view, pool)
    after, asset_out, amount_out = compute_swap(before, asset_in, amount_in, min_out)
    process_oracle_touch(view, pool, before, height)
    put_pool(view, pool, after)
    return asset_out, amount_out


def process_transfer(view: StateView, ctx: CallContext, call: Transfer) -> None:
    process_debit(view, ctx.sender, call.asset, call.amount)
    dst = shard_of(call.to, ctx.params.num_shards)
    if dst == ctx.params.shard:
        process_credit(view, call.to, call.asset, call.amount)
        return
    ctx.outbox.append(
        Receipt(
            src_shard=ctx.params.shard,
            dst_shard=dst,
            seq=0,
            kind=CREDIT,
            origin=ctx.origin,
            sender=ctx.sender,
            recipient=call.to,
            asset=call.asset,
            amount=call.amount,
        )
    )


def process_swap(view: StateView, ctx: CallContext, call: Swap) -> None:
    process_debit(view, ctx.sender, call.asset_in, call.amount_in)
    dst = shard_of(call.pool, ctx.params.num_shards)
    if dst == ctx.params.shard:
        asset_out, amount_out = process_pool_swap(
            view, call.pool, call.asset_in, call.amount_in, call.min_out, ctx.params.height
        )
        process_credit(view, ctx.sender, asset_out, amount_out)
        return
    ctx.outbox.append(
        Receipt(
            src_shard=ctx.params.shard,
            dst_shard=dst,
            seq=0,
            kind=SWAP,
            origin=ctx.origin,
            sender=ctx.sender,
            recipient=ctx.sender,
            asset=call.asset_in,
            amount=call.amount_in,
            pool=call.pool,
            min_out=call.min_out,
        )
    )


def process_add_liquidity(view: StateView, ctx: CallContext, call: AddLiquidity) -> None:
    pool = get_existing_pool(view, call.pool)
    shares, taken_a, taken_b = compute_add_liquidity(pool, call.amount_a, call.amount_b)
    # Verify the deposit mints at least the caller's minimum (and at least one share).
    if shares == 0 or shares < call.min_shares:
        raise CallFailed(f"mints {shares} shares < {call.min_shares}", reason="slippage")
    owned = get_lp_shares(view, call.pool, ctx.sender)
    # Verify reserves and shares stay u64.
    if max(pool.reserve_a + taken_a, pool.reserve_b + taken_b, pool.shares + shares) > U64_MAX:
        raise CallFailed("pool would exceed u64", reason="overflow")
    process_debit(view, ctx.sender, pool.asset_a, taken_a)
    process_debit(view, ctx.sender, pool.asset_b, taken_b)
    process_oracle_touch(view, call.pool, pool, ctx.params.height)
    put_pool(
        view,
        call.pool,
        Pool(
            pool.asset_a,
            pool.asset_b,
            pool.reserve_a + taken_a,
            pool.reserve_b + taken_b,
            pool.shares + shares,
        ),
    )
    put_lp_shares(view, call.pool, ctx.sender, owned + shares)


def process_remove_liquidity(view: StateView, ctx: CallContext, call: RemoveLiquidity) -> None:
    pool = get_existing_pool(view, call.pool)
    owned = get_lp_shares(view, call.pool, ctx.sender)
    # Verify the caller owns the shares.
    if owned < call.shares:
        raise CallFailed(f"owns {owned} shares < {call.shares}", reason="insufficient_shares")
    out_a, out_b = compute_remove_liquidity(pool, call.shares)
    # Verify the withdrawal meets the caller's minimums.
    if out_a < call.min_a or out_b < call.min_b:
        raise CallFailed(f"withdraws ({out_a}, {out_b})", reason="slippage")
    process_oracle_touch(view, call.pool, pool, ctx.params.height)
    put_pool(
        view,
        call.pool,
        Pool(
            pool.asset_a,
            pool.asset_b,
            pool.reserve_a - out_a,
            pool.reserve_b - out_b,
            pool.shares - call.shares,
        ),
    )
    put_lp_shares(view, call.pool, ctx.sender, owned - call.shares)
    process_credit(view, ctx.sender, pool.asset_a, out_a)
    process_credit(view, ctx.sender, pool.asset_b, out_b)


def process_lending_call(
    view: StateView, ctx: CallContext, call: Supply | Withdraw | Borrow | Repay | Liquidate
) -> None:
    """The lending program (sharding/lending.py)."""
    params, sender = ctx.params, ctx.sender
    if isinstance(call, (Supply, Repay, Withdraw)):
        kind = (SUPPLY if isinstance(call, Supply) else REPAY if isinstance(call, Repay)
                else WITHDRAW)
        process_lending_request(view, params, ctx.origin, sender, kind, call.market,
                                call.asset, call.amount, ctx.outbox)
    elif isinstance(call, Borrow):
        process_borrow(view, params, sender, call.market, call.asset, call.amount)
    else:
        process_liquidate(view, params, sender, call.market, call.borrower, call.debt_asset,
                          call.amount, call.collateral_asset)


def process_call(view: StateView, ctx: CallContext, call: Call) -> None:
    """Run ``call``; raise ``CallFailed`` (the caller discards ``view``) when it fails."""
    if isinstance(call, Transfer):
        process_transfer(view, ctx, call)
    elif isinstance(call, LENDING_CALLS):
        process_lending_call(view, ctx, call)
    elif isinstance(call, Swap):
        process_swap(view, ctx, call)
    elif isinstance(call, AddLiquidity):
        process_add_liquidity(view, ctx, call)
    elif isinstance(call, Stake):
        process_stake(view, call.pool, ctx.sender, call.shares, ctx.params.height)
    elif isinstance(call, Harvest):
        process_harvest(view, call.pool, ctx.sender, ctx.params.height)
    elif isinstance(call, Unstake):
        process_unstake(view, call.pool, ctx.sender, call.shares, ctx.params.height)
    else:
        process_remove_liquidity(view, ctx, call)


# ---------------------------------------------------------------------------
# Inbound receipts (the destination side of a cross-shard call)


def process_receipt_credit(view: StateView, params: ShardParams, receipt: Receipt) -> None:
    """CREDIT, SWAP_OUTPUT, REFUND: credit the recipient. Genesis bounds every asset's
    supply by u64, so an honest receipt never overflows a balance: one that does was
    fabricated, and the block carrying it is invalid (``ReceiptOverflow``)."""
    try:
        process_credit(view, receipt.recipient, receipt.asset, receipt.amount)
    except CallFailed as exc:
        raise ReceiptOverflow(
            f"{receipt.src_shard}->{receipt.dst_shard} seq {receipt.seq}: {exc.reason}"
        ) from None


def process_receipt_swap(
    view: StateView, params: ShardParams, receipt: Receipt, outbox: list[Receipt]
) -> str:
    """SWAP: run the swap and send the output home, or refund the input. Returns the
    swap's error ("" when it succeeded); either way exactly one credit follows."""
    attempt = Overlay(view)
    try:
        asset_out, amount_out = process_pool_swap(
            attempt, receipt.pool, receipt.asset, receipt.amount, receipt.min_out, params.height
        )
    except CallFailed as exc:
        credit = get_refund(receipt, params.shard, exc.reason)
        error = exc.reason
    else:
        attempt.commit()
        credit = Receipt(
            src_shard=params.shard,
            dst_shard=receipt.src_shard,
            seq=0,
            kind=SWAP_OUTPUT,
            origin=receipt.origin,
            sender=receipt.sender,
            recipient=receipt.recipient,
            asset=asset_out,
            amount=amount_out,
        )
        error = ""
    process_credit_home(view, params, credit, outbox)
    return error


def process_credit_home(
    view: StateView, params: ShardParams, credit: Receipt, outbox: list[Receipt]
) -> None:
    """Apply a credit here when its recipient lives here, else send it home."""
    home = shard_of(credit.recipient, params.num_shards)
    if home == params.shard:
        process_receipt_credit(view, params, credit)
    else:
        outbox.append(msgspec.structs.replace(credit, dst_shard=home))


def process_receipt(
    view: StateView, params: ShardParams, receipt: Receipt, outbox: list[Receipt]
) -> str:
    """Apply one inbound receipt's effect; return the swap error or ""."""
    if receipt.kind in CREDIT_KINDS:
        process_receipt_credit(view, params, receipt)
        return ""
    if receipt.kind in (SUPPLY, REPAY, WITHDRAW):
        return process_receipt_lending(
            view, params, receipt, outbox,
            lambda target, credit: process_credit_home(target, params, credit, outbox),
        )
    return process_receipt_swap(view, params, receipt, outbox)


# ---------------------------------------------------------------------------
# Declared access


def declared_access(
    tx: SignedTx, num_shards: int
) -> tuple[frozenset[bytes], frozenset[bytes]] | None:
    """(reads, writes) of ``tx`` on its own shard, from its arguments alone; None
    when they are known only while running (withdraw, borrow and liquidate read the
    prices and every market of a position: the optimistic mode runs them).

    Shard parameters (``m`` keys) are read by everything and written by nothing
    after genesis; they are left out. Channel counters are written at the end of
    the block (``process_stamp_receipts``), not by calls. A pool's price oracle
    (``T``) is written with the pool.
    """
    sender = tx.body.sender
    call = tx.body.call
    home = shard_of(sender, num_shards)
    keys = {account_key(sender)}
    if isinstance(call, Transfer):
        if shard_of(call.to, num_shards) == home:
            keys.add(account_key(call.to))
    elif isinstance(call, Swap):
        if shard_of(call.pool, num_shards) == home:
            keys.update((pool_key(call.pool), oracle_key(call.pool)))
    elif isinstance(call, Withdraw) and shard_of(call.market, num_shards) != home:
        pass  # a WITHDRAW receipt: the sender's account only (its nonce)
    elif isinstance(call, (Withdraw, Borrow, Liquidate)):
        return None
    elif isinstance(call, (Supply, Repay)):
        if shard_of(call.market, num_shards) == home:
            keys.update((market_config_key(), market_key(call.asset), position_key(sender)))
    elif isinstance(call, (Stake, Unstake)):
        keys.update((farm_key(call.pool), stake_key(call.pool, sender), lp_key(call.pool, sender)))
    elif isinstance(call, Harvest):
        keys.update((farm_key(call.pool), stake_key(call.pool, sender)))
    else:
        keys.update((pool_key(call.pool), lp_key(call.pool, sender), oracle_key(call.pool)))
    frozen = frozenset(keys)
    return frozen, frozen
