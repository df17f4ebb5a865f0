"""The sequential executor: the state transition of a block, written as the spec.

A block runs in this order, all inside one overlay of the committed state:

1. inbound receipts, in block order (grouped by source shard, each channel
   gap-free from ``in_cursor[src] + 1``); then each channel's cursor advances once;
2. transactions, in block order: each is checked (stateless, signature, nonce, the
   sender can pay: ``check_tx_payable``), consumes its nonce, and runs its call in
   a nested overlay that is dropped if the call fails;
3. the receipts emitted by steps 1-2 are stamped with per-channel sequence numbers
   in emission order, and ``out_seq`` advances.

Only a valid block has a result: a transaction that is invalid (rather than failing)
or an inbound receipt out of order makes the whole block invalid. ``apply_block``
never mutates the state; ``commit_block_result`` applies the returned write set.
The parallel executor must return byte-identical results (issue 7); the pieces it
needs are ``process_tx``, ``process_inbound_receipt``, ``check_inbound_order``,
``process_cursors`` and ``process_stamp_receipts``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import msgspec

from consensus.kernel.codec import WireStruct, encode
from consensus.kernel.errors import ShardnetError
from sharding.accounts import shard_of
from sharding.block import (
    EMPTY_EVIDENCE_ROOT,
    Block,
    BlockHeader,
    compute_inbound_root,
    compute_tx_root,
)
from sharding.merkle import compute_leaf_hash, compute_root_of_leaf_hashes
from sharding.programs import CallContext, process_call, process_receipt
from sharding.receipts import (
    CREDIT_KINDS,
    Receipt,
    ReceiptOverflow,
    compute_receipts_root,
    is_well_formed_receipt,
    process_received,
    process_stamp_receipts,
    receipt_hash,
)
from sharding.records import (
    CallFailed,
    ShardParams,
    get_in_cursor,
    get_shard_params,
    in_cursor_key,
    process_nonce_increment,
    put_u64,
)
from sharding.state import Overlay, PreparedWrites, State, StateReader, StateView
from sharding.tx import (
    InvalidTx,
    SignedTx,
    check_tx_nonce,
    check_tx_payable,
    check_tx_stateless,
    raw_tx_hash,
    stateless_passed,
    tx_hash,
    verify_tx_signature,
)

BLOCK_TXS_MAX = 10_000
BLOCK_RECEIPTS_MAX = 10_000


class InvalidBlock(ShardnetError):
    """A block no honest replica may accept; ``reason`` says why.

    For ``reason == "invalid_tx"``, ``tx_index`` and ``tx_reason`` name the culprit.
    """

    reason = "invalid_block"

    def __init__(
        self,
        detail: str = "",
        *,
        reason: str | None = None,
        tx_index: int | None = None,
        tx_reason: str | None = None,
    ) -> None:
        super().__init__(detail, reason=reason)
        self.tx_index = tx_index
        self.tx_reason = tx_reason


class TxOutcome(WireStruct, frozen=True):
    tx_hash: bytes
    ok: bool
    error: str  # "" when ok, else the CallFailed reason
    receipts: int  # outgoing receipts the call emitted


class ReceiptOutcome(WireStruct, frozen=True):
    receipt_hash: bytes
    ok: bool  # False only for a SWAP that was refunded
    error: str


@dataclass(frozen=True, slots=True)
class BlockResult:
    state_root: bytes
    receipts_root: bytes
    tx_root: bytes
    inbound_root: bytes
    receipts: list[Receipt]  # outgoing, stamped, in emission order
    outcomes: list[TxOutcome]  # one per transaction, in block order
    inbound_outcomes: list[ReceiptOutcome]  # one per inbound receipt, in block order
    writes: dict[bytes, bytes | None]  # None deletes; first-write order
    prepared: PreparedWrites = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Rejected:
    tx: SignedTx
    reason: str


# ---------------------------------------------------------------------------
# Signatures: a separable step (the parallel executor spreads it over processes)


def compute_bad_signatures(txs: Sequence[SignedTx]) -> list[int]:
    return [i for i, tx in enumerate(txs) if not verify_tx_signature(tx)]


def verify_block_signatures(block: Block) -> None:
    check_no_bad_signature(compute_bad_signatures(block.txs))


def check_no_bad_signature(bad: Sequence[int]) -> None:
    """The block's verdict on its bad signatures (``bad`` ascending): the lowest wins."""
    # Verify every transaction is signed by its sender.
    if bad:
        raise InvalidBlock(
            f"tx {bad[0]} has a bad signature",
            reason="invalid_tx",
            tx_index=bad[0],
            tx_reason="bad_signature",
        )


# ---------------------------------------------------------------------------
# Inbound receipts


def get_receipt_problem(params: ShardParams, receipt: Receipt) -> str | None:
    """Why ``receipt`` can never apply on this shard, or None."""
    # Verify the receipt has the shape a receipt must have.
    if not is_well_formed_receipt(receipt):
        return "malformed_receipt"
    # Verify the receipt comes from another shard and is addressed to this one.
    if receipt.dst_shard != params.shard or receipt.src_shard >= params.num_shards:
        return "wrong_channel"
    # Verify its target lives here.
    target = receipt.recipient if receipt.kind in CREDIT_KINDS else receipt.pool
    if shard_of(target, params.num_shards) != params.shard:
        return "wrong_shard"
    return None


def check_inbound_order(
    view: StateReader, params: ShardParams, inbound: Sequence[Receipt]
) -> dict[int, int]:
    """Raise ``InvalidBlock`` unless the receipts continue each channel without gaps
    or duplicates; return the new cursor per source shard."""
    # Verify the block carries no more receipts than a block may.
    if len(inbound) > BLOCK_RECEIPTS_MAX:
        raise InvalidBlock(f"{len(inbound)} inbound receipts", reason="too_many_receipts")
    cursors: dict[int, int] = {}
    previous_src = -1
    for receipt in inbound:
        problem = get_receipt_problem(params, receipt)
        # Verify the receipt can apply here.
        if problem is not None:
            raise InvalidBlock(f"receipt seq {receipt.seq}: {problem}", reason="bad_receipt")
        src = receipt.src_shard
        # Verify receipts are grouped by source shard in ascending order.
        if src < previous_src:
            raise InvalidBlock(f"source {src} after {previous_src}", reason="inbound_order")
        previous_src = src
        expected = cursors.get(src, get_in_cursor(view, src)) + 1
        # Verify the receipt was not applied before.
        if receipt.seq < expected:
            raise InvalidBlock(
                f"{src}->{params.shard} seq {receipt.seq}", reason="receipt_duplicate"
            )
        # Verify the receipt follows the channel's cursor without a gap.
        if receipt.seq > expected:
            raise InvalidBlock(
                f"{src}->{params.shard} seq {receipt.seq}, expected {expected}",
                reason="receipt_gap",
            )
        cursors[src] = receipt.seq
    return cursors


def process_inbound_receipt(
    view: StateView, params: ShardParams, receipt: Receipt
) -> tuple[ReceiptOutcome, list[Receipt]]:
    """Apply one (already ordered) inbound receipt; return its outcome and the
    unstamped receipts it emits (a swap's output or refund)."""
    outbox: list[Receipt] = []
    try:
        error = process_receipt(view, params, receipt, outbox)
    except ReceiptOverflow as exc:
        # Verify the receipt's credit fits the recipient's balance.
        raise InvalidBlock(exc.detail, reason=exc.reason) from None
    return ReceiptOutcome(receipt_hash(receipt), not error, error), outbox


def process_cursors(view: StateView, cursors: dict[int, int], inbound: Sequence[Receipt]) -> None:
    """Advance each channel's cursor once and count what the inbound receipts brought."""
    for src in sorted(cursors):
        put_u64(view, in_cursor_key(src), cursors[src])
    process_received(view, inbound)


# ---------------------------------------------------------------------------
# Transactions


def process_tx(
    view: StateView, params: ShardParams, tx: SignedTx, *, verify_signature: bool = True,
    digest: bytes | None = None,
) -> tuple[TxOutcome, list[Receipt]]:
    """Run one transaction: raise ``InvalidTx`` (and write nothing) when it may not
    be in a block (a sender that cannot pay included: ``unfunded_sender``,
    ``insufficient_balance``); otherwise consume its nonce and run its call, which
    either succeeds or leaves no trace but the nonce.

    ``digest``: ``tx_hash(tx)`` when the caller has it (``_execute`` reads it off the
    encoding it needs for the tx root); with it and the signature already checked, the
    stateless checks are skipped for a transaction that passed them before in this
    process (``sharding.tx.stateless_passed``: admission checked it)."""
    if digest is not None and not verify_signature:
        stateless_passed.check(tx, digest, params.chain_id, params.shard, params.num_shards)
    else:
        check_tx_stateless(
            tx, params.chain_id, params.shard, params.num_shards,
            verify_signatures=verify_signature,
        )
    check_tx_nonce(view, tx)
    check_tx_payable(view, tx)
    process_nonce_increment(view, tx.body.sender)
    if digest is None:
        digest = tx_hash(tx)
    ctx = CallContext(params, digest, tx.body.sender)
    attempt = Overlay(view)
    try:
        process_call(attempt, ctx, tx.body.call)
    except CallFailed as exc:
        return TxOutcome(digest, False, exc.reason, 0), []
    attempt.commit()
    return TxOutcome(digest, True, "", len(ctx.outbox)), ctx.outbox


# ---------------------------------------------------------------------------
# Blocks


def _execute(
    state: State,
    txs: Iterable[SignedTx],
    inbound: Sequence[Receipt],
    *,
    verify_signatures: bool,
    rejected: list[Rejected] | None,
    height: int,
) -> tuple[list[SignedTx], BlockResult]:
    """Run a block body at ``height``. With ``rejected`` given (proposer), invalid
    transactions are left out and listed; otherwise (replica) the first one raises."""
    params = get_shard_params(state, height)
    view = Overlay(state)
    inbound_outcomes, outbox = process_inbound(view, params, inbound)
    included: list[SignedTx] = []
    outcomes: list[TxOutcome] = []
    leaves: list[bytes | None] = []  # the included transactions' tx-root leaf hashes
    for index, tx in enumerate(txs):
        # One encoding per transaction gives its hash and its tx-root leaf (the body's
        # encoding sits inside the transaction's: ``raw_tx_hash``); was: the body
        # encoded and hashed here, the transaction encoded again for the root.
        raw = _encoded(tx)
        digest = raw_tx_hash(raw) if raw is not None else None
        try:
            outcome, emitted = process_tx(view, params, tx, verify_signature=verify_signatures,
                                          digest=digest)
        except InvalidTx as exc:
            if rejected is None:
                raise InvalidBlock(
                    f"tx {index}: {exc.detail}",
                    reason="invalid_tx",
                    tx_index=index,
                    tx_reason=exc.reason,
                ) from None
            rejected.append(Rejected(tx, exc.reason))
            continue
        included.append(tx)
        outcomes.append(outcome)
        outbox.extend(emitted)
        leaves.append(compute_leaf_hash(raw) if raw is not None else None)
    known = [leaf for leaf in leaves if leaf is not None]
    return included, finish_block(state, view, included, inbound, outcomes, inbound_outcomes,
                                  outbox, known if len(known) == len(leaves) else None)


def _encoded(tx: SignedTx) -> bytes | None:
    """``encode(tx)``, or None for a transaction built in Python that does not encode
    (its checks refuse it: ``is_well_formed``; the tx root then encodes it as before)."""
    try:
        return encode(tx)
    except (msgspec.MsgspecError, OverflowError, TypeError, ValueError):
        return None


def process_inbound(
    view: StateView, params: ShardParams, inbound: Sequence[Receipt]
) -> tuple[list[ReceiptOutcome], list[Receipt]]:
    """A block's inbound receipts, then its channel cursors: their outcomes and the
    receipts they emit (refunds, swap outputs), before any transaction runs."""
    cursors = check_inbound_order(view, params, inbound)
    outbox: list[Receipt] = []
    inbound_outcomes: list[ReceiptOutcome] = []
    for receipt in inbound:
        receipt_outcome, emitted = process_inbound_receipt(view, params, receipt)
        inbound_outcomes.append(receipt_outcome)
        outbox.extend(emitted)
    process_cursors(view, cursors, inbound)
    return inbound_outcomes, outbox


def finish_block(
    state: State,
    view: Overlay,
    included: Sequence[SignedTx],
    inbound: Sequence[Receipt],
    outcomes: list[TxOutcome],
    inbound_outcomes: list[ReceiptOutcome],
    outbox: list[Receipt],
    tx_leaves: Sequence[bytes] | None = None,
) -> BlockResult:
    """Stamp the outgoing receipts and compute the roots of an executed body.
    ``tx_leaves``: the included transactions' leaf hashes, when the caller has them
    (``compute_leaf_hash(encode(tx))`` each, in order)."""
    receipts = process_stamp_receipts(view, outbox)
    prepared = state.prepare(view.writes)
    return BlockResult(
        state_root=prepared.root,
        receipts_root=compute_receipts_root(receipts),
        tx_root=(compute_tx_root(included) if tx_leaves is None
                 else compute_root_of_leaf_hashes(tx_leaves)),
        inbound_root=compute_inbound_root(inbound),
        receipts=receipts,
        outcomes=outcomes,
        inbound_outcomes=inbound_outcomes,
        writes=prepared.writes,
        prepared=prepared,
    )


def apply_block(state: State, block: Block, *, verify_signatures: bool = True) -> BlockResult:
    """Execute ``block`` on ``state`` without mutating it; raise ``InvalidBlock``
    unless the block is valid and every root in its header matches.

    Height, view, prev_hash, proposer and the inbound proofs are the consensus and
    relay layers' to check; this checks what the state alone decides.
    """
    check_block_shape(block, get_shard_params(state))
    if verify_signatures:
        verify_block_signatures(block)
    _, result = _execute(state, block.txs, block.inbound, verify_signatures=False, rejected=None,
                         height=block.header.height)
    check_header_roots(block.header, result)
    return result


def check_block_shape(block: Block, params: ShardParams) -> None:
    """The checks before the signatures and execution: shard, size, proof count."""
    header = block.header
    # Verify the block is for this shard.
    if header.shard != params.shard:
        raise InvalidBlock(f"block for shard {header.shard}", reason="wrong_shard")
    # Verify the block carries no more transactions than a block may.
    if len(block.txs) > BLOCK_TXS_MAX:
        raise InvalidBlock(f"{len(block.txs)} transactions", reason="too_many_txs")
    # Verify there is either no proof or one proof per inbound receipt.
    if block.inbound_proofs and len(block.inbound_proofs) != len(block.inbound):
        raise InvalidBlock("proof count differs from receipt count", reason="bad_proofs")


def check_header_roots(header: BlockHeader, result: BlockResult) -> None:
    # Verify each root in the header is the one execution produced.
    for name in ("tx_root", "inbound_root", "receipts_root", "state_root"):
        if getattr(header, name) != getattr(result, name):
            raise InvalidBlock(f"{name} differs from execution", reason=f"{name}_mismatch")


def build_block(
    state: State,
    txs: Iterable[SignedTx],
    inbound: Iterable[Receipt],
    *,
    height: int,
    view: int,
    prev_hash: bytes,
    time_ms: int,
    proposer: int,
    verify_signatures: bool = True,
    txs_max: int = BLOCK_TXS_MAX,
    receipts_max: int = BLOCK_RECEIPTS_MAX,
) -> tuple[Block, BlockResult, list[Rejected]]:
    """Propose: keep the valid candidates (in order, at most ``txs_max``) and the
    inbound receipts that continue their channels, execute, and fill the roots.

    Inbound receipts are sorted per channel; duplicates are skipped and a channel
    stops at its first gap (the relay fetches the missing range).
    """
    params = get_shard_params(state)
    selected = select_inbound(state, params, inbound, receipts_max)
    rejected: list[Rejected] = []
    candidates = _take(txs, txs_max, rejected)
    included, result = _execute(
        state, candidates, selected, verify_signatures=verify_signatures, rejected=rejected,
        height=height,
    )
    header = BlockHeader(
        shard=params.shard,
        height=height,
        view=view,
        prev_hash=prev_hash,
        time_ms=time_ms,
        proposer=proposer,
        tx_root=result.tx_root,
        inbound_root=result.inbound_root,
        receipts_root=result.receipts_root,
        state_root=result.state_root,
        evidence_root=EMPTY_EVIDENCE_ROOT,
    )
    return Block(header=header, txs=included, inbound=selected), result, rejected


def _take(txs: Iterable[SignedTx], txs_max: int, rejected: list[Rejected]) -> Iterator[SignedTx]:
    """Yield candidates until ``txs_max`` of them would be valid (lazily: the
    executor consumes them in order, so invalid ones do not count)."""
    valid_so_far = 0
    for tx in txs:
        if valid_so_far >= txs_max:
            return
        before = len(rejected)
        yield tx
        if len(rejected) == before:
            valid_so_far += 1


def select_inbound(
    view: StateReader, params: ShardParams, inbound: Iterable[Receipt], receipts_max: int
) -> list[Receipt]:
    """The receipts a proposer includes: per source in seq order, gap-free from the
    cursor, duplicates and receipts that cannot apply here left out."""
    by_seq: dict[tuple[int, int], Receipt] = {}
    for receipt in inbound:
        if get_receipt_problem(params, receipt) is None:
            by_seq.setdefault((receipt.src_shard, receipt.seq), receipt)
    selected: list[Receipt] = []
    for src in sorted({src for src, _ in by_seq}):
        seq = get_in_cursor(view, src) + 1
        while (src, seq) in by_seq and len(selected) < receipts_max:
            selected.append(by_seq[(src, seq)])
            seq += 1
    return selected


def commit_block_result(state: State, result: BlockResult) -> None:
    """Apply a block's write set to the state it was executed on."""
    state.apply_prepared(result.prepared)
