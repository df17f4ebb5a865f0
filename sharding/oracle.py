"""Price oracle: time-weighted average prices of the constant-product pools
(PROTOCOL.md, "Lending"; Uniswap v2's cumulative price, counted in blocks).

Every pool has a ``PriceOracle`` record (key ``T`` pool). The first call that
touches a pool in block ``h`` (a swap, a deposit, a withdrawal of liquidity; the
pool still holds the reserves it had at the end of the previous block) adds the
spot price times the blocks elapsed to the accumulators, before the pool changes:

    cum_a += (reserve_b * 2**64 // reserve_a) * (h - last_height)   (price of a in b)
    cum_b += (reserve_a * 2**64 // reserve_b) * (h - last_height)   (price of b in a)

so a price set in block ``h`` counts from block ``h + 1`` on, and one swap moves the
average over a window of N blocks by at most 1/N of what it moves the spot price.
Two checkpoints bound the window: when ``h - snap_height >= N`` the snapshot
becomes ``prev`` and ``(h, cum)`` the new snapshot. A reader at height ``h``
averages from the newest checkpoint at least N blocks old (``snap`` or ``prev``),
over N to 2N blocks (fewer only while the chain is younger than N blocks), and
accumulates the blocks since ``last_height`` itself without writing: a read
equals what the record would say after a touch in the same block.

Prices are exact rationals ``(num, den)`` in Q64 (``value = amount * num // (den * 2**64)``)
so that each caller chooses its rounding. All integer math; no I/O.
"""

from __future__ import annotations

from consensus.kernel.codec import decode, encode
from consensus.kernel.limits import RECORD_BYTES_MAX
from sharding.records import Pool, PriceOracle, oracle_key
from sharding.state import StateReader, StateView

Q64 = 2**64
INT_BYTES = 32
WINDOW_BLOCKS_DEFAULT = 10
WINDOW_BLOCKS_MAX = 10_000

Price = tuple[int, int]  # (num, den): the price is num / den / 2**64


def encode_int(value: int) -> bytes:
    return value.to_bytes(INT_BYTES, "big")


def decode_int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


ZERO = encode_int(0)


def make_oracle(window_blocks: int = WINDOW_BLOCKS_DEFAULT) -> PriceOracle:
    """The record of a pool at genesis (height 0, nothing accumulated)."""
    return PriceOracle(0, ZERO, ZERO, 0, ZERO, ZERO, 0, ZERO, ZERO, window_blocks)


def get_oracle(view: StateReader, pool: bytes) -> PriceOracle:
    raw = view.get(oracle_key(pool))
    if raw is None:
        return make_oracle()
    return decode(raw, PriceOracle, RECORD_BYTES_MAX, canonical=False)


def compute_spot(pool: Pool) -> tuple[int, int]:
    """(price of a in b, price of b in a), Q64, rounded down; 0 for an empty side."""
    if pool.reserve_a == 0 or pool.reserve_b == 0:
        return 0, 0
    return pool.reserve_b * Q64 // pool.reserve_a, pool.reserve_a * Q64 // pool.reserve_b


def compute_accumulated(oracle: PriceOracle, pool: Pool, height: int) -> PriceOracle:
    """The record after a touch at ``height`` with ``pool`` as it stood before it."""
    if height <= oracle.last_height:
        return oracle
    elapsed = height - oracle.last_height
    spot_a, spot_b = compute_spot(pool)
    cum_a = encode_int(decode_int(oracle.cum_a) + spot_a * elapsed)
    cum_b = encode_int(decode_int(oracle.cum_b) + spot_b * elapsed)
    if height - oracle.snap_height >= oracle.window_blocks:
        return PriceOracle(height, cum_a, cum_b, height, cum_a, cum_b,
                           oracle.snap_height, oracle.snap_a, oracle.snap_b,
                           oracle.window_blocks)
    return PriceOracle(height, cum_a, cum_b, oracle.snap_height, oracle.snap_a, oracle.snap_b,
                       oracle.prev_height, oracle.prev_a, oracle.prev_b, oracle.window_blocks)


def process_oracle_touch(view: StateView, pool_address: bytes, pool: Pool, height: int) -> None:
    """Accumulate before ``pool`` (the record as it stands) changes in block ``height``."""
    oracle = get_oracle(view, pool_address)
    after = compute_accumulated(oracle, pool, height)
    if after is not oracle:
        view.set(oracle_key(pool_address), encode(after))


def get_twap(view: StateReader, pool_address: bytes, pool: Pool, asset: int,
             height: int) -> Price | None:
    """The average price of ``asset`` (one of the pool's two) in the other, at
    ``height``; None before the first block or when the pool was empty throughout."""
    oracle = compute_accumulated(get_oracle(view, pool_address), pool, height)
    if height - oracle.snap_height >= oracle.window_blocks:
        start, start_a, start_b = oracle.snap_height, oracle.snap_a, oracle.snap_b
    else:
        start, start_a, start_b = oracle.prev_height, oracle.prev_a, oracle.prev_b
    if height <= start:
        return None
    if asset == pool.asset_a:
        delta = decode_int(oracle.cum_a) - decode_int(start_a)
    else:
        delta = decode_int(oracle.cum_b) - decode_int(start_b)
    if delta == 0:
        return None
    return delta, height - start
