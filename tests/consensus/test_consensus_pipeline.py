"""Pipelining (``ReplicaConfig.pipeline_depth``, docs/CONSENSUS.md "Pipelining"): with
depth 2, height h+1 is pre-prepared, executed on the block in flight at h and prepared
while h is still committing; COMMITs stay in height order, so the view change's rule
(re-propose at C+1 only) stays the paper's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from consensus.actions import Action, CommitBlock, ExecuteBlock, RequestProposal, ViewChangeStarted
from consensus.certificate import (
    GENESIS_CHECKPOINT,
    PHASE_COMMIT,
    PHASE_PREPARE,
    PreparedCertificate,
    pre_prepare_digest,
    sorted_signatures,
)
from consensus.events import (
    BlockExecuted,
    Event,
    MessageReceived,
    ProposalReady,
    SyncedBlock,
    SyncResult,
    Tick,
)
from consensus.kernel.codec import encode
from consensus.kernel.errors import ShardnetError
from consensus.kernel.limits import OBSERVED_MESSAGE_BYTES_MAX
from consensus.messages import (
    CertNotice,
    Message,
    NewView,
    PrePrepare,
    ViewChange,
    Vote,
    decode_message,
    payload_digest,
    signing_digest,
)
from consensus.state import ReplicaConfig
from tests.support.consensus_harness import CHAIN, Cluster

PENDING = 0


@dataclass
class Pipelined(Cluster):
    """The paper-test cluster at ``pipeline_depth`` 2: the ledger executes and builds
    on the parent the replica names (speculative state on speculative state)."""

    def __post_init__(self) -> None:
        self.options = {"pipeline_depth": 2, **self.options}
        super().__post_init__()
        self.auto_execute = False

    def step(self, i: int, event: Event) -> list[Action]:
        actions = super().step(i, event)
        for action in actions:
            if isinstance(action, ExecuteBlock) and i not in self.down:
                ok, reason = self.ledgers[i].execute(
                    action.view, action.height, action.payload, action.block_hash,
                    action.parent,
                )  # fmt: skip
                self.step(
                    i, BlockExecuted(action.view, action.height, action.block_hash, ok, reason)
                )
        return actions

    def hold(self, keep: Callable[[int, int, Message], bool]) -> None:
        """Deliver until quiet what ``keep`` passes; hold the rest back (in order)."""
        held: list[tuple[int, int, bytes]] = []

        while self.inbox:
            dst, src, data = self.inbox.pop(0)
            msg = decode_message(data, OBSERVED_MESSAGE_BYTES_MAX)
            if dst in self.down:
                continue
            if not keep(dst, src, msg):
                held.append((dst, src, data))
                continue
            self.step(dst, MessageReceived(data, src))
        self.held = getattr(self, "held", []) + held

    def release_only(
        self, pick: Callable[[int, int, Message], bool],
        keep: Callable[[int, int, Message], bool] = lambda d, s, m: True,
    ) -> None:
        """Deliver the held messages ``pick`` passes, holding back what ``keep`` fails."""
        held, self.held = getattr(self, "held", []), []
        for dst, src, data in held:
            if pick(dst, src, decode_message(data, OBSERVED_MESSAGE_BYTES_MAX)):
                self.step(dst, MessageReceived(data, src))
            else:
                self.held.append((dst, src, data))
        self.hold(keep)

    def serve_sync(self, i: int) -> None:
        """Answer replica ``i``'s last RequestSync from a peer's stored blocks."""
        request = self.sync_requests(i)[-1]
        peer = next(p for p in request.peers if p not in self.down)
        blocks = tuple(
            SyncedBlock(h, *self.ledgers[peer].blocks[h - 1])
            for h in range(request.from_height, request.to_height + 1)
        )
        self.step(i, SyncResult(blocks))

    def release(self) -> None:
        self.inbox[:0] = getattr(self, "held", [])
        self.held = []
        self.deliver()

    def propose(self, ops: list[int], primary: int | None = None) -> bytes:
        p = primary if primary is not None else self.replicas[0].primary()
        wanted = self.replicas[p].wants_proposal()
        assert wanted is not None, f"replica {p} does not want to propose"
        height, view = wanted
        parent = self.replicas[p].chain_parent(height)
        payload, block_hash = self.ledgers[p].build(height, view, p, ops, parent)
        self.step(p, ProposalReady(height, view, payload, block_hash))
        return block_hash


def is_vote(m: Message, phase: int, height: int | None = None) -> bool:
    return isinstance(m, Vote) and m.phase == phase and (height is None or m.height == height)


def no_commits(d: int, s: int, m: Message) -> bool:
    return not is_vote(m, PHASE_COMMIT)


def sent_messages(cluster: Cluster, i: int) -> list[Message]:
    out = []
    for action in cluster.log[i]:
        data = getattr(action, "data", None)
        if isinstance(data, bytes):
            out.append(decode_message(data, OBSERVED_MESSAGE_BYTES_MAX))
    return out


def sent_votes(cluster: Cluster, i: int, phase: int) -> list[Vote]:
    """Distinct votes of one phase replica ``i`` signed (retransmissions once)."""
    out: list[Vote] = []
    for msg in sent_messages(cluster, i):
        if isinstance(msg, Vote) and msg.phase == phase and msg not in out:
            out.append(msg)
    return out


def committed(cluster: Cluster, i: int) -> list[tuple[int, bytes]]:
    return [(c.height, c.block_hash) for c in cluster.of_type(i, CommitBlock)]


def time_out(cluster: Cluster, now: int) -> None:
    cluster.tick(now, PENDING)
    cluster.deliver()


def test_depth_1_is_the_default_and_the_primary_waits_for_the_commit() -> None:
    cluster = Cluster()
    assert cluster.replicas[0].cfg.pipeline_depth == 1
    cluster.propose([1])
    cluster.deliver(no_commits)
    assert cluster.heights() == [0, 0, 0, 0]
    assert cluster.replicas[0].wants_proposal() is None


@pytest.mark.parametrize("depth", [0, 3])
def test_pipeline_depth_outside_1_to_the_checkpoint_interval_is_refused(depth: int) -> None:
    cluster = Cluster()
    with pytest.raises(ShardnetError, match="pipeline_depth"):
        ReplicaConfig(CHAIN, 0, cluster.validators, 0, checkpoint_interval=2,
                      watermark_window=8, pipeline_depth=depth)


def test_depth_2_second_height_is_proposed_executed_and_prepared_while_the_first_commits() -> None:
    cluster = Pipelined()
    first = cluster.propose([1])
    cluster.hold(no_commits)  # height 1 prepared everywhere, its COMMITs held back
    assert cluster.heights() == [0, 0, 0, 0]
    assert cluster.replicas[0].wants_proposal() == (2, 0)
    assert RequestProposal(2, 0) in cluster.log[0]
    second = cluster.propose([2])
    cluster.hold(no_commits)
    for i in (1, 2, 3):
        # Executed on the uncommitted block 1, and prepared, before anything committed.
        (execute,) = [a for a in cluster.of_type(i, ExecuteBlock) if a.height == 2]
        assert execute.parent == first and execute.block_hash == second
        assert [v.height for v in sent_votes(cluster, i, PHASE_PREPARE)] == [1, 2]
    for i in range(4):
        # COMMIT stays in height order: none for height 2 while height 1 is open.
        assert [v.height for v in sent_votes(cluster, i, PHASE_COMMIT)] == [1]
    assert cluster.replicas[0].wants_proposal() is None  # two heights in flight: full
    cluster.release()
    assert cluster.heights() == [2, 2, 2, 2]
    for i in range(4):
        assert committed(cluster, i) == [(1, first), (2, second)]
    assert len({ledger.state_root for ledger in cluster.ledgers}) == 1


def test_depth_2_heights_keep_following_one_another_two_at_a_time() -> None:
    cluster = Pipelined()
    cluster.propose([1])
    cluster.hold(no_commits)
    for height in range(2, 9):
        cluster.propose([height])
        # Height - 1 commits while height is pre-prepared and prepared.
        cluster.release_only(lambda d, s, m, h=height: is_vote(m, PHASE_COMMIT, h - 1),
                             keep=no_commits)
        assert cluster.heights() == [height - 1] * 4
        assert all(len(sent_votes(cluster, i, PHASE_PREPARE)) == height for i in (1, 2, 3))
    cluster.release()
    assert cluster.heights() == [8] * 4
    assert len({ledger.state_root for ledger in cluster.ledgers}) == 1


def test_depth_2_view_change_with_both_heights_prepared_reproposes_the_first() -> None:
    cluster = Pipelined()
    first = cluster.propose([1])
    cluster.deliver(no_commits)
    second = cluster.propose([2])
    cluster.deliver(no_commits)  # both heights prepared everywhere, nothing committed
    assert all(len(sent_votes(cluster, i, PHASE_PREPARE)) == 2 for i in (1, 2, 3))
    cluster.down.add(0)
    time_out(cluster, cluster.config(1).request_timeout_ms + 1)
    vcs = [m for i in (1, 2, 3) for m in sent_messages(cluster, i) if isinstance(m, ViewChange)]
    assert len(vcs) >= 3
    # A VIEW-CHANGE carries the prepared certificate of the committed height + 1 only:
    # nothing above it can have committed anywhere (COMMITs in height order).
    assert all(vc.prepared is not None and vc.prepared.height == 1 for vc in vcs)
    assert [r.view for r in cluster.replicas[1:]] == [1, 1, 1]
    assert cluster.heights()[1:] == [1, 1, 1]
    for i in (1, 2, 3):
        assert committed(cluster, i) == [(1, first)]
    # The second height was never committed; the new primary proposes it afresh.
    fresh = cluster.propose([2, 3], primary=1)
    cluster.deliver()
    assert fresh != second
    for i in (1, 2, 3):
        assert committed(cluster, i) == [(1, first), (2, fresh)]


def test_depth_2_second_height_prepared_survives_when_the_first_committed_at_one_replica(
) -> None:
    cluster = Pipelined()
    first = cluster.propose([1])
    only_3 = lambda d, s, m: (  # noqa: E731
        not is_vote(m, PHASE_COMMIT) or d == 3) and not isinstance(m, CertNotice)
    cluster.deliver(only_3)
    assert cluster.heights() == [0, 0, 0, 1]
    second = cluster.propose([2])
    # Replica 3 committed 1, so it prepares and COMMITs 2; the others see no COMMIT.
    cluster.deliver(lambda d, s, m: no_commits(d, s, m) and not isinstance(m, CertNotice))
    assert [v.height for v in sent_votes(cluster, 3, PHASE_COMMIT)] == [1, 2]
    assert cluster.heights() == [0, 0, 0, 1]
    cluster.down.add(0)
    time_out(cluster, cluster.config(1).request_timeout_ms + 1)
    for _ in range(3):
        time_out(cluster, cluster.now + cluster.config(1).retransmit_ms + 1)
    # NEW-VIEW: C = 1 (replica 3's certificate), block 2 re-proposed from its prepared
    # certificate: the block replica 3 may have helped commit is kept.
    for i in (1, 2, 3):
        assert committed(cluster, i) == [(1, first), (2, second)]


def test_depth_2_block_on_a_first_block_that_never_committed_is_dropped() -> None:
    cluster = Pipelined()
    cluster.propose([1])
    # Nobody prepares height 1 (its PREPAREs are lost); height 2 is prepared on it.
    cluster.deliver(lambda d, s, m: not is_vote(m, PHASE_PREPARE, 1) and no_commits(d, s, m))
    second = cluster.propose([2])
    cluster.deliver(lambda d, s, m: not is_vote(m, PHASE_PREPARE, 1) and no_commits(d, s, m))
    assert all(r.prepared is None for r in cluster.replicas)
    cluster.down.add(0)
    time_out(cluster, cluster.config(1).request_timeout_ms + 1)
    fresh1 = cluster.propose([7], primary=1)
    cluster.deliver()
    fresh2 = cluster.propose([8], primary=1)
    cluster.deliver()
    for i in (1, 2, 3):
        assert committed(cluster, i) == [(1, fresh1), (2, fresh2)]
        assert second not in {h for _, h in committed(cluster, i)}
    assert len({cluster.ledgers[i].state_root for i in (1, 2, 3)}) == 1


def test_depth_2_restart_mid_pipeline_never_signs_a_conflicting_second_prepare() -> None:
    cluster = Pipelined()
    first = cluster.propose([1])
    cluster.hold(no_commits)
    second = cluster.propose([2])
    cluster.hold(no_commits)
    state = cluster.persisted[2]
    assert state is not None and state.last_prepare is not None
    assert (state.last_prepare.height, state.last_prepare.block_hash) == (2, second)
    assert state.prepared is not None and state.prepared.block_hash == first
    cluster.held = [(d, s, m) for d, s, m in cluster.held if d != 2 and s != 2]
    cluster.restart(2)
    restarted = cluster.replicas[2]
    assert restarted.committed_height == 0 and restarted.prepared == state.prepared
    # The (byzantine) primary now shows the restarted replica another block at 2.
    primary = cluster.signers[0]
    pp1 = cluster.replicas[0].pre_prepares[(0, 1)]
    cluster.step(2, MessageReceived(encode(pp1), 0))
    payload, other = cluster.ledgers[0].build(2, 0, 0, [99], first)
    ph = payload_digest(payload)
    sig = primary.sign(pre_prepare_digest(CHAIN, 0, 0, 2, other, ph))
    forged = PrePrepare(0, 0, 2, other, ph, 0, sig, payload, None)
    cluster.step(2, MessageReceived(encode(forged), 0))
    assert any(a.height == 2 and a.block_hash == other for a in cluster.of_type(2, ExecuteBlock))
    votes = [decode_message(m, OBSERVED_MESSAGE_BYTES_MAX) for _, s, m in cluster.inbox if s == 2]
    assert not any(isinstance(v, Vote) and v.block_hash == other for v in votes)
    assert restarted.last_records[PHASE_PREPARE] == state.last_prepare
    # The others finish both heights; the restarted replica follows by certificate.
    cluster.inbox = [(d, s, m) for d, s, m in cluster.inbox if s != 2]
    cluster.release()
    assert [cluster.heights()[i] for i in (0, 1, 3)] == [2, 2, 2]
    for i in (0, 1, 3):
        assert committed(cluster, i) == [(1, first), (2, second)]
    for i in (0, 1, 3):
        cluster.step(i, Tick(cluster.now + 10 * cluster.config(i).retransmit_ms))
    cluster.deliver()
    cluster.serve_sync(2)
    assert committed(cluster, 2) == [(1, first), (2, second)]


def test_depth_2_equivocation_in_the_second_slot_changes_view_without_divergence() -> None:
    cluster = Pipelined()
    first = cluster.propose([1])
    cluster.deliver(no_commits)
    # The primary sends replica 1 one block at height 2 and replicas 2, 3 another,
    # both on block 1; replica 3 also gets the first one.
    primary = cluster.signers[0]
    blocks = []
    for ops in ([20], [21]):
        payload, block_hash = cluster.ledgers[0].build(2, 0, 0, ops, first)
        ph = payload_digest(payload)
        sig = primary.sign(pre_prepare_digest(CHAIN, 0, 0, 2, block_hash, ph))
        blocks.append(encode(PrePrepare(0, 0, 2, block_hash, ph, 0, sig, payload, None)))
    cluster.inbox += [(1, 0, blocks[0]), (3, 0, blocks[0]), (2, 0, blocks[1]), (3, 0, blocks[1])]
    cluster.deliver(no_commits)
    assert "equivocation" in cluster.dropped(3)
    assert ViewChangeStarted(1, "equivocation") in cluster.log[3]
    cluster.down.add(0)
    for now in range(2001, 60_000, 500):
        time_out(cluster, now)
        if min(cluster.heights()[1:]) >= 1 and cluster.replicas[1].wants_proposal() is None:
            break
    for i in (1, 2, 3):
        assert committed(cluster, i)[0] == (1, first)
    new_primary = cluster.replicas[1].primary()
    if cluster.replicas[new_primary].wants_proposal() is not None:
        cluster.propose([30], primary=new_primary)
        cluster.deliver()
    heights = {h: {b for i in (1, 2, 3) for hh, b in committed(cluster, i) if hh == h}
               for h in (1, 2)}
    assert all(len(hashes) <= 1 for hashes in heights.values()), "two blocks at one height"



def test_shardnet_simulate_runs_the_pipelined_simulator_and_the_pipelined_network() -> None:
    from click.testing import CliRunner

    from scripts.cli.simulate import simulate

    ok = CliRunner().invoke(simulate, ["--seeds", "2", "--start", "7", "--pipeline-depth", "2"])
    assert ok.exit_code == 0, ok.output
    assert "failed: []" in ok.output
    # The production nodes at consensus.pipeline_depth 2 (issue 16: the node pipelines).
    network = CliRunner().invoke(simulate, ["--seeds", "1", "--shards", "2", "--txs", "8",
                                            "--faults", "none", "--pipeline-depth", "2"])
    assert network.exit_code == 0, network.output


def test_depth_2_stale_prepared_block_kept_by_a_byzantine_replica_is_reproposed_at_most_once(
) -> None:
    """A PREPARE quorum formed at height 2 on a block 1 that then lost the view change
    (block A committed at 1 instead). Byzantine replica 1 keeps that prepared
    certificate and puts it in every VIEW-CHANGE; after its block failed once on the
    committed tip, the next primaries leave that view change out of their quorum."""
    cluster = Pipelined()
    lost_prepares = lambda d, s, m: (  # noqa: E731
        not is_vote(m, PHASE_PREPARE, 1) and no_commits(d, s, m))
    cluster.propose([1])
    cluster.deliver(lost_prepares)
    stale = cluster.propose([2])
    cluster.deliver(lost_prepares)
    pp = cluster.replicas[1].pre_prepares[(0, 2)]
    box = cluster.replicas[1].votes[(PHASE_PREPARE, 0, 2)]
    cert = PreparedCertificate(0, 2, stale, pp.payload_hash, pp.signature,
                               sorted_signatures({i: box[i][1] for i in (2, 3)}))
    # View 1 (replica 0 down): nothing prepared at 1, a fresh block A commits there.
    cluster.down.add(0)
    time_out(cluster, cluster.config(1).request_timeout_ms + 1)
    fresh1 = cluster.propose([7], primary=1)
    cluster.deliver()
    assert cluster.heights()[1:] == [1, 1, 1]
    cluster.down.discard(0)
    last_commit = cluster.replicas[1].last_cert

    def byzantine_view_change(view: int) -> bytes:
        unsigned = ViewChange(0, view, 1, GENESIS_CHECKPOINT, last_commit, cert, b"")
        sig = cluster.signers[1].sign(signing_digest(CHAIN, unsigned))
        return encode(ViewChange(0, view, 1, GENESIS_CHECKPOINT, last_commit, cert, sig,
                                 pp.payload))

    def swap_byzantine_view_changes() -> None:
        for k, (dst, src, data) in enumerate(cluster.inbox):
            msg = decode_message(data, OBSERVED_MESSAGE_BYTES_MAX)
            if src == 1 and isinstance(msg, ViewChange):
                cluster.inbox[k] = (dst, src, byzantine_view_change(msg.new_view))

    now = cluster.now
    for _ in range(40):
        now += cluster.config(0).retransmit_ms
        cluster.tick(now, PENDING)
        swap_byzantine_view_changes()
        while cluster.inbox:
            swap_byzantine_view_changes()
            dst, src, data = cluster.inbox.pop(0)
            cluster.step(dst, MessageReceived(data, src))
        primary = cluster.replicas[2].primary()
        if primary != 1 and cluster.replicas[primary].wants_proposal() == (2, cluster.replicas[
                primary].view):
            cluster.propose([8], primary=primary)
        if min(cluster.heights()[2:]) >= 2:
            break
    reproposals = {
        (m.view, m.pre_prepare.block_hash)
        for i in range(4) for m in sent_messages(cluster, i)
        if isinstance(m, NewView) and m.pre_prepare is not None and m.pre_prepare.height == 2
    }
    assert [h for _, h in reproposals].count(stale) == 1, reproposals
    for i in (2, 3):
        assert committed(cluster, i)[0] == (1, fresh1)
        assert committed(cluster, i)[1][1] != stale


def test_test_ledger_executes_on_the_named_parent_and_refuses_other_chains() -> None:
    """The simulator's ledger double at depth 2: speculative state on speculative state."""
    from consensus.certificate import CommitCertificate
    from consensus.sim.doubles import TestLedger

    primary, backup = TestLedger(), TestLedger()
    a_payload, a = primary.build(1, 0, 0, [1, 2])
    b_payload, b = primary.build(2, 0, 0, [2, 3], parent=a)  # op 2 is in flight in a
    assert backup.execute(0, 2, b_payload, b, a) == (False, "wrong_height")  # a unknown
    assert backup.execute(0, 1, a_payload, a) == (True, "")
    assert backup.execute(0, 2, b_payload, b) == (False, "wrong_height")  # not on the tip
    assert backup.execute(0, 2, b_payload, b, a) == (True, "")
    dup_payload, dup = primary.build(2, 0, 0, [9], parent=a)
    other_payload, other = TestLedger().build(1, 0, 0, [5])
    assert backup.execute(0, 1, other_payload, other) == (True, "")
    assert backup.execute(0, 2, dup_payload, dup, other) == (False, "wrong_prev_hash")
    cert = CommitCertificate(0, 0, 1, a, ())
    assert backup.commit(1, 0, a_payload, a, cert) == (1, 2)
    assert b in backup.speculative  # the block in flight above survives the commit
    assert backup.commit(2, 0, b_payload, b, CommitCertificate(0, 0, 2, b, ())) == (3,)
    assert backup.committed_ops == {1, 2, 3}
    assert backup.state_root == primary.speculative[b][1]
