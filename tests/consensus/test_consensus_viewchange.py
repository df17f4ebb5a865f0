"""View change and new view: Castro and Liskov, OSDI 1999, section 4.4 (TOCS 2002,
4.5), liveness rules of 4.5.2, and the byzantine cases of the issue."""

from __future__ import annotations

from consensus.actions import CommitBlock, ViewChangeStarted, ViewInstalled
from consensus.certificate import (
    PHASE_CHECKPOINT,
    PHASE_COMMIT,
    pre_prepare_digest,
    verify_certificate,
)
from consensus.events import MessageReceived, Tick
from consensus.kernel.codec import encode
from consensus.kernel.limits import OBSERVED_MESSAGE_BYTES_MAX
from consensus.messages import (
    NewView,
    PrePrepare,
    ViewChange,
    Vote,
    decode_message,
    payload_digest,
    signing_digest,
)
from tests.support.consensus_harness import CHAIN, Cluster

PENDING = 0  # every replica holds work that arrived at time 0


def time_out(cluster: Cluster, now: int) -> None:
    cluster.tick(now, PENDING)
    cluster.deliver()


def test_4_4_silent_primary_is_replaced_and_the_new_primary_commits() -> None:
    cluster = Cluster()
    cluster.down.add(0)
    time_out(cluster, cluster.config(1).request_timeout_ms + 1)
    for i in (1, 2, 3):
        assert cluster.replicas[i].view == 1
        assert ViewInstalled(1, 1) in cluster.log[i]
    block_hash = cluster.propose([5], primary=1)
    cluster.deliver()
    assert cluster.heights()[1:] == [1, 1, 1]
    (commit,) = cluster.of_type(2, CommitBlock)
    assert commit.block_hash == block_hash and commit.view == 1


def test_4_4_new_view_reproposes_the_prepared_block_at_the_same_height() -> None:
    cluster = Cluster()
    block_hash = cluster.propose([1, 2])
    # Every PREPARE arrives, no COMMIT does: replicas are prepared, none committed.
    cluster.deliver(lambda d, s, m: not (isinstance(m, Vote) and m.phase == PHASE_COMMIT))
    assert cluster.heights() == [0, 0, 0, 0]
    cluster.down.add(0)
    time_out(cluster, cluster.config(1).request_timeout_ms + 1)
    assert [r.view for r in cluster.replicas[1:]] == [1, 1, 1]
    assert cluster.heights()[1:] == [1, 1, 1]
    for i in (1, 2, 3):
        (commit,) = cluster.of_type(i, CommitBlock)
        assert commit.block_hash == block_hash
        assert commit.view == 1  # re-decided in the new view, same block
        assert verify_certificate(
            commit.certificate, CHAIN, 0, 1, block_hash, cluster.validators, cluster.verify
        )


def test_4_4_a_committed_block_survives_view_changes_when_one_replica_committed() -> None:
    cluster = Cluster()
    block_hash = cluster.propose([9])
    # Only replica 3 sees the COMMITs; the rest time out and change view.
    cluster.deliver(
        lambda d, s, m: (
            (isinstance(m, Vote) and (m.phase != PHASE_COMMIT or d == 3))
            or isinstance(m, PrePrepare)
        )
    )
    assert cluster.heights() == [0, 0, 0, 1]
    time_out(cluster, cluster.config(1).request_timeout_ms + 1)
    assert set(cluster.heights()) == {1}
    hashes = {c.block_hash for i in range(4) for c in cluster.of_type(i, CommitBlock)}
    assert hashes == {block_hash}


def test_4_4_view_change_timeouts_back_off_exponentially() -> None:
    cluster = Cluster()
    replica = cluster.replicas[1]
    timeout = cluster.config(1).view_change_timeout_ms
    cluster.step(1, Tick(2001, PENDING))
    assert replica.vc_target == 1
    first = replica.vc_deadline
    assert first is not None
    cluster.step(1, Tick(first, PENDING))
    assert replica.vc_target == 2
    second = replica.vc_deadline
    assert second is not None
    assert second - first == 2 * timeout
    cluster.step(1, Tick(second, PENDING))
    assert replica.vc_deadline is not None
    assert replica.vc_deadline - second == 4 * timeout


def test_4_5_2_a_replica_joins_when_f_plus_1_others_want_a_later_view() -> None:
    cluster = Cluster()
    # Replicas 1 and 2 time out; 3 and 0 have no pending work of their own.
    for i in (1, 2):
        cluster.step(i, Tick(5000, PENDING))
    cluster.deliver()
    assert ViewChangeStarted(1, "join") in cluster.log[3]
    assert all(r.view == 1 for r in cluster.replicas)


def test_4_4_primary_rotates_view_mod_n() -> None:
    cluster = Cluster(n=4)
    for view in range(1, 4):
        cluster.down = {view - 1}
        time_out(cluster, view * 100_000)
        live = [r for i, r in enumerate(cluster.replicas) if i != view - 1]
        assert {r.view for r in live} == {view}
        assert {r.primary() for r in live} == {view % 4}


def equivocate(cluster: Cluster) -> tuple[bytes, bytes]:
    """The primary (replica 0) signs two different valid blocks for height 1."""
    primary = cluster.signers[0]
    hashes = []
    for target, ops in ((1, [1]), (2, [2])):
        payload, block_hash = cluster.ledgers[0].build(1, 0, 0, ops)
        ph = payload_digest(payload)
        sig = primary.sign(pre_prepare_digest(CHAIN, 0, 0, 1, block_hash, ph))
        data = encode(PrePrepare(0, 0, 1, block_hash, ph, 0, sig, payload, None))
        cluster.inbox.append((target, 0, data))
        cluster.inbox.append((3, 0, data))
        hashes.append(block_hash)
    return hashes[0], hashes[1]


def test_byzantine_equivocating_primary_triggers_a_view_change_and_no_divergence() -> None:
    cluster = Cluster()
    cluster.down.add(0)  # replica 0's code is replaced by the hand-made equivocation
    equivocate(cluster)
    cluster.deliver()
    assert "equivocation" in cluster.dropped(3)
    assert ViewChangeStarted(1, "equivocation") in cluster.log[3]
    for now in range(2001, 60_000, 2000):
        time_out(cluster, now)
        if set(cluster.heights()[1:]) == {1}:
            break
    assert min(r.view for r in cluster.replicas[1:]) >= 1
    committed = {c.block_hash for i in (1, 2, 3) for c in cluster.of_type(i, CommitBlock)}
    assert set(cluster.heights()[1:]) == {1}
    assert len(committed) == 1, "two blocks at one height"


def test_byzantine_forged_votes_never_count_toward_a_quorum() -> None:
    cluster = Cluster()
    block_hash = cluster.propose([4])
    # Drop the genuine COMMITs of replicas 1 and 2 to replica 3 and forge them instead.
    cluster.deliver(
        lambda d, s, m: not (d == 3 and isinstance(m, Vote) and m.phase == PHASE_COMMIT)
    )
    for sender in (1, 2, 0):
        forged = Vote(0, PHASE_COMMIT, 0, 1, block_hash, sender, b"\x07" * 64)
        cluster.step(3, MessageReceived(encode(forged), sender))
    assert cluster.replicas[3].committed_height == 0
    assert cluster.dropped(3).count("bad_signature") == 3


def test_4_4_new_view_with_too_few_view_changes_is_rejected() -> None:
    cluster = Cluster()
    cluster.step(1, Tick(5000, PENDING))
    my_vc = next(m for d, s, m in cluster.inbox if s == 1)
    vc = decode_message(my_vc, OBSERVED_MESSAGE_BYTES_MAX)
    assert isinstance(vc, ViewChange)
    unsigned = NewView(0, 1, 1, (vc,), None, b"")
    sig = cluster.signers[1].sign(signing_digest(CHAIN, unsigned))
    bad = NewView(0, 1, 1, (vc,), None, sig)
    cluster.step(2, MessageReceived(encode(bad), 1))
    assert cluster.dropped(2)[-1] == "bad_new_view"
    assert cluster.replicas[2].view == 0


def test_restart_from_persisted_state_never_signs_a_conflicting_prepare() -> None:
    cluster = Cluster()
    cluster.down.add(0)
    first, second = equivocate(cluster)
    # Replica 1 gets block A and prepares it; then it crashes and restarts.
    dst, src, data = cluster.inbox.pop(0)
    assert dst == 1
    cluster.step(1, MessageReceived(data, src))
    assert cluster.persisted[1] is not None
    assert cluster.persisted[1].last_prepare is not None
    cluster.restart(1)
    cluster.inbox.clear()
    # The restarted replica now sees block B for the same (view, height).
    primary = cluster.signers[0]
    payload, block_hash = cluster.ledgers[0].build(1, 0, 0, [99])
    ph = payload_digest(payload)
    sig = primary.sign(pre_prepare_digest(CHAIN, 0, 0, 1, block_hash, ph))
    forged = PrePrepare(0, 0, 1, block_hash, ph, 0, sig, payload, None)
    cluster.step(1, MessageReceived(encode(forged), 0))
    sent = [decode_message(m, OBSERVED_MESSAGE_BYTES_MAX) for _, s, m in cluster.inbox if s == 1]
    assert not any(isinstance(m, Vote) for m in sent)
    assert cluster.replicas[1].last_records[2] is not None
    assert cluster.replicas[1].last_records[2].block_hash == first != second


def test_vote_floor_a_replica_that_timed_out_alone_rejoins_passively() -> None:
    cluster = Cluster()
    cluster.propose([1])
    cluster.deliver(
        lambda d, s, m: not (d == 3 and isinstance(m, Vote) and m.phase == PHASE_COMMIT)
    )
    assert cluster.heights() == [1, 1, 1, 0]
    cluster.step(3, Tick(5000, PENDING))
    replica = cluster.replicas[3]
    assert replica.vc_target == 1 and replica.vote_floor == 1
    cluster.deliver()  # its VIEW-CHANGE shows it behind: the others send their certificate
    assert cluster.heights() == [1, 1, 1, 1]
    assert (replica.view, replica.vc_target, replica.vote_floor) == (0, None, 1)
    assert {r.view for r in cluster.replicas} == {0}
    cluster.log[3].clear()
    cluster.propose([2])
    cluster.deliver()
    assert cluster.heights() == [2, 2, 2, 2]
    sent = [decode_message(a.data, OBSERVED_MESSAGE_BYTES_MAX)
            for a in cluster.log[3] if hasattr(a, "data")]
    assert not any(isinstance(m, Vote) and m.phase != PHASE_CHECKPOINT for m in sent), (
        "voted below its floor"
    )


def test_new_view_relayed_by_a_helper_brings_a_lagging_replica_into_the_view() -> None:
    """Issue 15 anomaly: a restarted primary was helped with the NEW-VIEW of view 1
    (signed by replica 1) on replica 2's and 3's links and dropped it as
    ``wrong_sender``. A NEW-VIEW is authenticated by its primary's signature, so
    whoever relays it is only the transport."""
    cluster = Cluster()
    cluster.down.add(0)
    time_out(cluster, cluster.config(1).request_timeout_ms + 1)
    assert [r.view for r in cluster.replicas[1:]] == [1, 1, 1]
    cluster.down.discard(0)  # back, still in view 0: it proposes there
    cluster.propose([7], primary=0)
    # The primary of view 1 cannot reach replica 0: only 2 and 3 can help it.
    cluster.deliver(lambda d, s, m: not (d == 0 and s == 1))
    assert cluster.replicas[0].view == 1
    assert ViewInstalled(1, 1) in cluster.log[0]
    assert "wrong_sender" not in cluster.dropped(0)


def test_other_messages_relayed_on_a_foreign_link_are_still_wrong_sender() -> None:
    cluster = Cluster()
    block_hash = cluster.propose([1])
    (pp_from_0,) = [data for dst, src, data in cluster.inbox if dst == 1]
    cluster.inbox.clear()
    cluster.step(1, MessageReceived(pp_from_0, 2))  # replica 2 passes on 0's PRE-PREPARE
    assert cluster.dropped(1) == ["wrong_sender"]
    assert block_hash not in {pp.block_hash for pp in cluster.replicas[1].pre_prepares.values()}
