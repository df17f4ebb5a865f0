"""Cross-shard receipts (PROTOCOL.md section 5).

A call on shard A that credits an account or calls a pool on shard B debits on A
and emits a receipt for B. Kinds:

- ``CREDIT``: credit ``recipient`` with ``amount`` of ``asset`` (cross-shard transfer);
- ``SWAP``: run ``amount`` of ``asset`` into ``pool`` with ``min_out``; the output
  goes back to ``recipient`` (the original sender) as ``SWAP_OUTPUT``, or the input
  comes back as ``REFUND`` (with ``error`` saying why) when the swap fails;
- ``SWAP_OUTPUT`` and ``REFUND`` credit ``recipient`` like ``CREDIT``;
- ``SUPPLY`` and ``REPAY`` (lending, issue 18): supply ``amount`` of ``asset`` to the
  lending program at ``pool`` for ``recipient``, or repay ``recipient``'s debt; a
  failure (or a repayment's excess over the debt) comes back as ``REFUND``;
- ``WITHDRAW`` (lending): ``recipient`` (an account of the source shard) asks the
  lending program at ``pool`` for ``min_out`` of ``asset`` from its supply; it carries
  no amount (``amount`` 0) and comes back as a ``CREDIT`` of what was withdrawn, or
  as a ``REFUND`` of nothing whose ``error`` says why it failed.

Every receipt carries ``origin``, the hash of the transaction that caused it,
so a transaction's receipts can be followed transitively. Sequence numbers are
stamped per channel at the end of the block, in emission order
(``process_stamp_receipts``): execution of individual calls never touches the
channel counters, so calls to the same destination do not conflict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec

from consensus.kernel.codec import U64_MAX, WireStruct, encode
from consensus.kernel.crypto import TAG_RECEIPT, tagged_hash
from consensus.kernel.errors import ShardnetError
from sharding.accounts import ADDRESS_BYTES
from sharding.merkle import compute_root
from sharding.records import (
    get_out_seq,
    out_seq_key,
    process_u128_add,
    put_u64,
    received_key,
    sent_key,
)
from sharding.state import StateView

CREDIT = 0
SWAP = 1
SWAP_OUTPUT = 2
REFUND = 3
SUPPLY = 4
REPAY = 5
WITHDRAW = 6
RECEIPT_KINDS = {CREDIT: "credit", SWAP: "swap", SWAP_OUTPUT: "swap_output", REFUND: "refund",
                 SUPPLY: "supply", REPAY: "repay", WITHDRAW: "withdraw"}
CREDIT_KINDS = frozenset({CREDIT, SWAP_OUTPUT, REFUND})
# Receipts that call a program at ``pool``.
PROGRAM_KINDS = frozenset({SWAP, SUPPLY, REPAY, WITHDRAW})

ERROR_CHARS_MAX = 64
SHARD_MAX = 2**16 - 1

U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgpack caps ints at 2**64 - 1
ShardId = Annotated[int, msgspec.Meta(ge=0, le=SHARD_MAX)]
Hash32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Address = Annotated[bytes, msgspec.Meta(min_length=ADDRESS_BYTES, max_length=ADDRESS_BYTES)]
OptionalAddress = Annotated[bytes, msgspec.Meta(max_length=ADDRESS_BYTES)]


class ReceiptOverflow(ShardnetError):
    """Applying a receipt would push a balance past u64: only a fabricated receipt can."""

    reason = "credit_overflow"


class Receipt(WireStruct, frozen=True):
    src_shard: ShardId
    dst_shard: ShardId
    seq: U64  # 1, 2, ... per (src, dst) channel
    kind: Annotated[int, msgspec.Meta(ge=0, le=6)]
    origin: Hash32  # hash of the transaction that caused it
    sender: Address  # the account whose call emitted the chain of receipts
    recipient: Address  # the account credited (for SWAP: where the output goes)
    asset: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
    amount: U64
    pool: OptionalAddress = b""  # SWAP (the pool), SUPPLY and REPAY (the lending program)
    min_out: U64 = 0  # SWAP; WITHDRAW: the amount asked
    error: Annotated[str, msgspec.Meta(max_length=ERROR_CHARS_MAX)] = ""  # REFUND only


def receipt_hash(receipt: Receipt) -> bytes:
    return tagged_hash(TAG_RECEIPT, encode(receipt))


def get_receipt_order(receipt: Receipt) -> tuple[int, int]:
    """Leaf order of ``receipts_root``: by destination shard, then sequence, so each
    destination's receipts are one run of leaves."""
    return receipt.dst_shard, receipt.seq


def compute_receipt_leaves(receipts: Sequence[Receipt]) -> list[bytes]:
    return [encode(receipt) for receipt in sorted(receipts, key=get_receipt_order)]


def compute_receipts_root(receipts: Sequence[Receipt]) -> bytes:
    """Merkle root over a block's encoded outgoing receipts in ``get_receipt_order``."""
    return compute_root(compute_receipt_leaves(receipts))


def is_well_formed_receipt(receipt: Receipt) -> bool:
    """The shape checks decoding enforces, for receipts built in Python."""
    return (
        receipt.kind in RECEIPT_KINDS
        and 0 <= receipt.amount <= U64_MAX
        and 0 <= receipt.min_out <= U64_MAX
        and len(receipt.origin) == 32
        and len(receipt.sender) == ADDRESS_BYTES
        and len(receipt.recipient) == ADDRESS_BYTES
        and len(receipt.pool) == (ADDRESS_BYTES if receipt.kind in PROGRAM_KINDS else 0)
        and (receipt.kind != WITHDRAW or receipt.amount == 0)
        and receipt.src_shard != receipt.dst_shard
    )


def process_stamp_receipts(view: StateView, unstamped: Sequence[Receipt]) -> list[Receipt]:
    """Number the block's outgoing receipts per channel, in emission order, advance
    ``out_seq`` and add their amounts to the channel's cumulative ``sent``."""
    next_seq: dict[int, int] = {}
    amounts: dict[tuple[int, int], int] = {}
    stamped: list[Receipt] = []
    for receipt in unstamped:
        dst = receipt.dst_shard
        seq = next_seq.get(dst, get_out_seq(view, dst)) + 1
        next_seq[dst] = seq
        stamped.append(msgspec.structs.replace(receipt, seq=seq))
        channel = (dst, receipt.asset)
        amounts[channel] = amounts.get(channel, 0) + receipt.amount
    for dst in sorted(next_seq):
        put_u64(view, out_seq_key(dst), next_seq[dst])
    for dst, asset in sorted(amounts):
        process_u128_add(view, sent_key(dst, asset), amounts[(dst, asset)])
    return stamped


def process_received(view: StateView, inbound: Sequence[Receipt]) -> None:
    """Add the applied inbound receipts' amounts to each channel's cumulative
    ``received``: with ``sent`` on the source, what is in flight is the difference."""
    amounts: dict[tuple[int, int], int] = {}
    for receipt in inbound:
        channel = (receipt.src_shard, receipt.asset)
        amounts[channel] = amounts.get(channel, 0) + receipt.amount
    for src, asset in sorted(amounts):
        process_u128_add(view, received_key(src, asset), amounts[(src, asset)])


def get_refund(receipt: Receipt, src_shard: int, error: str) -> Receipt:
    """The receipt that returns a failed swap's (supply's, repayment's) input to its
    sender (unstamped)."""
    return Receipt(
        src_shard=src_shard,
        dst_shard=receipt.src_shard,
        seq=0,
        kind=REFUND,
        origin=receipt.origin,
        sender=receipt.sender,
        recipient=receipt.recipient,
        asset=receipt.asset,
        amount=receipt.amount,
        error=error[:ERROR_CHARS_MAX],
    )
