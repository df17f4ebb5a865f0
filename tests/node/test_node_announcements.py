"""Gossiped block announcements: only certified commits of genesis validators count."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog

from consensus.certificate import (
    PHASE_COMMIT,
    CommitCertificate,
    IndexedSignature,
    vote_digest,
)
from consensus.kernel.codec import encode
from consensus.kernel.errors import ShardnetError
from node.config import parse_config
from node.drops import DropLog
from node.finality import Finality
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.parts import SystemClock
from node.service import NodeService
from node.store.memory import MemoryStore
from node.wire import BlockAnnouncement
from scripts.cli.testnet.generate import TestnetSpec, generate, validator_key
from sharding.block import GENESIS_PREV_HASH, BlockHeader, block_hash
from sharding.genesis import load_genesis
from sharding.ledger import Ledger

CHAIN = "shardnet-local"


@pytest.fixture
def service(tmp_path: Path) -> NodeService:
    generate(TestnetSpec(shards=2, validators=4, accounts=10), tmp_path)
    genesis = load_genesis(tmp_path / "genesis.json")
    ledger = Ledger(genesis, 0)
    mempool = Mempool(txs_max=10, bytes_max=10_000, nonce_window=10, sender_txs_max=10,
                      committed_nonce=ledger.committed_nonce)
    store = MemoryStore()

    async def no_peers(shard: int, index: int, data: bytes, timeout_s: float) -> bytes:
        raise ShardnetError("no network in this test", reason="unknown_peer")

    metrics, log = NodeMetrics(), structlog.get_logger()
    replica = SimpleNamespace(me=0, view=0, primary=lambda: 0)  # for status()
    no_driver: Any = SimpleNamespace(wake=lambda: None, replica=replica, view_changes=0)
    hints: list[tuple[int, int]] = []
    no_relay: Any = SimpleNamespace(hints=hints,
                                    note_announced=lambda src, seq: hints.append((src, seq)))
    return NodeService(
        name="shard0-node0", config=parse_config("[node]\nshard = 0\nindex = 0\n", tmp_path),
        ledger=ledger, mempool=mempool, store=store, metrics=metrics, log=log,
        admission_pool=ThreadPoolExecutor(1), ledger_pool=ThreadPoolExecutor(1),
        forward=lambda channel, data: None, peers_connected=lambda: 0,
        finality=Finality(shard=0, index=0, validators_per_shard=[4, 4], store=store,
                          request=no_peers),
        driver=no_driver, relay=no_relay, shard_tips={}, clock=SystemClock(),
        drop=DropLog(log, metrics, SystemClock()),
    )


def announcement(height: int, signers: list[int], *, shard: int = 1,
                 wrong_key: bool = False, out_seqs: tuple[int, ...] = ()) -> bytes:
    header = BlockHeader(shard, height, 0, GENESIS_PREV_HASH, 0, 0, *(b"\x00" * 32,) * 5)
    digest = block_hash(header)
    vote = vote_digest(CHAIN, shard, 0, height, digest, PHASE_COMMIT)
    signatures = tuple(
        IndexedSignature(i, validator_key("other" if wrong_key else "shardnet", shard, i)
                         .sign(vote))
        for i in signers
    )
    cert = CommitCertificate(shard, 0, height, digest, signatures)
    return encode(BlockAnnouncement(shard, height, digest, encode(header), encode(cert),
                                    out_seqs))


def test_certified_announcement_records_the_shard_tip(service: NodeService) -> None:
    assert service.on_announcement(announcement(5, [0, 1, 3])) == ""
    assert service.shard_tips == {1: 5}
    assert service.status()["shard_tips"] == {"1": 5}


def test_announcement_without_quorum_is_dropped(service: NodeService) -> None:
    assert service.on_announcement(announcement(5, [0, 1])) == "bad_certificate"
    assert service.shard_tips == {}


def test_announcement_signed_by_non_validators_is_dropped(service: NodeService) -> None:
    assert service.on_announcement(announcement(5, [0, 1, 2], wrong_key=True)) == \
        "bad_certificate"


def test_malformed_announcement_is_dropped(service: NodeService) -> None:
    assert service.on_announcement(b"\x93garbage") == "malformed"


def test_announcement_of_unknown_shard_is_dropped(service: NodeService) -> None:
    assert service.on_announcement(announcement(5, [0, 1, 2], shard=7)) == "wrong_shard"


def test_the_gossip_validator_refuses_what_the_handler_would_drop(
        service: NodeService) -> None:
    """The node's gossip validator (run in the p2p thread, so the mesh does not relay
    invalid announcements) agrees with the handler's checks."""
    from node.node import Node

    node: Any = SimpleNamespace(genesis=service.ledger.genesis)
    assert Node._valid_announcement(node, "peer", announcement(5, [0, 1, 3]))
    for bad in (announcement(5, [0, 1]), announcement(5, [0, 1, 2], wrong_key=True),
                announcement(5, [0, 1, 2], shard=7), b"\x93garbage"):
        assert not Node._valid_announcement(node, "peer", bad)
        assert service.on_announcement(bad) != ""


def test_an_announcement_hands_the_relay_its_out_seq_hint_for_our_shard(
        service: NodeService) -> None:
    """``out_seqs[our shard]`` of a certified announcement of another shard reaches the
    relay (which pulls what a push did not bring); our own shard's never does."""
    relay: Any = service.relay
    assert service.on_announcement(announcement(5, [0, 1, 3], out_seqs=(7, 0))) == ""
    assert relay.hints == [(1, 7)]
    assert service.on_announcement(announcement(6, [0, 1, 3], shard=0, out_seqs=(0, 9))) == ""
    assert relay.hints == [(1, 7)]
    assert service.shard_tips == {1: 5, 0: 6}


def test_an_announcement_with_the_wrong_number_of_out_seqs_is_dropped(
        service: NodeService) -> None:
    relay: Any = service.relay
    assert service.on_announcement(announcement(5, [0, 1, 3], out_seqs=(7,))) == "malformed"
    assert service.on_announcement(announcement(5, [0, 1, 3], out_seqs=(7, 0, 0))) == \
        "malformed"
    assert relay.hints == [] and service.shard_tips == {}


def test_a_refused_announcement_gives_the_relay_no_hint(service: NodeService) -> None:
    relay: Any = service.relay
    assert service.on_announcement(announcement(5, [0, 1], out_seqs=(7, 0))) == \
        "bad_certificate"
    assert relay.hints == []
