"""Cross-shard evidence (PROTOCOL.md section 5): bundles, a block's inbound evidence and
the inbound pool. Certificates are real: COMMIT votes signed with the genesis
validators' Ed25519 keys (``make_genesis_dict``: ``derive_account(f"validator-{s}", i)``).

Every refusal test asserts the specific reason: a bundle refused by ``verify_bundle``
(``InvalidBundle.reason``), a block refused by ``check_block_evidence`` or the executor
(``InvalidBlock.reason``), and the reason ``Ledger.execute`` gives consensus.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.certificate import (
    PHASE_COMMIT,
    CommitCertificate,
    IndexedSignature,
    sorted_signatures,
    vote_digest,
)
from consensus.kernel.codec import U64_MAX, encode
from consensus.kernel.crypto import KeyPair
from consensus.kernel.errors import DecodeError
from consensus.sim.doubles import FastSigner, FastVerifier
from sharding.accounts import derive_account
from sharding.block import (
    EMPTY_EVIDENCE_ROOT,
    GENESIS_PREV_HASH,
    Block,
    BlockHeader,
    ReceiptProof,
    SourceHeader,
    block_hash,
    compute_evidence_root,
)
from sharding.crossshard import (
    InvalidBundle,
    ProvenReceipt,
    ReceiptBundle,
    Validators,
    VerifiedSources,
    attach_evidence,
    check_block_evidence,
    compute_bundle_slice,
    compute_bundles,
    decode_bundle,
    verify_bundle,
)
from sharding.executor import InvalidBlock, apply_block, build_block
from sharding.genesis import Genesis, load_genesis, make_genesis_dict
from sharding.inbound import InboundPool
from sharding.ledger import Committed, Ledger
from sharding.merkle import EMPTY_ROOT, InclusionProof
from sharding.receipts import CREDIT, REFUND, SWAP, SWAP_OUTPUT, Receipt, compute_receipts_root
from sharding.records import get_balance
from sharding.tx import SignedTx, Transfer
from tests.support.ledger import ACCOUNTS, BALANCE, RESERVE, SEED, get_keys, make_tx

CHAIN = "shardnet-local"
N = 4  # validators per shard: f = 1, quorum 3
QUORUM = (0, 1, 2)


@lru_cache(maxsize=1)
def genesis() -> Genesis:
    return load_genesis(
        make_genesis_dict(
            num_shards=2, validators_per_shard=N, seed=SEED, accounts=ACCOUNTS,
            balance=BALANCE, pool_reserve=RESERVE,
        )
    )


@lru_cache(maxsize=16)
def validator_key(shard: int, index: int) -> KeyPair:
    return derive_account(f"validator-{shard}", index)


def validators() -> Validators:
    return Validators(CHAIN, [[v.public_key for v in vs] for vs in genesis().validators])


def certify(header: BlockHeader, signers: Iterable[int] = QUORUM, *, keys_of: int | None = None,
            view: int = 0) -> bytes:
    """The encoded commit certificate of ``header``: COMMIT votes of ``signers``, signed
    with the keys of shard ``keys_of`` (by default the header's own shard)."""
    digest = block_hash(header)
    vote = vote_digest(CHAIN, header.shard, view, header.height, digest, PHASE_COMMIT)
    keys_shard = header.shard if keys_of is None else keys_of
    signatures = {i: validator_key(keys_shard, i).sign(vote) for i in signers}
    return encode(CommitCertificate(header.shard, view, header.height, digest,
                                    sorted_signatures(signatures)))


def commit_next(ledger: Ledger, txs: Sequence[SignedTx] = (),
                inbound: Sequence[ProvenReceipt] = ()) -> tuple[Committed, bytes]:
    """Propose, commit and certify the next block of ``ledger``."""
    height = ledger.height + 1
    proposal = ledger.propose(list(txs), list(inbound), height=height, view=0,
                              time_ms=1000 * height, proposer=0, txs_max=100)
    committed = ledger.commit(proposal.payload, proposal.block_hash, height)
    return committed, certify(committed.block.header)


def transfers_to_shard_1(count: int, first_nonce: int = 0, amount: int = 100) -> list[SignedTx]:
    sender = get_keys(0)[0]
    far = get_keys(1)[0]
    return [make_tx(sender, first_nonce + n, Transfer(far.public_key, 0, amount + n))
            for n in range(count)]


def source_bundles(blocks: int = 1, per_block: int = 2) -> list[ReceiptBundle]:
    """``blocks`` committed blocks of shard 0, each emitting ``per_block`` credits to
    shard 1: their bundles for shard 1 (sequences 1.. in order)."""
    source = Ledger(genesis(), 0)
    out = []
    for b in range(blocks):
        committed, cert = commit_next(source, transfers_to_shard_1(per_block, b * per_block))
        out.append(compute_bundles(committed.block.header, cert, committed.result.receipts)[1])
    return out


@lru_cache(maxsize=1)
def three_bundles() -> tuple[ReceiptBundle, ...]:
    return tuple(source_bundles(3, 2))


def bundle_reason(bundle: ReceiptBundle, dst: int = 1) -> str:
    with pytest.raises(InvalidBundle) as info:
        verify_bundle(bundle, dst, validators())
    return info.value.reason


def block_reason(block: Block) -> str:
    with pytest.raises(InvalidBlock) as info:
        check_block_evidence(block, validators())
    return info.value.reason


def execute_reason(block: Block, ledger: Ledger | None = None) -> str:
    """What a replica of shard 1 answers consensus about ``block`` (its reason name)."""
    replica = ledger if ledger is not None else Ledger(genesis(), 1)
    reason = replica.execute(encode(block), block_hash(block), block.header.height,
                             block.header.view)
    return reason.split(":")[0]


def destination_block(proven: list[ProvenReceipt]) -> Block:
    """Shard 1's next block applying ``proven``, built by its (honest) proposer."""
    proposal = Ledger(genesis(), 1).propose([], proven, height=1, view=0, time_ms=5000,
                                            proposer=0, txs_max=100)
    assert proposal.inbound_refused == ""
    return proposal.block


def with_evidence(block: Block, proofs: list[ReceiptProof], sources: list[SourceHeader],
                  *, rebind: bool = True) -> Block:
    """``block`` carrying other evidence; ``rebind`` recomputes evidence_root as a
    proposer would (otherwise the header keeps committing to the old evidence)."""
    header = block.header
    if rebind:
        header = msgspec.structs.replace(header, evidence_root=compute_evidence_root(proofs,
                                                                                      sources))
    return msgspec.structs.replace(block, header=header, inbound_proofs=proofs,
                                   source_headers=sources)


def certified_source(receipts: list[Receipt], *, shard: int = 0, height: int = 7
                     ) -> ReceiptBundle:
    """A header of ``shard`` whose receipts_root holds exactly ``receipts``, certified by a
    quorum of its genesis validators, as a bundle for the receipts' destination."""
    header = BlockHeader(
        shard=shard, height=height, view=0, prev_hash=bytes(32), time_ms=0, proposer=0,
        tx_root=EMPTY_ROOT, inbound_root=EMPTY_ROOT,
        receipts_root=compute_receipts_root(receipts), state_root=bytes(32),
        evidence_root=EMPTY_EVIDENCE_ROOT,
    )
    (bundle,) = compute_bundles(header, certify(header), receipts).values()
    return bundle


def credit(seq: int, amount: int, *, src: int = 0, dst: int = 1) -> Receipt:
    return Receipt(src_shard=src, dst_shard=dst, seq=seq, kind=CREDIT, origin=b"\x07" * 32,
                   sender=get_keys(src)[0].public_key, recipient=get_keys(dst)[0].public_key,
                   asset=0, amount=amount)


# ---------------------------------------------------------------------------
# Bundles


def test_a_certified_bundle_proves_every_receipt_for_its_destination() -> None:
    (bundle,) = source_bundles(1, 3)
    proven = verify_bundle(bundle, 1, validators())
    assert [p.receipt for p in proven] == bundle.receipts
    assert [p.receipt.seq for p in proven] == [1, 2, 3]
    assert {p.source_hash for p in proven} == {block_hash(bundle.source.header)}


def test_verify_bundle_refuses_a_forged_certificate() -> None:
    (bundle,) = source_bundles()
    cert = msgspec.msgpack.decode(bundle.source.certificate, type=CommitCertificate)
    forged_sig = IndexedSignature(cert.signatures[0].index, bytes(64))
    forged = msgspec.structs.replace(cert, signatures=(forged_sig, *cert.signatures[1:]))
    source = SourceHeader(bundle.source.header, encode(forged))
    assert bundle_reason(msgspec.structs.replace(bundle, source=source)) == "bad_certificate"


def test_verify_bundle_refuses_a_certificate_by_keys_outside_the_genesis() -> None:
    (bundle,) = source_bundles()
    header = bundle.source.header
    vote = vote_digest(CHAIN, 0, 0, header.height, block_hash(header), PHASE_COMMIT)
    strangers = {i: KeyPair.derive("not-a-validator", i).sign(vote) for i in QUORUM}
    cert = CommitCertificate(0, 0, header.height, block_hash(header), sorted_signatures(strangers))
    source = SourceHeader(header, encode(cert))
    assert bundle_reason(msgspec.structs.replace(bundle, source=source)) == "bad_certificate"


def test_verify_bundle_refuses_a_certificate_signed_by_another_shards_validators() -> None:
    (bundle,) = source_bundles()
    source = SourceHeader(bundle.source.header, certify(bundle.source.header, keys_of=1))
    assert bundle_reason(msgspec.structs.replace(bundle, source=source)) == "bad_certificate"


@pytest.mark.parametrize("signers", [(), (0,), (0, 1), (1, 3)])
def test_verify_bundle_refuses_fewer_than_2f_plus_1_signers(signers: tuple[int, ...]) -> None:
    (bundle,) = source_bundles()
    source = SourceHeader(bundle.source.header, certify(bundle.source.header, signers))
    assert bundle_reason(msgspec.structs.replace(bundle, source=source)) == "bad_certificate"


def test_verify_bundle_refuses_a_certificate_of_another_block() -> None:
    (bundle,) = source_bundles()
    header = bundle.source.header
    other = msgspec.structs.replace(header, height=header.height + 1)
    source = SourceHeader(header, certify(other))
    assert bundle_reason(msgspec.structs.replace(bundle, source=source)) == "bad_certificate"


def test_verify_bundle_refuses_certificate_bytes_that_do_not_decode() -> None:
    (bundle,) = source_bundles()
    source = SourceHeader(bundle.source.header, b"\x93\x01\x02")
    assert bundle_reason(msgspec.structs.replace(bundle, source=source)) == "bad_certificate"


def test_verify_bundle_refuses_a_bad_proof() -> None:
    (bundle,) = source_bundles(1, 3)
    proof = bundle.proofs[0]
    bent = msgspec.structs.replace(proof, path=[bytes(32), *proof.path[1:]])
    assert bundle_reason(msgspec.structs.replace(bundle, proofs=[bent, *bundle.proofs[1:]])) \
        == "bad_proof"
    swapped = [bundle.proofs[1], bundle.proofs[0], *bundle.proofs[2:]]
    assert bundle_reason(msgspec.structs.replace(bundle, proofs=swapped)) == "bad_proof"


@pytest.mark.parametrize("change", [{"amount": 101}, {"seq": 5}, {"asset": 1},
                                    {"recipient": b"\x01" * 32}, {"kind": REFUND}])
def test_verify_bundle_refuses_a_tampered_receipt(change: dict[str, object]) -> None:
    (bundle,) = source_bundles()
    tampered = msgspec.structs.replace(bundle.receipts[0], **change)
    bundle = msgspec.structs.replace(bundle, receipts=[tampered, *bundle.receipts[1:]])
    assert bundle_reason(bundle) == "bad_proof"


def test_verify_bundle_refuses_a_receipt_for_another_destination() -> None:
    (bundle,) = source_bundles()
    assert bundle_reason(bundle, dst=0) == "wrong_destination"


def test_verify_bundle_refuses_a_source_outside_the_network() -> None:
    (bundle,) = source_bundles()
    header = msgspec.structs.replace(bundle.source.header, shard=7)
    source = SourceHeader(header, bundle.source.certificate)
    assert bundle_reason(msgspec.structs.replace(bundle, source=source)) == "unknown_source"


def test_verify_bundle_refuses_a_receipt_naming_another_source() -> None:
    # The certified block of shard 0 holds a receipt that claims to come from shard 1.
    lying = credit(1, 5, src=1, dst=0)
    bundle = certified_source([lying], shard=0)
    assert bundle_reason(bundle, dst=0) == "wrong_source"


def test_verify_bundle_refuses_a_malformed_receipt() -> None:
    looped = msgspec.structs.replace(credit(1, 5), dst_shard=0)  # src == dst
    assert bundle_reason(certified_source([looped]), dst=0) == "malformed_receipt"


def test_verify_bundle_refuses_an_empty_bundle_or_one_proof_short() -> None:
    (bundle,) = source_bundles(1, 2)
    assert bundle_reason(msgspec.structs.replace(bundle, receipts=[], proofs=[])) == "malformed"
    assert bundle_reason(msgspec.structs.replace(bundle, proofs=bundle.proofs[:1])) == "malformed"


def test_a_verified_certificate_is_cached_and_a_forged_copy_is_not() -> None:
    (bundle,) = source_bundles()
    calls = []

    def counting(key: bytes, message: bytes, signature: bytes) -> bool:
        calls.append(1)
        return validators().verify(key, message, signature)

    vals = Validators(CHAIN, validators().keys, counting)
    cache = VerifiedSources()
    verify_bundle(bundle, 1, vals, cache)
    verify_bundle(bundle, 1, vals, cache)
    assert len(calls) == 3  # one quorum, checked once
    forged = SourceHeader(bundle.source.header, certify(bundle.source.header, (0, 1)))
    with pytest.raises(InvalidBundle):
        verify_bundle(msgspec.structs.replace(bundle, source=forged), 1, vals, cache)


# ---------------------------------------------------------------------------
# A block's inbound evidence


def proven_of(*bundles: ReceiptBundle) -> list[ProvenReceipt]:
    return [p for b in bundles for p in verify_bundle(b, 1, validators())]


def test_an_honest_block_with_inbound_receipts_passes_every_replica() -> None:
    b1, b2, _ = three_bundles()
    block = destination_block(proven_of(b1, b2))
    assert [r.seq for r in block.inbound] == [1, 2, 3, 4]
    assert len(block.source_headers) == 2
    check_block_evidence(block, validators())
    assert execute_reason(block) == ""


def test_block_with_inbound_receipts_and_no_evidence_is_refused() -> None:
    """A receipt with no source: the executor alone would apply it, the evidence check
    refuses it before any replica votes."""
    b1, _, _ = three_bundles()
    replica = Ledger(genesis(), 1)
    block, _, _ = build_block(replica.state, [], b1.receipts, height=1, view=0,
                              prev_hash=GENESIS_PREV_HASH, time_ms=1, proposer=0)
    assert block.inbound and not block.inbound_proofs and not block.source_headers
    apply_block(replica.state, block)  # the state transition alone has nothing against it
    assert block_reason(block) == "bad_proofs"
    assert execute_reason(block, replica) == "bad_proofs"


def test_block_whose_evidence_was_stripped_after_the_header_was_built_is_refused() -> None:
    b1, _, _ = three_bundles()
    block = destination_block(proven_of(b1))
    stripped = with_evidence(block, [], [], rebind=False)
    assert block_reason(stripped) == "evidence_root_mismatch"
    assert execute_reason(stripped) == "evidence_root_mismatch"


def test_block_whose_evidence_was_swapped_after_the_header_was_built_is_refused() -> None:
    b1, b2, _ = three_bundles()
    block = destination_block(proven_of(b1))
    other = destination_block(proven_of(b2))
    swapped = with_evidence(block, other.inbound_proofs, other.source_headers, rebind=False)
    assert block_reason(swapped) == "evidence_root_mismatch"
    assert execute_reason(swapped) == "evidence_root_mismatch"


def test_block_padded_with_an_unused_source_header_is_refused() -> None:
    b1, b2, _ = three_bundles()
    block = destination_block(proven_of(b1))
    padded = with_evidence(block, block.inbound_proofs, [*block.source_headers, b2.source])
    assert block_reason(padded) == "padded_evidence"
    assert execute_reason(padded) == "padded_evidence"


def test_block_carrying_one_source_header_twice_is_refused() -> None:
    b1, _, _ = three_bundles()
    block = destination_block(proven_of(b1))
    first, second = block.inbound_proofs
    twice = with_evidence(block, [first, msgspec.structs.replace(second, source=1)],
                          [b1.source, b1.source])
    assert block_reason(twice) == "padded_evidence"


def test_block_whose_proof_names_a_missing_source_header_is_refused() -> None:
    b1, _, _ = three_bundles()
    block = destination_block(proven_of(b1))
    first, second = block.inbound_proofs
    dangling = with_evidence(block, [first, msgspec.structs.replace(second, source=1)],
                             block.source_headers)
    assert block_reason(dangling) == "bad_proofs"


def test_block_whose_source_certificate_is_forged_is_refused() -> None:
    b1, _, _ = three_bundles()
    block = destination_block(proven_of(b1))
    forged = SourceHeader(b1.source.header, certify(b1.source.header, keys_of=1))
    bad = with_evidence(block, block.inbound_proofs, [forged])
    assert block_reason(bad) == "bad_certificate"
    assert execute_reason(bad) == "bad_certificate"


def test_block_with_a_fabricated_receipt_under_a_real_certificate_is_refused() -> None:
    """A credit never emitted, dressed in a genuine source header and another receipt's
    proof: the proof does not hold."""
    b1, _, _ = three_bundles()
    real = proven_of(b1)
    fabricated = msgspec.structs.replace(real[0].receipt, amount=10**9)
    replica = Ledger(genesis(), 1)
    base, _, _ = build_block(replica.state, [], [fabricated, real[1].receipt], height=1, view=0,
                             prev_hash=GENESIS_PREV_HASH, time_ms=1, proposer=0)
    block = attach_evidence(base, {p.channel_seq: p for p in real})
    assert block_reason(block) == "bad_proof"
    assert execute_reason(block, replica) == "bad_proof"


def test_block_with_a_tampered_inbound_receipt_is_refused() -> None:
    b1, _, _ = three_bundles()
    block = destination_block(proven_of(b1))
    tampered = msgspec.structs.replace(block.inbound[0], amount=block.inbound[0].amount * 2)
    bad = msgspec.structs.replace(block, inbound=[tampered, *block.inbound[1:]])
    assert block_reason(bad) == "bad_proof"


def test_certified_receipt_whose_credit_overflows_makes_the_block_invalid() -> None:
    """Genesis bounds every supply by u64, so only a fabricated (here: certified by a
    corrupt quorum) receipt can overflow a balance: its block is invalid, the replica
    says why, and an honest proposer leaves the receipt out."""
    huge = credit(1, U64_MAX)
    proven = verify_bundle(certified_source([huge]), 1, validators())
    replica = Ledger(genesis(), 1)
    root = replica.state.root
    base = Block(header=destination_block([]).header, txs=[], inbound=[huge])
    block = attach_evidence(base, {p.channel_seq: p for p in proven})
    check_block_evidence(block, validators())  # the evidence itself holds
    with pytest.raises(InvalidBlock) as info:
        apply_block(replica.state, block)
    assert info.value.reason == "credit_overflow"
    reason = replica.execute(encode(block), block_hash(block), 1, 0)
    assert reason.startswith("credit_overflow")
    assert replica.state.root == root
    proposal = replica.propose([], proven, height=1, view=0, time_ms=1, proposer=0, txs_max=10)
    assert proposal.inbound_refused.startswith("credit_overflow")
    assert proposal.block.inbound == []


# ---------------------------------------------------------------------------
# The inbound pool: reordered, duplicated and missing bundles


def test_reordered_and_duplicated_bundles_apply_exactly_once() -> None:
    b1, b2, b3 = three_bundles()
    dest = Ledger(genesis(), 1)
    other = Ledger(genesis(), 1)
    pool = InboundPool()
    recipient = get_keys(1)[0].public_key
    before = get_balance(dest.state, recipient, 0)
    results = [pool.add(verify_bundle(b, 1, validators()), dest.in_cursor, t)
               for t, b in enumerate([b3, b1, b3, b2, b1])]
    assert [r.added for r in results] == [2, 2, 0, 2, 0]
    assert [r.duplicate for r in results] == [0, 0, 2, 0, 2]
    selected = pool.select(dest.in_cursor, 100)
    assert [p.receipt.seq for p in selected] == [1, 2, 3, 4, 5, 6]
    proposal = dest.propose([], selected, height=1, view=0, time_ms=1, proposer=0, txs_max=10)
    assert other.execute(proposal.payload, proposal.block_hash, 1, 0) == ""
    for ledger in (dest, other):
        ledger.commit(proposal.payload, proposal.block_hash, 1)
        assert ledger.in_cursor(0) == 6  # exactly the receipts applied
    credited = sum(r.amount for b in (b1, b2, b3) for r in b.receipts)
    assert get_balance(dest.state, recipient, 0) == before + credited
    assert pool.prune(dest.in_cursor) == 6 and len(pool) == 0
    # Late copies are stale: they never enter the pool again.
    late = pool.add(verify_bundle(b2, 1, validators()), dest.in_cursor, 9)
    assert (late.added, late.stale) == (0, 2)
    assert pool.select(dest.in_cursor, 100) == []
    # A proposer that applies them again anyway (with their genuine evidence) is refused.
    again = verify_bundle(b1, 1, validators())
    base, _, _ = build_block(dest.state, [], [], height=2, view=0, prev_hash=dest.tip_hash,
                             time_ms=2, proposer=0)
    replay = attach_evidence(msgspec.structs.replace(base, inbound=[p.receipt for p in again]),
                             {p.channel_seq: p for p in again})
    check_block_evidence(replay, validators())
    reason = other.execute(encode(replay), block_hash(replay), 2, 0)
    assert reason.startswith("receipt_duplicate")
    assert get_balance(other.state, recipient, 0) == before + credited


def test_a_gap_is_reported_and_the_run_after_it_waits_for_the_missing_bundle() -> None:
    b1, b2, b3 = three_bundles()
    dest = Ledger(genesis(), 1)
    pool = InboundPool()
    pool.add(verify_bundle(b3, 1, validators()), dest.in_cursor, 10)
    assert pool.get_gaps(dest.in_cursor) == {0: (1, 4)}
    assert pool.select(dest.in_cursor, 100) == []
    assert not pool.ready(dest.in_cursor) and pool.oldest_ready_ms(dest.in_cursor) is None
    pool.add(verify_bundle(b1, 1, validators()), dest.in_cursor, 20)
    # The run 1-2 is ready; the hole 3-4 behind it is reported at once (pulled while
    # 1-2 is being applied), and a pull for what follows asks from 3, never skipping it.
    assert pool.get_gaps(dest.in_cursor) == {0: (3, 4)}
    assert pool.get_run_end(0, dest.in_cursor(0)) == 2
    assert [p.receipt.seq for p in pool.select(dest.in_cursor, 100)] == [1, 2]
    assert pool.oldest_ready_ms(dest.in_cursor) == 20
    proposal = dest.propose([], pool.select(dest.in_cursor, 100), height=1, view=0, time_ms=1,
                            proposer=0, txs_max=10)
    dest.commit(proposal.payload, proposal.block_hash, 1)
    pool.prune(dest.in_cursor)
    assert pool.get_gaps(dest.in_cursor) == {0: (3, 4)}
    assert pool.known_seq(0) == 6
    # A proposer that skips the gap is refused by every replica.
    skipping = verify_bundle(b3, 1, validators())
    base, _, _ = build_block(dest.state, [], [], height=2, view=0, prev_hash=dest.tip_hash,
                             time_ms=2, proposer=0)
    gap_block = attach_evidence(
        msgspec.structs.replace(base, inbound=[p.receipt for p in skipping]),
        {p.channel_seq: p for p in skipping})
    assert dest.execute(encode(gap_block), block_hash(gap_block), 2, 0).startswith("receipt_gap")
    # The missing bundle (pulled from the source) closes the gap.
    pool.add(verify_bundle(b2, 1, validators()), dest.in_cursor, 30)
    assert pool.get_gaps(dest.in_cursor) == {}
    assert [p.receipt.seq for p in pool.select(dest.in_cursor, 100)] == [3, 4, 5, 6]
    assert [p.receipt.seq for p in pool.select(dest.in_cursor, 3)] == [3, 4, 5]


def fake_proven(src: int, seq: int) -> ProvenReceipt:
    """The pool trusts its caller to have verified; only (src, seq) matter to it."""
    receipt = Receipt(src_shard=src, dst_shard=2, seq=seq, kind=CREDIT, origin=bytes(32),
                      sender=bytes(32), recipient=bytes(32), asset=0, amount=1)
    source = SourceHeader(destination_block([]).header, b"")
    return ProvenReceipt(receipt, source, bytes(32), InclusionProof(0, 1, []))


def test_the_inbound_budget_is_shared_round_robin_between_channels() -> None:
    pool = InboundPool()
    cursors = {0: 0, 1: 4}
    pool.add([fake_proven(0, s) for s in range(1, 9)], cursors.__getitem__, 0)
    pool.add([fake_proven(1, s) for s in range(5, 7)], cursors.__getitem__, 0)
    picked = [(p.receipt.src_shard, p.receipt.seq) for p in pool.select(cursors.__getitem__, 5)]
    assert picked == [(0, 1), (0, 2), (0, 3), (1, 5), (1, 6)]


def test_a_full_pool_keeps_what_applies_soonest() -> None:
    pool = InboundPool(receipts_max=3)
    cursor = {0: 0}.__getitem__
    pool.add([fake_proven(0, s) for s in (2, 3, 4)], cursor, 0)
    result = pool.add([fake_proven(0, 1), fake_proven(0, 9)], cursor, 0)
    assert (result.added, result.full) == (1, 1)
    assert [p.receipt.seq for p in pool.select(cursor, 10)] == [1, 2, 3]


# ---------------------------------------------------------------------------
# Properties: bundles round-trip, encodings are canonical


FAST = [[FastSigner(f"prop-{s}/{i}".encode()) for i in range(N)] for s in range(4)]
FAST_VALIDATORS = Validators(CHAIN, [[s.public_key for s in shard] for shard in FAST],
                             FastVerifier([s for shard in FAST for s in shard]))


def fast_certify(header: BlockHeader) -> bytes:
    digest = block_hash(header)
    vote = vote_digest(CHAIN, header.shard, 0, header.height, digest, PHASE_COMMIT)
    signatures = {i: FAST[header.shard][i].sign(vote) for i in QUORUM}
    return encode(CommitCertificate(header.shard, 0, header.height, digest,
                                    sorted_signatures(signatures)))


addresses = st.binary(min_size=32, max_size=32)


@st.composite
def emitted_receipts(draw: st.DrawFn) -> tuple[BlockHeader, list[Receipt]]:
    """One source block's outgoing receipts (any kinds, any destinations, per-channel
    sequences continuing from arbitrary cursors, in emission order) and its header."""
    src = draw(st.integers(0, 3))
    base = {dst: draw(st.integers(0, 2**40)) for dst in range(4) if dst != src}
    count = draw(st.integers(1, 24))
    receipts = []
    for _ in range(count):
        dst = draw(st.sampled_from(sorted(base)))
        base[dst] += 1
        kind = draw(st.sampled_from([CREDIT, SWAP, SWAP_OUTPUT, REFUND]))
        receipts.append(Receipt(
            src_shard=src, dst_shard=dst, seq=base[dst], kind=kind, origin=draw(addresses),
            sender=draw(addresses), recipient=draw(addresses), asset=draw(st.integers(0, 3)),
            amount=draw(st.integers(0, U64_MAX)),
            pool=draw(addresses) if kind == SWAP else b"",
            min_out=draw(st.integers(0, U64_MAX)) if kind == SWAP else 0,
            error=draw(st.text(max_size=8)) if kind == REFUND else "",
        ))
    header = BlockHeader(
        shard=src, height=draw(st.integers(1, 2**32)), view=draw(st.integers(0, 9)),
        prev_hash=draw(addresses), time_ms=draw(st.integers(0, 2**42)), proposer=0,
        tx_root=EMPTY_ROOT, inbound_root=EMPTY_ROOT,
        receipts_root=compute_receipts_root(receipts), state_root=draw(addresses),
        evidence_root=EMPTY_EVIDENCE_ROOT,
    )
    return header, receipts


@settings(max_examples=150)
@given(emitted_receipts())
def test_compute_bundles_then_verify_bundle_round_trips(
    block: tuple[BlockHeader, list[Receipt]],
) -> None:
    header, receipts = block
    bundles = compute_bundles(header, fast_certify(header), receipts)
    assert set(bundles) == {r.dst_shard for r in receipts}
    recovered = []
    for dst, bundle in bundles.items():
        proven = verify_bundle(bundle, dst, FAST_VALIDATORS)
        mine = [r.receipt for r in proven]
        assert mine == sorted((r for r in receipts if r.dst_shard == dst), key=lambda r: r.seq)
        recovered.extend(mine)
        wrong = next(s for s in range(4) if s not in (dst, header.shard))
        with pytest.raises(InvalidBundle) as info:
            verify_bundle(bundle, wrong, FAST_VALIDATORS)
        assert info.value.reason == "wrong_destination"
        seqs = [r.seq for r in bundle.receipts]
        piece = compute_bundle_slice(bundle, seqs[len(seqs) // 2], seqs[-1])
        assert [p.receipt for p in verify_bundle(piece, dst, FAST_VALIDATORS)] == \
            mine[len(seqs) // 2:]
    assert sorted(recovered, key=encode) == sorted(receipts, key=encode)


@settings(max_examples=150)
@given(emitted_receipts(), st.data())
def test_receipt_bundle_encoding_is_canonical(
    block: tuple[BlockHeader, list[Receipt]], data: st.DataObject,
) -> None:
    header, receipts = block
    for bundle in compute_bundles(header, fast_certify(header), receipts).values():
        raw = encode(bundle)
        assert decode_bundle(raw) == bundle
        assert encode(decode_bundle(raw)) == raw
        # Any other bytes either fail to decode or are the one encoding of what they decode to.
        position = data.draw(st.integers(0, len(raw) - 1))
        value = data.draw(st.integers(0, 255))
        mutated = raw[:position] + bytes([value]) + raw[position + 1:]
        try:
            decoded = decode_bundle(mutated)
        except DecodeError:
            continue
        assert encode(decoded) == mutated


def test_a_non_canonical_bundle_encoding_is_refused() -> None:
    (bundle,) = source_bundles()
    raw = encode(bundle)
    # The same bundle with the source shard spelled as a uint64: valid msgpack for the
    # same value, refused as non-canonical.
    header_index = raw.index(encode(bundle.source.header))
    shard_byte = header_index + 1  # fixarray tag, then the shard (positive fixint)
    assert raw[shard_byte] == bundle.source.header.shard
    wide = raw[:shard_byte] + b"\xcf" + bundle.source.header.shard.to_bytes(8, "big") \
        + raw[shard_byte + 1:]
    with pytest.raises(DecodeError) as info:
        decode_bundle(wide)
    assert info.value.reason == "non_canonical"
