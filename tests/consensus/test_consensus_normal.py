"""Normal-case operation: Castro and Liskov, OSDI 1999, section 4.2 (TOCS 2002, 4.3),
with PROTOCOL.md section 4's execute-then-vote rule."""

from __future__ import annotations

import pytest

from consensus.actions import Broadcast, CommitBlock, ExecuteBlock, RequestProposal
from consensus.certificate import (
    PHASE_COMMIT,
    PHASE_PREPARE,
    quorum_size,
    verify_certificate,
)
from consensus.events import BlockExecuted, MessageReceived, ProposalReady
from consensus.kernel.limits import OBSERVED_MESSAGE_BYTES_MAX
from consensus.messages import PrePrepare, Vote, decode_message
from tests.support.consensus_harness import CHAIN, Cluster


def votes_broadcast(cluster: Cluster, i: int, phase: int) -> list[Vote]:
    out = []
    for action in cluster.of_type(i, Broadcast):
        msg = decode_message(action.data, OBSERVED_MESSAGE_BYTES_MAX)
        if isinstance(msg, Vote) and msg.phase == phase:
            out.append(msg)
    return out


@pytest.mark.parametrize("n", [4, 7])
def test_4_2_three_phases_commit_a_block_with_a_verifiable_certificate(n: int) -> None:
    cluster = Cluster(n=n)
    block_hash = cluster.propose([1, 2, 3])
    cluster.deliver()
    assert cluster.heights() == [1] * n
    for i in range(n):
        (commit,) = cluster.of_type(i, CommitBlock)
        assert commit.block_hash == block_hash
        cert = commit.certificate
        assert len(cert.signatures) >= quorum_size(n)
        assert verify_certificate(cert, CHAIN, 0, 1, block_hash, cluster.validators, cluster.verify)
    roots = {ledger.state_root for ledger in cluster.ledgers}
    assert len(roots) == 1


def test_4_2_primary_is_asked_to_propose_and_backups_are_not() -> None:
    cluster = Cluster()
    cluster.tick(1)
    assert cluster.of_type(0, RequestProposal) == [RequestProposal(1, 0)]
    for i in (1, 2, 3):
        assert cluster.replicas[i].wants_proposal() is None
        assert cluster.of_type(i, RequestProposal) == []


def test_4_2_heights_follow_one_another() -> None:
    cluster = Cluster()
    for height in range(1, 6):
        cluster.propose([height])
        cluster.deliver()
        assert cluster.heights() == [height] * 4
    assert [len(ledger.blocks) for ledger in cluster.ledgers] == [5] * 4


def test_execute_then_vote_prepare_only_after_the_ledger_agrees() -> None:
    cluster = Cluster()
    cluster.auto_execute = False
    cluster.propose([7])
    dst, src, data = cluster.inbox.pop(0)
    actions = cluster.step(dst, MessageReceived(data, src))
    (execute,) = [a for a in actions if isinstance(a, ExecuteBlock)]
    assert votes_broadcast(cluster, dst, PHASE_PREPARE) == []
    ok, _ = cluster.ledgers[dst].execute(
        execute.view, execute.height, execute.payload, execute.block_hash
    )
    assert ok
    cluster.step(dst, BlockExecuted(0, 1, execute.block_hash, True))
    (prepare,) = votes_broadcast(cluster, dst, PHASE_PREPARE)
    assert prepare.block_hash == execute.block_hash


def test_execute_then_vote_wrong_root_gets_no_prepare_and_starts_a_view_change() -> None:
    cluster = Cluster()
    cluster.auto_execute = False
    cluster.propose([7])
    dst, src, data = cluster.inbox.pop(0)
    cluster.step(dst, MessageReceived(data, src))
    pp = decode_message(data, OBSERVED_MESSAGE_BYTES_MAX)
    assert isinstance(pp, PrePrepare)
    cluster.step(dst, BlockExecuted(0, 1, pp.block_hash, False, "state_root_mismatch"))
    assert votes_broadcast(cluster, dst, PHASE_PREPARE) == []
    assert "bad_block" in cluster.dropped(dst)
    assert cluster.replicas[dst].vc_target == 1


def test_4_2_primary_sends_no_prepare() -> None:
    cluster = Cluster()
    cluster.propose([1])
    cluster.deliver()
    assert votes_broadcast(cluster, 0, PHASE_PREPARE) == []
    assert len(votes_broadcast(cluster, 0, PHASE_COMMIT)) == 1


def test_4_2_commit_waits_for_a_quorum_of_commits() -> None:
    cluster = Cluster()
    cluster.propose([1])
    # Deliver everything except COMMITs addressed to replica 3 from replicas 1 and 2.
    cluster.deliver(
        lambda d, s, m: (
            not (d == 3 and s in (1, 2) and isinstance(m, Vote) and m.phase == PHASE_COMMIT)
        )
    )
    assert cluster.replicas[3].committed_height == 0
    assert cluster.heights()[:3] == [1, 1, 1]


def test_4_2_a_prepared_certificate_is_recorded_before_committing() -> None:
    cluster = Cluster()
    cluster.propose([1])
    cluster.deliver(lambda d, s, m: not (isinstance(m, Vote) and m.phase == PHASE_COMMIT))
    for i in (1, 2, 3):
        prepared = cluster.replicas[i].prepared
        assert prepared is not None and prepared.height == 1
        assert len(prepared.prepares) >= 2
    assert cluster.heights() == [0, 0, 0, 0]


def test_proposal_for_a_stale_height_is_ignored() -> None:
    cluster = Cluster()
    cluster.propose([1])
    cluster.deliver()
    actions = cluster.step(0, ProposalReady(1, 0, b"x", b"\x01" * 32))
    assert "unexpected_proposal" in [getattr(a, "reason", "") for a in actions]


def test_no_empty_blocks_the_shell_is_asked_only_once_per_height() -> None:
    cluster = Cluster()
    cluster.tick(1)
    cluster.tick(2)
    cluster.tick(3)
    assert len(cluster.of_type(0, RequestProposal)) == 1
    assert cluster.inbox == [] or all(
        not isinstance(decode_message(d, OBSERVED_MESSAGE_BYTES_MAX), PrePrepare)
        for _, _, d in cluster.inbox
    )
