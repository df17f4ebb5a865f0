"""The ledger's verified-signature cache is a hint, never an input to an outcome
(issue 16): a block executes (and commits) to the same verdict, the same state root
and the same outcomes whether or not this node verified some of its signatures
before, as long as the cache only ever holds signatures found valid. A block carrying
forged signatures, or a verified body with other signature bytes, is refused with or
without the hint. And a certified block committed without a speculative execution
(sync, replay) does not verify again the signatures the node already verified."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sharding.executor as executor_module
import sharding.tx as tx_module
import sharding.verified as verified_module
from consensus.kernel.codec import encode
from consensus.kernel.errors import ShardnetError
from sharding.block import block_hash, decode_block
from sharding.ledger import Ledger
from sharding.tx import SignedTx, Transfer, tx_hash
from sharding.verified import VerifiedTxs
from tests.support.ledger import get_genesis, get_keys, make_tx

KEYS = get_keys(0)
SENDERS = 6

# One variant per slot of a random block: the valid transfer, a forgery (zero
# signature), the valid body with another transaction's signature, a duplicate nonce.
VARIANTS = ("valid", "forged", "swapped", "replayed")


def transfer(sender: int, nonce: int = 0) -> SignedTx:
    return make_tx(KEYS[sender], nonce, Transfer(KEYS[0].public_key, 0, 1 + sender))


def variant(kind: str, sender: int) -> SignedTx:
    tx = transfer(sender)
    if kind == "forged":
        return msgspec.structs.replace(tx, signature=bytes(64))
    if kind == "swapped":
        other = transfer(sender % SENDERS + 1)
        return msgspec.structs.replace(tx, signature=other.signature)
    return tx


def make_block(kinds: list[str]) -> tuple[bytes, bytes, list[SignedTx]]:
    """A proposal of the valid transfers, its body then replaced by ``kinds``' variants
    (the header's roots then no longer match unless every slot is valid)."""
    valid = [transfer(sender) for sender in range(1, len(kinds) + 1)]
    proposal = Ledger(get_genesis(), 0).propose(valid, [], height=1, view=0, time_ms=1,
                                                 proposer=0, txs_max=100)
    txs = [variant(kind, sender) if kind != "replayed" else transfer(1)
           for sender, kind in enumerate(kinds, start=1)]
    if txs == valid:
        return proposal.payload, proposal.block_hash, txs
    block = msgspec.structs.replace(decode_block(proposal.payload, 1 << 24), txs=txs)
    return encode(block), block_hash(block), txs


def hinted_ledger(txs: list[SignedTx], hinted: list[bool]) -> Ledger:
    """A replica that admitted (verified) the chosen transactions beforehand: only a
    signature that verifies is ever cached."""
    ledger = Ledger(get_genesis(), 0)
    for tx, admit in zip(txs, hinted, strict=True):
        if admit:
            try:
                ledger.admit(encode(tx))
            except ShardnetError:
                assert tx not in ledger.verified
    return ledger


def verdict(ledger: Ledger, payload: bytes, digest: bytes) -> tuple[str, object]:
    reason = ledger.execute(payload, digest, 1, 0)
    if reason:
        return reason, None
    committed = ledger.commit(payload, digest, 1)
    return reason, (ledger.state.root, committed.result.outcomes, committed.result.receipts_root)


def commit_verdict(ledger: Ledger, payload: bytes, digest: bytes) -> tuple[str, object]:
    """A certified block committed without executing it first (the sync path)."""
    try:
        committed = ledger.commit(payload, digest, 1)
    except ShardnetError as exc:
        return exc.reason, None
    return "", (ledger.state.root, committed.result.outcomes)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(VARIANTS), st.booleans()), min_size=1,
                max_size=SENDERS))
def test_a_block_executes_the_same_with_or_without_the_verified_hint(
        slots: list[tuple[str, bool]]) -> None:
    kinds = [kind for kind, _ in slots]
    payload, digest, txs = make_block(kinds)
    hinted = [admit for _, admit in slots]
    expected = verdict(Ledger(get_genesis(), 0), payload, digest)
    assert verdict(hinted_ledger(txs, hinted), payload, digest) == expected
    assert verdict(hinted_ledger(txs, [True] * len(txs)), payload, digest) == expected
    if any(kind in ("forged", "swapped") for kind in kinds):
        assert expected[0] == "invalid_tx: bad signature"
    expected_commit = commit_verdict(Ledger(get_genesis(), 0), payload, digest)
    assert commit_verdict(hinted_ledger(txs, hinted), payload, digest) == expected_commit
    assert (expected_commit[0] == "") == (expected[0] == "")


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every signature check of the process, by signed transaction hash."""
    calls: list[bytes] = []
    original = tx_module.verify_tx_signature

    def counting(tx: SignedTx) -> bool:
        calls.append(tx_hash(tx))
        return original(tx)

    monkeypatch.setattr(tx_module, "verify_tx_signature", counting)
    monkeypatch.setattr(executor_module, "verify_tx_signature", counting)
    return calls


def test_a_synced_block_of_admitted_transactions_is_not_verified_again(
        verify_calls: list[bytes]) -> None:
    payload, digest, txs = make_block(["valid"] * 4)
    replica = hinted_ledger(txs, [True] * 4)
    other = hinted_ledger(txs, [True, True, False, True])
    verify_calls.clear()
    replica.commit(payload, digest, 1)  # never executed here: certified, synced
    assert verify_calls == []
    # One signature it never saw: the block is verified whole (overlapped with it).
    other.commit(payload, digest, 1)
    assert sorted(verify_calls) == sorted(tx_hash(tx) for tx in txs)


def test_a_synced_block_with_a_forged_signature_is_a_divergence_even_when_hinted(
        verify_calls: list[bytes]) -> None:
    payload, digest, txs = make_block(["valid", "swapped", "valid"])
    replica = hinted_ledger(txs, [True, True, True])  # the swapped copy is refused
    with pytest.raises(ShardnetError) as caught:
        replica.commit(payload, digest, 1)
    assert caught.value.reason == "divergence"


def test_proposing_with_the_mempool_hashes_verifies_nothing_admitted(
        verify_calls: list[bytes]) -> None:
    txs = [transfer(sender) for sender in range(1, 4)]
    ledger = hinted_ledger(txs, [True, True, True])
    verify_calls.clear()
    proposal = ledger.propose(txs, [], height=1, view=0, time_ms=1, proposer=0, txs_max=100,
                              tx_hashes=[tx_hash(tx) for tx in txs])
    assert verify_calls == [] and proposal.rejected == []
    assert [o.tx_hash for o in proposal.result.outcomes] == [tx_hash(tx) for tx in txs]


class _WaitSeen(threading.Event):
    """A ``threading.Event`` that tells when a thread starts waiting on it."""

    waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        _WaitSeen.waiting.set()
        return super().wait(timeout)


def test_admission_and_block_validation_racing_verify_each_signature_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The forwarded batch and the PRE-PREPARE with the same transactions arrive
    together: the second verifier waits for the first one's verdicts instead of
    verifying the same signatures again (it did: a whole block twice per replica)."""
    monkeypatch.setattr(verified_module, "threading",
                        SimpleNamespace(Event=_WaitSeen, Lock=threading.Lock))
    _WaitSeen.waiting.clear()
    cache = VerifiedTxs()
    txs = [transfer(sender) for sender in range(1, 5)]
    forged = msgspec.structs.replace(transfer(5), signature=bytes(64))
    batch, digests = [*txs, forged], [tx_hash(tx) for tx in [*txs, forged]]
    started, release = threading.Event(), threading.Event()
    calls: dict[str, list[SignedTx]] = {"first": [], "second": []}

    def first_verify(items: list[SignedTx]) -> list[bool]:
        calls["first"].extend(items)
        started.set()
        assert release.wait(10)
        return [tx_module.verify_tx_signature(tx) for tx in items]

    def second_verify(items: list[SignedTx]) -> list[bool]:
        calls["second"].extend(items)
        return [tx_module.verify_tx_signature(tx) for tx in items]

    results: dict[str, list[bool]] = {}
    first = threading.Thread(target=lambda: results.__setitem__(
        "first", cache.check_once(batch, digests, first_verify)))
    second = threading.Thread(target=lambda: results.__setitem__(
        "second", cache.check_once(batch, digests, second_verify)))
    first.start()
    try:
        assert started.wait(10)
        second.start()
        assert _WaitSeen.waiting.wait(10)  # the second verifier waits on the first
    finally:
        release.set()
        first.join(10)
        if second.ident is not None:
            second.join(10)
    assert results["first"] == results["second"] == [True] * 4 + [False]
    assert calls["first"] == batch
    # The forgery is never cached, so the second verifier checks it itself.
    assert calls["second"] == [forged]
    assert all(cache.holds(tx) for tx in txs) and not cache.holds(forged)
