"""The state key layout and the records stored under it (docs/LEDGER.md).

Keys (one-byte prefix, then fixed-width fields):

| key                          | value                                  |
|------------------------------|----------------------------------------|
| ``a`` addr(32)               | ``Account(nonce, balances)``           |
| ``p`` pool(32)               | ``Pool(assets, reserves, shares)``     |
| ``l`` pool(32) owner(32)     | LP shares, u64 big-endian              |
| ``o`` dst shard (u32)        | ``out_seq[dst]``: last seq emitted     |
| ``i`` src shard (u32)        | ``in_cursor[src]``: last seq applied   |
| ``s`` dst (u32) asset (u32)  | amount sent to dst, cumulative (u128)  |
| ``r`` src (u32) asset (u32)  | amount received from src, cum. (u128)  |
| ``m`` name                   | shard parameters (chain id, shard, S)  |
| ``L``                        | ``LendingConfig`` (lending shard only) |
| ``L`` asset (u32)            | ``Market`` of one asset (lending)      |
| ``P`` addr(32)               | ``Position``: an account's lending     |
| ``T`` pool(32)               | ``PriceOracle``: the pool's TWAP state |
| ``F`` pool(32)               | ``Farm`` of the pool (sharding/farms)  |
| ``S`` pool(32) owner(32)     | ``FarmStake``: owner's stake in a farm |

An account's nonce and all its balances share one key, so a call's reads and
writes are known from its arguments alone (a swap credits an asset that only
the pool record names). Empty records are deleted, never stored as zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.kernel.codec import U64_MAX, WireStruct, decode, encode
from consensus.kernel.errors import InvariantViolation, ShardnetError, check
from consensus.kernel.limits import RECORD_BYTES_MAX
from sharding.state import StateReader, StateView

KEY_ACCOUNT = b"a"
KEY_POOL = b"p"
KEY_LP = b"l"
KEY_OUT_SEQ = b"o"
KEY_IN_CURSOR = b"i"
KEY_META = b"m"
KEY_SENT = b"s"
KEY_RECEIVED = b"r"
KEY_MARKET = b"L"
KEY_POSITION = b"P"
KEY_ORACLE = b"T"
MARKET_KEY_BYTES = 5  # ``L`` asset(u32); the config is ``L`` alone
KEY_FARM = b"F"  # records in sharding/farms.py
KEY_STAKE = b"S"
U128_MAX = 2**128 - 1

META_CHAIN_ID = KEY_META + b"chain_id"
META_SHARD = KEY_META + b"shard"
META_NUM_SHARDS = KEY_META + b"num_shards"


class CallFailed(ShardnetError):
    """A call that executes but fails (insufficient balance, slippage...): the
    nonce is consumed and the outcome records ``reason``; nothing else changes."""

    reason = "call_failed"


class Balance(WireStruct, frozen=True):
    asset: int
    amount: int


class Account(WireStruct, frozen=True):
    nonce: int
    balances: list[Balance]  # sorted by asset, no zero amounts


class Pool(WireStruct, frozen=True):
    asset_a: int
    asset_b: int
    reserve_a: int
    reserve_b: int
    shares: int  # total LP shares, including those locked at genesis


EMPTY_ACCOUNT = Account(nonce=0, balances=[])


# -- lending records (issue 18; the rules are sharding/lending.py and sharding/oracle.py)
# Integers that may outgrow a u64 (indices, price accumulators) are stored as
# 32-byte big-endian ``bytes``: msgpack integers stop at 2**64 - 1.


class PriceOracle(WireStruct, frozen=True):
    """Cumulative prices of a pool (Uniswap v2 style, Q64 fixed point, per block):
    ``cum_a`` sums ``reserve_b * 2**64 // reserve_a`` over the blocks since genesis,
    ``cum_b`` the inverse; two checkpoints (height, cum_a, cum_b) bound the TWAP window."""

    last_height: int
    cum_a: bytes
    cum_b: bytes
    snap_height: int
    snap_a: bytes
    snap_b: bytes
    prev_height: int
    prev_a: bytes
    prev_b: bytes
    window_blocks: int  # N >= 1 (genesis: the window of the market this pool prices)


class LendingConfig(WireStruct, frozen=True):
    address: bytes  # the lending program's address (lives on this shard)
    quote: int  # the asset prices are expressed in
    assets: list[int]  # one market per asset, ascending


class Market(WireStruct, frozen=True):
    asset: int
    cash: int  # tokens the market holds
    borrows: int  # total debt, interest included (rounded up)
    reserves: int  # the protocol's share of interest (part of cash + borrows)
    shares: int  # supply shares outstanding (cToken-like)
    borrow_index: bytes  # WAD-scaled, 32 bytes
    last_height: int  # block of the last accrual
    collateral_factor: int  # WAD
    close_factor: int  # WAD
    liquidation_bonus: int  # WAD (0.08e18 = 8 %)
    reserve_factor: int  # WAD
    base_rate: int  # WAD per block
    slope: int  # WAD per block at the kink
    kink: int  # WAD utilisation
    jump: int  # WAD per block from the kink to 100 %
    price_pool: bytes  # the pool pricing this asset in the quote, b"" for none


class Holding(WireStruct, frozen=True):
    asset: int
    shares: int  # supply shares (collateral)
    principal: int  # debt at ``index``
    index: bytes  # the market's borrow index when ``principal`` was last set (32 bytes)


class Position(WireStruct, frozen=True):
    holdings: list[Holding]  # sorted by asset, no empty entries


@dataclass(frozen=True, slots=True)
class ShardParams:
    chain_id: str
    shard: int
    num_shards: int
    # The height of the block being executed (0 outside a block): programs that
    # accrue per block (farms) read it. Not stored: the block header carries it.
    height: int = 0


# -- keys


def account_key(address: bytes) -> bytes:
    return KEY_ACCOUNT + address


def pool_key(pool: bytes) -> bytes:
    return KEY_POOL + pool


def lp_key(pool: bytes, owner: bytes) -> bytes:
    return KEY_LP + pool + owner


def market_config_key() -> bytes:
    return KEY_MARKET


def market_key(asset: int) -> bytes:
    return KEY_MARKET + asset.to_bytes(4, "big")


def position_key(owner: bytes) -> bytes:
    return KEY_POSITION + owner


def oracle_key(pool: bytes) -> bytes:
    return KEY_ORACLE + pool


def out_seq_key(dst_shard: int) -> bytes:
    return KEY_OUT_SEQ + dst_shard.to_bytes(4, "big")


def in_cursor_key(src_shard: int) -> bytes:
    return KEY_IN_CURSOR + src_shard.to_bytes(4, "big")


def sent_key(dst_shard: int, asset: int) -> bytes:
    return KEY_SENT + dst_shard.to_bytes(4, "big") + asset.to_bytes(4, "big")


def received_key(src_shard: int, asset: int) -> bytes:
    return KEY_RECEIVED + src_shard.to_bytes(4, "big") + asset.to_bytes(4, "big")


# -- integers


def encode_u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def get_u64(view: StateReader, key: bytes) -> int:
    raw = view.get(key)
    return 0 if raw is None else int.from_bytes(raw, "big")


def put_u64(view: StateView, key: bytes, value: int) -> None:
    check(0 <= value <= U64_MAX, f"u64 out of range for {key.hex()}")
    if value == 0:
        view.delete(key)
    else:
        view.set(key, encode_u64(value))


def get_u128(view: StateReader, key: bytes) -> int:
    raw = view.get(key)
    return 0 if raw is None else int.from_bytes(raw, "big")


def process_u128_add(view: StateView, key: bytes, amount: int) -> None:
    total = get_u128(view, key) + amount
    check(0 <= total <= U128_MAX, f"u128 out of range for {key.hex()}")
    if total:
        view.set(key, total.to_bytes(16, "big"))


# -- shard parameters


def get_shard_params(view: StateReader, height: int = 0) -> ShardParams:
    chain_id, shard, num_shards = (
        view.get(META_CHAIN_ID),
        view.get(META_SHARD),
        view.get(META_NUM_SHARDS),
    )
    if chain_id is None or shard is None or num_shards is None:
        raise InvariantViolation("state has no shard parameters (not built from genesis)")
    return ShardParams(
        chain_id.decode(), int.from_bytes(shard, "big"), int.from_bytes(num_shards, "big"),
        height,
    )


def put_shard_params(view: StateView, params: ShardParams) -> None:
    view.set(META_CHAIN_ID, params.chain_id.encode())
    view.set(META_SHARD, params.shard.to_bytes(4, "big"))
    view.set(META_NUM_SHARDS, params.num_shards.to_bytes(4, "big"))


# -- accounts


def get_account(view: StateReader, address: bytes) -> Account:
    raw = view.get(account_key(address))
    if raw is None:
        return EMPTY_ACCOUNT
    return decode(raw, Account, RECORD_BYTES_MAX, canonical=False)


def put_account(view: StateView, address: bytes, account: Account) -> None:
    if account.nonce == 0 and not account.balances:
        view.delete(account_key(address))
    else:
        view.set(account_key(address), encode(account))


def get_nonce(view: StateReader, address: bytes) -> int:
    return get_account(view, address).nonce


def get_balance(view: StateReader, address: bytes, asset: int) -> int:
    return compute_account_balance(get_account(view, address), asset)


def compute_account_balance(account: Account, asset: int) -> int:
    for balance in account.balances:
        if balance.asset == asset:
            return balance.amount
    return 0


def compute_with_balance(account: Account, asset: int, amount: int) -> Account:
    others = [b for b in account.balances if b.asset != asset]
    if amount:
        others.append(Balance(asset, amount))
        others.sort(key=lambda b: b.asset)
    return Account(account.nonce, others)


def process_nonce_increment(view: StateView, address: bytes) -> None:
    account = get_account(view, address)
    check(account.nonce < U64_MAX, "nonce overflow")
    put_account(view, address, Account(account.nonce + 1, account.balances))


def process_debit(view: StateView, address: bytes, asset: int, amount: int) -> None:
    account = get_account(view, address)
    balance = compute_account_balance(account, asset)
    # Verify the account holds the amount.
    if balance < amount:
        raise CallFailed(f"balance {balance} < {amount}", reason="insufficient_balance")
    put_account(view, address, compute_with_balance(account, asset, balance - amount))


def process_credit(view: StateView, address: bytes, asset: int, amount: int) -> None:
    account = get_account(view, address)
    balance = compute_account_balance(account, asset)
    # Verify the new balance fits in a u64.
    if balance + amount > U64_MAX:
        raise CallFailed("balance would exceed u64", reason="overflow")
    put_account(view, address, compute_with_balance(account, asset, balance + amount))


# -- pools and LP shares


def get_pool(view: StateReader, pool: bytes) -> Pool | None:
    raw = view.get(pool_key(pool))
    return None if raw is None else decode(raw, Pool, RECORD_BYTES_MAX, canonical=False)


def put_pool(view: StateView, pool: bytes, record: Pool) -> None:
    view.set(pool_key(pool), encode(record))


def get_lp_shares(view: StateReader, pool: bytes, owner: bytes) -> int:
    return get_u64(view, lp_key(pool, owner))


def put_lp_shares(view: StateView, pool: bytes, owner: bytes, shares: int) -> None:
    put_u64(view, lp_key(pool, owner), shares)


# -- channel counters


def get_out_seq(view: StateReader, dst_shard: int) -> int:
    return get_u64(view, out_seq_key(dst_shard))


def get_in_cursor(view: StateReader, src_shard: int) -> int:
    return get_u64(view, in_cursor_key(src_shard))


def get_sent(view: StateReader, dst_shard: int, asset: int) -> int:
    """Amount of ``asset`` this shard has ever sent to ``dst_shard`` in receipts."""
    return get_u128(view, sent_key(dst_shard, asset))


def get_received(view: StateReader, src_shard: int, asset: int) -> int:
    """Amount of ``asset`` this shard has ever applied from ``src_shard``'s receipts."""
    return get_u128(view, received_key(src_shard, asset))
