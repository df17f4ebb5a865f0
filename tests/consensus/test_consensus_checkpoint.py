"""Checkpoints, watermarks and garbage collection (Castro and Liskov, OSDI 1999,
section 4.3; TOCS 2002, 4.4) and catch-up by certified block sync (PROTOCOL.md 4)."""

from __future__ import annotations

from consensus.actions import CommitBlock, RequestSync
from consensus.certificate import PHASE_CHECKPOINT, PHASE_COMMIT, verify_checkpoint
from consensus.events import MessageReceived, SyncedBlock, SyncResult, Tick
from consensus.kernel.codec import encode
from consensus.messages import Vote
from tests.support.consensus_harness import CHAIN, Cluster


def run_heights(cluster: Cluster, count: int, skip: set[int] | None = None) -> None:
    down = skip or set()
    for _ in range(count):
        cluster.down = set(down)
        cluster.propose([100 + cluster.replicas[0].committed_height])
        cluster.deliver()
    cluster.down = set()


def test_4_3_checkpoint_every_k_heights_becomes_stable_with_a_quorum_proof() -> None:
    cluster = Cluster(options={"checkpoint_interval": 2, "watermark_window": 8})
    run_heights(cluster, 5)
    for replica in cluster.replicas:
        proof = replica.ckpt.stable
        assert proof.height == 4
        assert verify_checkpoint(proof, CHAIN, 0, cluster.validators, cluster.verify)
        assert proof.block_hash == cluster.ledgers[0].blocks[3][1]


def test_4_3_stable_checkpoint_garbage_collects_votes_and_messages_below_it() -> None:
    cluster = Cluster(options={"checkpoint_interval": 2, "watermark_window": 8})
    run_heights(cluster, 4)
    for replica in cluster.replicas:
        assert all(key[2] > 4 for key in replica.votes)
        assert all(height > 4 for height in replica.ckpt.votes)
        assert replica.pre_prepares == {}


def test_4_3_messages_above_the_high_watermark_are_dropped() -> None:
    cluster = Cluster(options={"checkpoint_interval": 2, "watermark_window": 4})
    vote = Vote(0, PHASE_COMMIT, 0, 5, b"\x01" * 32, 1, b"\x00" * 64)
    cluster.step(2, MessageReceived(encode(vote), 1))
    assert cluster.dropped(2) == ["above_watermark"]


def test_4_3_primary_stops_proposing_at_the_high_watermark() -> None:
    cluster = Cluster(options={"checkpoint_interval": 2, "watermark_window": 3})
    # CHECKPOINT votes are lost: nothing becomes stable past height 0.
    for _ in range(3):
        cluster.propose([cluster.replicas[0].committed_height])
        cluster.deliver(lambda d, s, m: not (isinstance(m, Vote) and m.phase == PHASE_CHECKPOINT))
    assert cluster.heights() == [3] * 4
    assert cluster.replicas[0].wants_proposal() is None


def show_checkpoints(cluster: Cluster, to: int, senders: tuple[int, ...] = (0, 1, 2)) -> None:
    for i in senders:
        vote = cluster.replicas[i].ckpt.my_vote
        assert vote is not None
        cluster.step(to, MessageReceived(vote, i))


def test_4_3_checkpoint_votes_from_f_plus_1_replicas_ahead_trigger_sync() -> None:
    cluster = Cluster(options={"checkpoint_interval": 2, "watermark_window": 8})
    run_heights(cluster, 4, skip={3})
    assert cluster.replicas[3].committed_height == 0
    show_checkpoints(cluster, 3, senders=(0,))
    assert cluster.sync_requests(3) == []  # one replica may lie
    show_checkpoints(cluster, 3, senders=(1,))
    (request,) = cluster.sync_requests(3)
    assert (request.from_height, request.to_height) == (1, 4)


def serve_sync(cluster: Cluster, i: int, source: int, forge: bool = False) -> None:
    request = cluster.sync_requests(i)[-1]
    blocks = []
    for height in range(request.from_height, request.to_height + 1):
        payload, block_hash, cert = cluster.ledgers[source].blocks[height - 1]
        if forge:
            cert = type(cert)(cert.shard, cert.view, cert.height, b"\x05" * 32, cert.signatures)
        blocks.append(SyncedBlock(height, payload, block_hash, cert))
    cluster.step(i, SyncResult(tuple(blocks)))


def test_sync_accepts_fetched_blocks_only_with_a_valid_certificate() -> None:
    cluster = Cluster(options={"checkpoint_interval": 2, "watermark_window": 8})
    run_heights(cluster, 4, skip={3})
    show_checkpoints(cluster, 3)
    serve_sync(cluster, 3, source=0, forge=True)
    assert cluster.replicas[3].committed_height == 0
    assert "bad_certificate" in cluster.dropped(3)
    serve_sync(cluster, 3, source=0)
    assert cluster.replicas[3].committed_height == 4
    assert cluster.ledgers[3].state_root == cluster.ledgers[0].state_root
    assert [c.height for c in cluster.of_type(3, CommitBlock)] == [1, 2, 3, 4]


def test_a_lagging_replica_learns_it_is_behind_from_a_heartbeat() -> None:
    cluster = Cluster(options={"checkpoint_interval": 10, "watermark_window": 20})
    run_heights(cluster, 2, skip={3})
    assert cluster.replicas[3].committed_height == 0
    now = 0
    for _ in range(6):
        now += cluster.config(0).retransmit_ms
        for i in range(4):
            cluster.step(i, Tick(now))
        cluster.deliver()
    assert any(isinstance(a, RequestSync) for a in cluster.log[3])
