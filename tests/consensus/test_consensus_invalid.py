"""Invalid input: every bad message is dropped with its typed reason, and nothing that
arrives off the wire makes ``step`` raise (PROTOCOL.md 4, issue item 5)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.actions import Dropped
from consensus.certificate import (
    PHASE_COMMIT,
    PHASE_PREPARE,
    CommitCertificate,
    IndexedSignature,
    verify_certificate,
    vote_digest,
)
from consensus.events import BlockExecuted, MessageReceived, ProposalReady, SyncedBlock, SyncResult
from consensus.kernel.codec import encode
from consensus.kernel.errors import InvariantViolation
from consensus.messages import CertNotice, PrePrepare, ViewChange, Vote, signing_digest
from consensus.sim.doubles import FastSigner
from consensus.state import ReplicaConfig
from tests.support.consensus_harness import CHAIN, Cluster


def signed_vote(cluster: Cluster, sender: int, **fields: int | bytes) -> Vote:
    values: dict[str, int | bytes] = {
        "shard": 0,
        "phase": PHASE_PREPARE,
        "view": 0,
        "height": 1,
        "block_hash": b"\x11" * 32,
    }
    values.update(fields)
    digest = vote_digest(
        CHAIN,
        int(values["shard"]),
        int(values["view"]),
        int(values["height"]),
        bytes(values["block_hash"]),  # type: ignore[arg-type]
        int(values["phase"]),
    )
    sig = cluster.signers[sender].sign(digest)
    return Vote(
        int(values["shard"]),
        int(values["phase"]),
        int(values["view"]),
        int(values["height"]),
        bytes(values["block_hash"]),  # type: ignore[arg-type]
        sender,
        sig,
    )


def reasons_for(cluster: Cluster, data: bytes, sender: int | None = 1, to: int = 2) -> list[str]:
    actions = cluster.step(to, MessageReceived(data, sender))
    return [a.reason for a in actions if isinstance(a, Dropped)]


def test_rejects_garbage_bytes_as_malformed() -> None:
    assert reasons_for(Cluster(), b"\xc1\x00garbage") == ["malformed"]


def test_rejects_oversized_message_before_decoding() -> None:
    cluster = Cluster(options={"message_bytes_max": 1000})
    assert reasons_for(cluster, b"\x00" * 1001) == ["oversized"]


def test_rejects_non_canonical_encoding() -> None:
    cluster = Cluster()
    vote = signed_vote(cluster, 1)
    fields = list(msgspec.msgpack.decode(encode(vote)))  # [tag, shard, phase, view, height, ...]
    assert fields[4] == 1
    # The same vote with its height as a 4-byte int: decodes, but is not canonical.
    parts = [msgspec.msgpack.encode(x) for x in fields]
    parts[4] = b"\xce\x00\x00\x00\x01"
    raw = bytes([0x90 + len(fields)]) + b"".join(parts)
    assert msgspec.msgpack.decode(raw) == fields
    assert reasons_for(cluster, raw) == ["non_canonical"]


def test_rejects_message_for_another_shard() -> None:
    cluster = Cluster()
    assert reasons_for(cluster, encode(signed_vote(cluster, 1, shard=7))) == ["wrong_shard"]


def test_rejects_sender_outside_the_validator_set_as_not_validator() -> None:
    cluster = Cluster()
    vote = signed_vote(cluster, 1)
    stranger = Vote(0, vote.phase, 0, 1, vote.block_hash, 9, vote.signature)
    assert reasons_for(cluster, encode(stranger), sender=None) == ["not_validator"]


def test_rejects_message_whose_signed_sender_differs_from_the_transport_peer() -> None:
    cluster = Cluster()
    assert reasons_for(cluster, encode(signed_vote(cluster, 1)), sender=3) == ["wrong_sender"]


def test_rejects_bad_signature() -> None:
    cluster = Cluster()
    vote = signed_vote(cluster, 1)
    forged = Vote(0, vote.phase, 0, 1, vote.block_hash, 1, bytes(64))
    assert reasons_for(cluster, encode(forged)) == ["bad_signature"]


def test_rejects_signature_from_another_chain() -> None:
    cluster = Cluster()
    sig = cluster.signers[1].sign(vote_digest("other-chain", 0, 0, 1, b"\x11" * 32, 2))
    vote = Vote(0, PHASE_PREPARE, 0, 1, b"\x11" * 32, 1, sig)
    assert reasons_for(cluster, encode(vote)) == ["bad_signature"]


def test_rejects_replay_of_a_duplicate_vote() -> None:
    cluster = Cluster()
    data = encode(signed_vote(cluster, 1))
    assert reasons_for(cluster, data) == []
    assert reasons_for(cluster, data) == ["duplicate"]


def test_rejects_conflicting_vote_as_equivocation() -> None:
    cluster = Cluster()
    assert reasons_for(cluster, encode(signed_vote(cluster, 1))) == []
    other = signed_vote(cluster, 1, block_hash=b"\x22" * 32)
    assert reasons_for(cluster, encode(other)) == ["equivocation"]


def test_rejects_our_own_message_replayed_to_us() -> None:
    cluster = Cluster()
    assert reasons_for(cluster, encode(signed_vote(cluster, 2)), sender=None) == ["replayed_own"]


def test_rejects_vote_from_an_old_view_as_wrong_view() -> None:
    cluster = Cluster()
    cluster.replicas[2].view = 3
    assert reasons_for(cluster, encode(signed_vote(cluster, 1, view=1))) == ["wrong_view"]


def test_rejects_vote_from_a_future_view() -> None:
    cluster = Cluster()
    assert reasons_for(cluster, encode(signed_vote(cluster, 1, view=5))) == ["future_view"]


def test_rejects_vote_for_a_committed_height_as_stale() -> None:
    cluster = Cluster()
    cluster.propose([1])
    cluster.deliver()
    assert reasons_for(cluster, encode(signed_vote(cluster, 1, height=1))) == ["stale"]


def test_rejects_prepare_sent_by_the_primary() -> None:
    cluster = Cluster()
    assert reasons_for(cluster, encode(signed_vote(cluster, 0)), sender=0) == ["primary_prepare"]


def test_rejects_pre_prepare_from_a_backup_as_not_primary() -> None:
    cluster = Cluster()
    pp = PrePrepare(0, 0, 1, b"\x01" * 32, b"\x02" * 32, 1, bytes(64), b"", None)
    assert reasons_for(cluster, encode(pp)) == ["not_primary"]


def test_rejects_pre_prepare_whose_payload_does_not_match_its_signed_hash() -> None:
    cluster = Cluster()
    cluster.propose([1])
    dst, src, data = cluster.inbox[0]
    pp = msgspec.msgpack.decode(data)
    pp[8] = b"tampered payload"
    assert reasons_for(cluster, msgspec.msgpack.encode(pp), sender=src, to=dst) == ["bad_payload"]


def test_rejects_cert_notice_with_a_forged_certificate() -> None:
    cluster = Cluster()
    cert = CommitCertificate(0, 0, 1, b"\x01" * 32, (IndexedSignature(0, bytes(64)),))
    unsigned = CertNotice(0, 1, cert, b"")
    sig = cluster.signers[1].sign(signing_digest(CHAIN, unsigned))
    notice = CertNotice(0, 1, cert, sig)
    assert reasons_for(cluster, encode(notice)) == ["bad_certificate"]
    assert cluster.replicas[2].committed_height == 0


def test_rejects_view_change_with_a_forged_prepared_certificate() -> None:
    cluster = Cluster()
    from consensus.certificate import GENESIS_CHECKPOINT, PreparedCertificate

    prepared = PreparedCertificate(0, 1, b"\x01" * 32, b"\x02" * 32, bytes(64), ())
    unsigned = ViewChange(0, 1, 1, GENESIS_CHECKPOINT, None, prepared, b"")
    sig = cluster.signers[1].sign(signing_digest(CHAIN, unsigned))
    vc = ViewChange(0, 1, 1, GENESIS_CHECKPOINT, None, prepared, sig)
    assert reasons_for(cluster, encode(vc)) == ["bad_view_change"]


def test_rejects_unrequested_proposal() -> None:
    cluster = Cluster()
    actions = cluster.step(1, ProposalReady(1, 0, b"block", b"\x01" * 32))
    assert [a.reason for a in actions if isinstance(a, Dropped)] == ["unexpected_proposal"]


def test_rejects_execution_result_nobody_asked_for() -> None:
    cluster = Cluster()
    actions = cluster.step(1, BlockExecuted(0, 1, b"\x01" * 32, True))
    assert [a.reason for a in actions if isinstance(a, Dropped)] == ["unexpected_execution"]


def test_rejects_synced_block_with_a_certificate_for_another_block() -> None:
    cluster = Cluster()
    cluster.propose([1])
    cluster.deliver()
    payload, _, cert = cluster.ledgers[0].blocks[0]
    fresh = Cluster()
    actions = fresh.step(3, SyncResult((SyncedBlock(1, payload, b"\x09" * 32, cert),)))
    assert [a.reason for a in actions if isinstance(a, Dropped)] == ["bad_certificate"]


def test_verify_certificate_rejects_too_few_duplicate_unsorted_or_misplaced() -> None:
    cluster = Cluster()
    cluster.propose([1])
    cluster.deliver()
    _, block_hash, cert = cluster.ledgers[0].blocks[0]
    vals, verify = cluster.validators, cluster.verify
    assert verify_certificate(cert, CHAIN, 0, 1, block_hash, vals, verify)
    sigs = cert.signatures
    few = CommitCertificate(0, cert.view, 1, block_hash, sigs[:2])
    dup = CommitCertificate(0, cert.view, 1, block_hash, (sigs[0], sigs[0], sigs[1]))
    unsorted = CommitCertificate(0, cert.view, 1, block_hash, (sigs[1], sigs[0], sigs[2]))
    assert not verify_certificate(few, CHAIN, 0, 1, block_hash, vals, verify)
    assert not verify_certificate(dup, CHAIN, 0, 1, block_hash, vals, verify)
    assert not verify_certificate(unsorted, CHAIN, 0, 1, block_hash, vals, verify)
    assert not verify_certificate(cert, CHAIN, 0, 2, block_hash, vals, verify)
    assert not verify_certificate(cert, CHAIN, 1, 1, block_hash, vals, verify)
    assert not verify_certificate(cert, "other", 0, 1, block_hash, vals, verify)
    prepare_sigs = CommitCertificate(0, cert.view, 1, block_hash, sigs)
    assert verify_certificate(prepare_sigs, CHAIN, 0, 1, block_hash, vals, verify)
    digest = vote_digest(CHAIN, 0, cert.view, 1, block_hash, PHASE_PREPARE)
    as_prepares = tuple(
        IndexedSignature(s.index, cluster.signers[s.index].sign(digest)) for s in sigs
    )
    wrong_phase = CommitCertificate(0, cert.view, 1, block_hash, as_prepares)
    assert not verify_certificate(wrong_phase, CHAIN, 0, 1, block_hash, vals, verify)
    assert PHASE_COMMIT != PHASE_PREPARE


def test_config_rejects_a_signer_that_is_not_the_validator() -> None:
    cluster = Cluster()
    with pytest.raises(InvariantViolation):
        cluster.replicas[0].__class__(
            ReplicaConfig(CHAIN, 0, cluster.validators, 0),
            FastSigner(b"intruder"),
            cluster.verify,
        )


def valid_messages() -> list[bytes]:
    """Real traffic of a few heights and a view change, to mutate."""
    cluster = Cluster()
    seen: list[bytes] = []
    for ops in ([1], [2], [3]):
        cluster.propose(ops)
        seen.extend(d for _, _, d in cluster.inbox)
        cluster.deliver()
    cluster.down.add(0)
    cluster.tick(10_000, 0)
    seen.extend(d for _, _, d in cluster.inbox)
    cluster.deliver()
    seen.extend(d for _, _, d in cluster.inbox)
    return seen


CORPUS = valid_messages()


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(0, 3), st.one_of(st.none(), st.integers(0, 9)))
def test_random_bytes_never_raise(data: bytes, to: int, sender: int | None) -> None:
    cluster = FUZZ_CLUSTER
    actions = cluster.step(to, MessageReceived(data, sender))
    assert all(not isinstance(a, Dropped) or a.reason for a in actions)


@settings(max_examples=400)
@given(
    st.sampled_from(range(len(CORPUS))),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 3),
)
def test_mutated_real_messages_never_raise(
    index: int, flips: list[tuple[int, int]], to: int
) -> None:
    data = bytearray(CORPUS[index])
    for position, value in flips:
        data[position % len(data)] = value
    FUZZ_CLUSTER.step(to, MessageReceived(bytes(data), None))


FUZZ_CLUSTER = Cluster()


def test_prepared_certificate_over_an_empty_validator_set_is_invalid_not_a_crash() -> None:
    from consensus.certificate import PreparedCertificate, verify_prepared

    prepared = PreparedCertificate(0, 1, b"\x01" * 32, b"\x02" * 32, bytes(64), ())
    # Before: primary_of(view, 0) divided by zero.
    assert verify_prepared(prepared, CHAIN, 0, [], lambda *_: True) is False
