"""Transactions that passed the stateless checks are not checked again in their block
(issue 16, deliverable 2): admission remembers a pass (``sharding.tx.stateless_passed``,
keyed by the transaction's hash and signature bytes and the chain, shard and shard
count), block building and validation skip the checks for it. A hint, never an input to
an outcome: a block is built, executed and committed to the same bytes, block hash,
state root, outcomes and rejection reasons with or without it; a failure is never
remembered; a pass for one shard says nothing about another. And one encoding per
transaction gives both its hash and its tx-root leaf: the roots are the spec's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sharding.executor as executor_module
import sharding.tx as tx_module
from consensus.kernel.codec import encode
from consensus.kernel.errors import ShardnetError
from sharding.block import block_hash, compute_tx_root, decode_block
from sharding.ledger import Ledger
from sharding.tx import (
    InvalidTx,
    SignedTx,
    StatelessPassed,
    Transfer,
    check_tx_stateless,
    stateless_passed,
    tx_hash,
)
from tests.support.ledger import get_genesis, get_keys, make_tx

KEYS = get_keys(0)
OTHER_SHARD = get_keys(1)
SENDERS = 6
# One variant per slot: valid, and signed transactions that fail a stateless check.
VARIANTS = ("valid", "wrong_chain", "wrong_shard", "zero_amount")


def make(kind: str, sender: int) -> SignedTx:
    if kind == "wrong_chain":
        return make_tx(KEYS[sender], 0, Transfer(KEYS[0].public_key, 0, 1), chain_id="other")
    if kind == "wrong_shard":
        return make_tx(OTHER_SHARD[sender], 0, Transfer(KEYS[0].public_key, 0, 1))
    return make_tx(KEYS[sender], 0, Transfer(KEYS[0].public_key, 0,
                                              0 if kind == "zero_amount" else 1 + sender))


@pytest.fixture(autouse=True)
def empty_memo() -> Iterator[None]:
    stateless_passed.clear()
    yield
    stateless_passed.clear()


def admitted(txs: list[SignedTx], chosen: list[bool]) -> None:
    """Admission saw the chosen transactions (a failure is refused, not remembered)."""
    ledger = Ledger(get_genesis(), 0)
    for tx, admit in zip(txs, chosen, strict=True):
        if admit:
            with contextlib.suppress(ShardnetError):
                ledger.admit(encode(tx))


def proposal_of(txs: list[SignedTx]) -> tuple[bytes, bytes, list[tuple[bytes, str]]]:
    proposal = Ledger(get_genesis(), 0).propose(txs, [], height=1, view=0, time_ms=1,
                                                 proposer=0, txs_max=100)
    return (proposal.payload, proposal.block_hash,
            [(tx_hash(r.tx), r.reason) for r in proposal.rejected])


def replica_verdict(payload: bytes, digest: bytes) -> tuple[str, object]:
    ledger = Ledger(get_genesis(), 0)
    reason = ledger.execute(payload, digest, 1, 0)
    if reason:
        return reason, None
    committed = ledger.commit(payload, digest, 1)
    return reason, (ledger.state.root, committed.result.outcomes, committed.result.tx_root)


def stuffed_block(txs: list[SignedTx]) -> tuple[bytes, bytes]:
    """A valid proposal's body replaced by ``txs`` (a primary including what it should
    have refused): the header is the valid block's."""
    valid = [make("valid", sender) for sender in range(1, SENDERS + 1)]
    payload, _, _ = proposal_of(valid)
    block = msgspec.structs.replace(decode_block(payload, 1 << 24), txs=txs)
    return encode(block), block_hash(block)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(VARIANTS), st.booleans()), min_size=1,
                max_size=SENDERS))
def test_blocks_are_the_same_with_or_without_the_remembered_passes(
        slots: list[tuple[str, bool]]) -> None:
    txs = [make(kind, sender) for sender, (kind, _) in enumerate(slots, start=1)]
    chosen = [admit for _, admit in slots]
    stateless_passed.clear()
    expected_proposal = proposal_of(txs)
    stuffed = stuffed_block(txs)
    stateless_passed.clear()
    expected_replica = replica_verdict(*stuffed)
    expected_own = replica_verdict(*expected_proposal[:2])
    for admit in (chosen, [True] * len(txs)):
        stateless_passed.clear()
        admitted(txs, admit)
        assert proposal_of(txs) == expected_proposal
        assert replica_verdict(*stuffed) == expected_replica
        assert replica_verdict(*expected_proposal[:2]) == expected_own
    # The proposer refuses every invalid variant with its own reason; a replica refuses
    # a block carrying one.
    reasons = {reason for _, reason in expected_proposal[2]}
    assert reasons == {kind for kind, _ in slots if kind != "valid"}
    assert expected_own[0] == ""
    if any(kind != "valid" for kind, _ in slots):
        assert expected_replica[0].startswith("invalid_tx")


def test_a_failure_is_not_remembered_and_a_pass_is_per_shard() -> None:
    memo = StatelessPassed()
    genesis = get_genesis()
    tx = make("valid", 1)
    bad = make("wrong_shard", 1)
    with pytest.raises(InvalidTx):
        memo.check(bad, tx_hash(bad), genesis.chain_id, 0, genesis.num_shards)
    assert len(memo) == 0
    memo.check(tx, tx_hash(tx), genesis.chain_id, 0, genesis.num_shards)
    assert len(memo) == 1
    # The same transaction, judged for the other shard: checked, and refused.
    with pytest.raises(InvalidTx) as caught:
        memo.check(tx, tx_hash(tx), genesis.chain_id, 1, genesis.num_shards)
    assert caught.value.reason == "wrong_shard"
    # The same body with other signature bytes is another key (checked again).
    other = msgspec.structs.replace(tx, signature=bytes(64))
    memo.check(other, tx_hash(other), genesis.chain_id, 0, genesis.num_shards)
    assert len(memo) == 2


def test_a_remembered_pass_skips_the_checks_and_the_memo_is_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []

    def counting(tx: SignedTx, *args: object, **kwargs: object) -> None:
        calls.append(tx_hash(tx))
        check_tx_stateless(tx, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tx_module, "check_tx_stateless", counting)
    memo = StatelessPassed(capacity=2)
    genesis = get_genesis()
    txs = [make("valid", sender) for sender in (1, 2, 3)]
    for tx in (txs[0], txs[0], txs[1], txs[1]):
        memo.check(tx, tx_hash(tx), genesis.chain_id, 0, genesis.num_shards)
    assert calls == [tx_hash(txs[0]), tx_hash(txs[1])]
    memo.check(txs[2], tx_hash(txs[2]), genesis.chain_id, 0, genesis.num_shards)
    memo.check(txs[0], tx_hash(txs[0]), genesis.chain_id, 0, genesis.num_shards)
    assert len(memo) == 2 and calls[-1] == tx_hash(txs[0])  # the oldest went first


def test_a_replica_skips_the_checks_admission_made(monkeypatch: pytest.MonkeyPatch) -> None:
    txs = [make("valid", sender) for sender in range(1, 4)]
    payload, digest, _ = proposal_of(txs)
    stateless_passed.clear()
    admitted(txs, [True] * 3)
    calls: list[SignedTx] = []
    original = tx_module.check_tx_stateless

    def counting(tx: SignedTx, *args: object, **kwargs: object) -> None:
        calls.append(tx)
        original(tx, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tx_module, "check_tx_stateless", counting)
    monkeypatch.setattr(executor_module, "check_tx_stateless", counting)
    assert replica_verdict(payload, digest)[0] == ""
    assert calls == []


def test_the_tx_root_from_one_encoding_is_the_spec_root() -> None:
    txs = [make("valid", sender) for sender in range(1, SENDERS + 1)]
    payload, _, _ = proposal_of(txs)
    block = decode_block(payload, 1 << 24)
    assert block.header.tx_root == compute_tx_root(block.txs)
    assert [o.tx_hash for o in replica_verdict(payload, block_hash(block))[1][1]] == [  # type: ignore[index]
        tx_hash(tx) for tx in txs]
