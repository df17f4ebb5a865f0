"""A replica that timed out alone (cut off from its shard, issue 15 ``f-partitioned``)
and whose view change then timed out too, so that it went on to later views alone,
rejoins the others' view once it commits again: passively, under its vote floor."""

from __future__ import annotations

from consensus.actions import ViewChangeStarted
from consensus.certificate import PHASE_CHECKPOINT, PHASE_COMMIT
from consensus.events import SyncedBlock, SyncResult, Tick
from consensus.kernel.limits import OBSERVED_MESSAGE_BYTES_MAX
from consensus.messages import Vote, decode_message
from tests.support.consensus_harness import Cluster

PENDING = 0  # the cut-off replica holds work that arrived at time 0


def isolate_and_escalate(cluster: Cluster) -> int:
    """Replica 3 misses the COMMITs of height 1, times out, and its view change times
    out twice while nothing it sends arrives. Returns the time of the last tick."""
    cluster.propose([1])
    cluster.deliver(lambda d, s, m: s != 3 and not (
        d == 3 and isinstance(m, Vote) and m.phase == PHASE_COMMIT))
    assert cluster.heights() == [1, 1, 1, 0]
    replica = cluster.replicas[3]
    now = cluster.config(3).request_timeout_ms + 1
    cluster.step(3, Tick(now, PENDING))
    for _ in range(2):
        assert replica.vc_deadline is not None
        now = replica.vc_deadline
        cluster.step(3, Tick(now, PENDING))
    cluster.inbox.clear()  # cut off: none of its view changes arrived
    reasons = [(a.new_view, a.reason) for a in cluster.of_type(3, ViewChangeStarted)]
    assert reasons == [(1, "request_timeout"), (2, "new_view_timeout"),
                       (3, "new_view_timeout")]
    return now


def heal(cluster: Cluster, ops: list[int]) -> None:
    """The others commit the next height; replica 3 learns it is behind (their
    certificates) and fetches the blocks it missed (served from replica 0)."""
    cluster.propose(ops)
    cluster.deliver()
    request = cluster.sync_requests(3)[-1]
    cluster.step(3, SyncResult(tuple(
        SyncedBlock(h, *cluster.ledgers[0].blocks[h - 1])
        for h in range(request.from_height, request.to_height + 1))))
    cluster.deliver()


def test_a_replica_whose_view_change_timed_out_alone_rejoins_after_a_commit() -> None:
    cluster = Cluster()
    isolate_and_escalate(cluster)
    replica = cluster.replicas[3]
    assert (replica.view, replica.vc_target, replica.vote_floor) == (0, 3, 3)
    heal(cluster, [2])
    assert cluster.heights() == [2, 2, 2, 2]
    assert (replica.view, replica.vc_target, replica.vote_floor) == (0, None, 3)
    assert {r.view for r in cluster.replicas} == {0}
    # It follows the shard by certificate and never votes below its floor.
    cluster.log[3].clear()
    cluster.propose([3])
    cluster.deliver()
    assert cluster.heights() == [3, 3, 3, 3]
    sent = [decode_message(a.data, OBSERVED_MESSAGE_BYTES_MAX)
            for a in cluster.log[3] if hasattr(a, "data")]
    assert not any(isinstance(m, Vote) and m.phase != PHASE_CHECKPOINT for m in sent), (
        "voted below its floor")
    assert cluster.replicas[3].vc_target is None  # and stays out of view changes


def test_a_replica_that_rejoined_passively_votes_again_from_its_floor_on() -> None:
    """The others' view changes take the shard to the floor's view (here: the
    primary of view 0 falls silent, twice): from there it votes again."""
    cluster = Cluster()
    now = isolate_and_escalate(cluster)
    heal(cluster, [2])
    replica = cluster.replicas[3]
    assert (replica.view, replica.vc_target, replica.vote_floor) == (0, None, 3)
    cluster.down.add(0)
    for _ in range(6):  # view changes until one installs a view at or above its floor
        now += 4 * cluster.config(1).view_change_timeout_ms + 1
        cluster.tick(now, PENDING)
        cluster.deliver()
        if min(r.view for i, r in enumerate(cluster.replicas) if i != 0) >= 3:
            break
    views = [r.view for r in cluster.replicas[1:]]
    assert len(set(views)) == 1 and views[0] >= 3, views
    primary = cluster.replicas[1].primary()
    if primary == 0:
        return  # the silent replica leads that view: nothing more to show
    cluster.log[3].clear()
    cluster.propose([4], primary=primary)
    cluster.deliver()
    assert cluster.heights()[1:] == [3, 3, 3]
    sent = [decode_message(a.data, OBSERVED_MESSAGE_BYTES_MAX)
            for a in cluster.log[3] if hasattr(a, "data")]
    assert any(isinstance(m, Vote) and m.phase != PHASE_CHECKPOINT for m in sent)
