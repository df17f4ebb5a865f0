"""The merge: job results folded into the block overlay in block order (which
reproduces the spec's first-write order), the spec run here from the first escaped
transaction on, and the block begun and finished by the spec's own steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.kernel.errors import ShardnetError
from sharding.block import compute_inbound_root, compute_tx_root
from sharding.executor import (
    BlockResult,
    InvalidBlock,
    ReceiptOutcome,
    Rejected,
    TxOutcome,
    check_no_bad_signature,
    finish_block,
    process_inbound,
)
from sharding.merkle import compute_root_of_leaf_hashes
from sharding.parallel.jobs import JobResult, TxResult
from sharding.parallel.worker import process_tx_known_signature
from sharding.receipts import Receipt, compute_receipts_root, process_stamp_receipts
from sharding.records import ShardParams, get_shard_params
from sharding.state import Leaf, Leaves, Overlay, State
from sharding.tx import InvalidTx, SignedTx


@dataclass(slots=True)
class Body:
    """The block overlay being built, as ``sharding.executor._execute`` builds it."""

    state: State
    params: ShardParams
    view: Overlay
    outbox: list[Receipt]
    inbound_outcomes: list[ReceiptOutcome]
    included: list[SignedTx]
    outcomes: list[TxOutcome]
    reexecutions: int = 0


def begin(state: State, inbound: Sequence[Receipt], height: int) -> Body:
    """The inbound receipts and channel cursors, run here exactly as the spec runs them."""
    params = get_shard_params(state, height)
    view = Overlay(state)
    inbound_outcomes, outbox = process_inbound(view, params, inbound)
    return Body(state, params, view, outbox, inbound_outcomes, [], [])


def fold(
    body: Body,
    txs: Sequence[SignedTx],
    results: Sequence[JobResult],
    known_bad: set[int],
    rejected: list[Rejected] | None,
) -> None:
    """Merge job results in block order; from the first escaped transaction on,
    run the spec here. With ``rejected`` None the first invalid transaction raises."""
    by_index: dict[int, TxResult] = {}
    escaped = len(txs)
    for job in results:
        if job.escaped >= 0:
            escaped = min(escaped, job.escaped)
        for result in job.results:
            by_index[result.index] = result
    view, params = body.view, body.params
    for index, tx in enumerate(txs):
        if index < escaped:
            result = by_index[index]
            invalid, detail = result.invalid, result.detail
        else:
            body.reexecutions += 1
            try:
                outcome, emitted = process_tx_known_signature(view, params, tx, index in known_bad)
            except InvalidTx as exc:
                invalid, detail = exc.reason, exc.detail
            else:
                result = TxResult(index, "", "", outcome, emitted, [])
                invalid = ""
        if invalid:
            if rejected is None:
                raise InvalidBlock(
                    f"tx {index}: {detail}", reason="invalid_tx", tx_index=index,
                    tx_reason=invalid,
                )
            rejected.append(Rejected(tx, invalid))
            continue
        if index < escaped:
            view.writes.update(result.writes)
        if result.outcome is None:
            raise ShardnetError("a valid job result has no outcome", reason="bad_job_result")
        body.included.append(tx)
        body.outcomes.append(result.outcome)
        body.outbox.extend(result.receipts)


def verdict(bad: Sequence[int], invalid: InvalidBlock | None,
             result: BlockResult | None) -> BlockResult:
    """The spec's order: a bad signature (the lowest) wins over what execution found."""
    check_no_bad_signature(bad)
    if invalid is not None:
        raise invalid
    if result is None:
        raise ShardnetError("execution produced no result", reason="bug")
    return result



def finish(body: Body, inbound: Sequence[Receipt], tx_leaves: Sequence[bytes] | None = None,
           state_leaves: Leaves | None = None) -> BlockResult:
    """``finish_block``; with leaf hashes computed by the workers (``tx_leaves``: one
    per included transaction, in block order; ``state_leaves``: per written key,
    used only where the value matches), the same steps without recomputing them."""
    if tx_leaves is None and state_leaves is None:
        return finish_block(body.state, body.view, body.included, inbound, body.outcomes,
                            body.inbound_outcomes, body.outbox)
    receipts = process_stamp_receipts(body.view, body.outbox)
    prepared = body.state.prepare(body.view.writes, state_leaves)
    tx_root = (compute_tx_root(body.included) if tx_leaves is None
               else compute_root_of_leaf_hashes(tx_leaves))
    return BlockResult(
        state_root=prepared.root,
        receipts_root=compute_receipts_root(receipts),
        tx_root=tx_root,
        inbound_root=compute_inbound_root(inbound),
        receipts=receipts,
        outcomes=body.outcomes,
        inbound_outcomes=body.inbound_outcomes,
        writes=prepared.writes,
        prepared=prepared,
    )


def collect_tx_leaves(results: Sequence[JobResult], count: int) -> list[bytes] | None:
    """The workers' tx-root leaves in block order, or None unless every one of the
    ``count`` transactions has one (then the root is computed here)."""
    leaves: list[bytes | None] = [None] * count
    for job in results:
        for index, leaf in job.tx_leaves:
            if 0 <= index < count:
                leaves[index] = leaf
    complete = [leaf for leaf in leaves if leaf is not None]
    return complete if len(complete) == count else None


def collect_state_leaves(results: Sequence[JobResult]) -> dict[bytes, Leaf]:
    """The workers' per-key state-root hashes (``Job.leaves``), by key."""
    return {key: (value, index, entry) for job in results
            for key, value, index, entry in job.state_leaves}
