"""Issue 16, deliverable 1, part A: a commit's storage write may overlap the next
height (``consensus.overlap_storage``; off by default, no gain measured).

With it on, the driver applies a committed block to the ledger at once and queues its storage
write (FIFO, height order); the announcements (``on_committed``: API status, events,
relay, gossip) follow the write; a vote's ``Persist`` is durable before the vote is
sent; a failed write halts the driver. The harness is the real replica, ledger and
driver of validator 1 (tests/node/test_node_driver_inputs.py) over a store whose
writes the test holds back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from consensus.certificate import (
    PHASE_COMMIT,
    CommitCertificate,
    IndexedSignature,
    PreparedCertificate,
    vote_digest,
)
from consensus.events import SyncedBlock
from consensus.kernel.codec import encode
from consensus.state import PersistentState, VoteRecord
from node.config import parse_config
from node.driver import needs_durable
from node.ledger_store import compute_block_commit, open_state
from node.mempool import PendingTx
from node.store.memory import MemoryStore
from node.store.records import BlockCommit
from scripts.cli.testnet.generate import DEFAULT_SEED
from sharding.accounts import derive_account
from sharding.genesis import Genesis
from sharding.ledger import Ledger, Proposal
from sharding.tx import Transfer, tx_hash
from tests.node.test_api_health import Harness as HealthHarness
from tests.node.test_node_driver_inputs import (
    KEYS,
    ME,
    SHARD,
    WALL_MS,
    FakeClock,
    Harness,
    cert_notice,
    genesis,
    make_driver,
    prepares,
    primary_proposal,
)
from tests.support.ledger import make_tx


class GatedStore(MemoryStore):
    """A memory store whose writes wait for ``gate``; ``started`` is set by each write."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.order: list[str] = []
        self.fail = False

    async def commit_block(self, commit: BlockCommit) -> None:
        self.started.set()
        await self.gate.wait()
        if self.fail:
            raise OSError("disk full")
        await super().commit_block(commit)
        self.order.append(f"block {commit.height}")

    async def put_metadata(self, items: Mapping[str, bytes]) -> None:
        self.started.set()
        await self.gate.wait()
        await super().put_metadata(items)
        self.order.append("metadata")


@pytest.fixture(params=[True])
async def gated(request: pytest.FixtureRequest
                ) -> AsyncIterator[tuple[Harness, GatedStore, asyncio.Task[None]]]:
    """The driver over a gated store; ``consensus.overlap_storage`` is the param."""
    g = genesis()
    store = GatedStore()
    store.gate.set()
    state, _ = await open_state(store, g, SHARD)
    store.gate.clear()
    overlap = "true" if request.param else "false"
    config = parse_config(f"[node]\nshard = {SHARD}\nindex = {ME}\n"
                          f"[consensus]\noverlap_storage = {overlap}\n")
    harness = make_driver(config, Ledger(g, SHARD, state), store, FakeClock())
    task = asyncio.ensure_future(harness.driver.run())
    try:
        yield harness, store, task
    finally:
        store.gate.set()
        await harness.driver.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def chain(g: Genesis, heights: int) -> list[Proposal]:
    """Blocks 1..heights of validator 0 (view 0), one transfer each."""
    ledger = Ledger(g, SHARD)
    sender = derive_account("load", 0)
    blocks = []
    for h in range(1, heights + 1):
        tx = make_tx(sender, h - 1, Transfer(derive_account("load", 1).public_key, 0, 1))
        proposal = ledger.propose([tx], [], height=h, view=0, time_ms=WALL_MS + h,
                                  proposer=0, txs_max=10)
        ledger.commit(proposal.payload, proposal.block_hash, h)
        blocks.append(proposal)
    return blocks


def cert_at(g: Genesis, height: int, block_hash: bytes) -> CommitCertificate:
    digest = vote_digest(g.chain_id, SHARD, 0, height, block_hash, PHASE_COMMIT)
    return CommitCertificate(SHARD, 0, height, block_hash,
                             tuple(IndexedSignature(i, KEYS[i].sign(digest)) for i in (0, 2, 3)))


async def until(condition: object, what: str) -> None:
    """Poll ``condition()`` between loop turns, bounded (no sleep as synchronisation:
    each turn yields to the driver; the bound only turns a hang into a failure)."""
    async def loop() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0)
    try:
        await asyncio.wait_for(loop(), 20.0)
    except TimeoutError:
        raise AssertionError(f"not {what} within 20 s") from None


async def test_commits_apply_at_once_and_reach_the_store_in_order_before_announcing(
        gated: tuple[Harness, GatedStore, asyncio.Task[None]]) -> None:
    """Two certified blocks synced at once: the ledger applies both while the first
    write is held (the next height does not wait for storage); nothing is announced
    before its block is stored; the store receives them in height order."""
    node, store, _ = gated
    g = node.ledger.genesis
    blocks = chain(g, 2)
    certs = [cert_at(g, h, b.block_hash) for h, b in enumerate(blocks, 1)]
    node.syncer.blocks = tuple(SyncedBlock(h, b.payload, b.block_hash, c)
                               for h, (b, c) in enumerate(zip(blocks, certs, strict=True), 1))
    node.driver.deliver(cert_notice(g, certs[1], 2, KEYS[2]), 2)
    await until(lambda: node.ledger.height == 2, "apply both blocks")
    # Block 1's write is held: block 2 is applied (the back-pressure lets one commit
    # apply while the previous one is stored), nothing is stored or announced.
    assert store.latest_height is None
    assert node.committed == []
    assert node.driver.writes_pending >= 1
    store.gate.set()
    await until(lambda: len(node.committed) == 2, "announce both blocks")
    assert [c.height for c in node.committed] == [1, 2]
    assert [o for o in store.order if o.startswith("block")] == ["block 1", "block 2"]
    assert store.latest_height == 2


@pytest.mark.parametrize("gated", [False], indirect=True)
async def test_by_default_the_next_commit_waits_for_the_previous_write(
        gated: tuple[Harness, GatedStore, asyncio.Task[None]]) -> None:
    """``consensus.overlap_storage`` off (the default): block 1 is applied, and nothing
    else happens in the driver until it is stored."""
    node, store, _ = gated
    g = node.ledger.genesis
    blocks = chain(g, 2)
    certs = [cert_at(g, h, b.block_hash) for h, b in enumerate(blocks, 1)]
    node.syncer.blocks = tuple(SyncedBlock(h, b.payload, b.block_hash, c)
                               for h, (b, c) in enumerate(zip(blocks, certs, strict=True), 1))
    node.driver.deliver(cert_notice(g, certs[1], 2, KEYS[2]), 2)
    await until(lambda: store.started.is_set(), "start block 1's write")
    for _ in range(50):  # the driver gets every chance to apply block 2 early
        await asyncio.sleep(0)
    assert node.ledger.height == 1
    store.gate.set()
    await until(lambda: len(node.committed) == 2, "store and announce both blocks")
    assert [o for o in store.order if o.startswith("block")] == ["block 1", "block 2"]


async def test_a_vote_is_sent_only_after_its_persist_is_durable(
        gated: tuple[Harness, GatedStore, asyncio.Task[None]]) -> None:
    """A PRE-PREPARE executed ok: the PREPARE's vote record goes to the store first;
    while that write is held, no PREPARE leaves; once stored, it is sent."""
    node, store, _ = gated
    proposal, pre_prepare = primary_proposal(node.ledger.genesis, WALL_MS)
    node.driver.deliver(pre_prepare, 0)
    await until(lambda: store.started.is_set(), "start the vote's write")
    for _ in range(50):  # the driver gets every chance to send early
        await asyncio.sleep(0)
    assert prepares(node) == []
    store.gate.set()
    await node.wait_for(lambda: prepares(node), "send the PREPARE")
    assert store.order[0] == "metadata"
    assert {v.block_hash for v in prepares(node)} == {proposal.block_hash}


async def test_a_failed_write_halts_the_driver(
        gated: tuple[Harness, GatedStore, asyncio.Task[None]]) -> None:
    node, store, task = gated
    g = node.ledger.genesis
    (block,) = chain(g, 1)
    cert = cert_at(g, 1, block.block_hash)
    node.syncer.blocks = (SyncedBlock(1, block.payload, block.block_hash, cert),)
    store.fail = True
    node.driver.deliver(cert_notice(g, cert, 2, KEYS[2]), 2)
    await until(lambda: store.started.is_set(), "start the commit's write")
    store.gate.set()
    with pytest.raises(OSError, match="disk full"):
        await asyncio.wait_for(task, 20.0)
    assert node.committed == []


def test_only_a_persist_recording_a_vote_view_or_prepared_certificate_holds_sends() -> None:
    base = PersistentState()
    record = VoteRecord(0, 1, b"\x01" * 32)
    commit_only = msgspec.structs.replace(base, committed_height=1,
                                          committed_hash=b"\x02" * 32)
    assert needs_durable(None, commit_only)
    assert not needs_durable(base, commit_only)
    assert needs_durable(base, msgspec.structs.replace(base, last_prepare=record))
    assert needs_durable(base, msgspec.structs.replace(base, last_commit=record))
    assert needs_durable(base, msgspec.structs.replace(base, view=1))
    assert needs_durable(base, msgspec.structs.replace(base, vote_floor=1))
    prepared = PreparedCertificate(0, 1, b"\x01" * 32, b"\x03" * 32, b"\x04" * 64, ())
    with_prepared = msgspec.structs.replace(base, prepared=prepared)
    assert needs_durable(base, with_prepared)
    # A commit that drops the prepared certificate it committed: nothing to hold.
    assert not needs_durable(with_prepared, commit_only)


async def applied_not_stored(tmp_path: Path) -> tuple[HealthHarness, bytes, Proposal, Any]:
    """A node whose pool held one transfer, now in a block applied to the ledger
    (``on_applied``) whose storage write has not happened yet."""
    health = HealthHarness(tmp_path)
    service, ledger, mempool = health.service, health.ledger, health.mempool
    await open_state(service.store, ledger.genesis, 0)  # initializes the store
    sender = derive_account(DEFAULT_SEED, 0)  # funded in the generated genesis
    tx = make_tx(sender, 0, Transfer(sender.public_key, 0, 1))
    digest = tx_hash(tx)
    mempool.add(PendingTx(tx_hash=digest, sender=sender.public_key, nonce=0,
                          size_bytes=len(encode(tx)), arrival_ms=health.clock.now, tx=tx))
    proposal = ledger.propose([tx], [], height=1, view=0, time_ms=WALL_MS, proposer=0,
                              txs_max=10)
    committed = ledger.commit(proposal.payload, proposal.block_hash, 1)
    service.on_applied(committed)
    return health, digest, proposal, committed


async def test_a_transaction_applied_but_not_stored_is_pending_never_rejected(
        tmp_path: Path) -> None:
    """Between the ledger applying a block and its write (``on_applied`` ..
    ``on_committed``), the mempool may drop the block's transactions as ``nonce_used``
    (a housekeeping pass, a proposal's rejections): ``/v1/txs/{hash}`` answers pending
    until the block is stored, then committed; never rejected."""
    health, digest, proposal, committed = await applied_not_stored(tmp_path)
    service, ledger, mempool = health.service, health.ledger, health.mempool
    sender = derive_account(DEFAULT_SEED, 0)
    for removed in mempool.remove_stale([sender.public_key]):  # what expire() does
        service._remember_rejected(removed.tx.tx_hash, removed.reason, "")
    assert digest not in mempool
    assert (await service.tx_status(digest) or {})["status"] == "pending"
    cert = cert_at(ledger.genesis, 1, proposal.block_hash)
    await service.store.commit_block(compute_block_commit(
        committed.block, committed.result, encode(cert)))
    service.on_committed(committed, cert)
    assert (await service.tx_status(digest) or {})["status"] in ("committed", "finalized")


async def test_housekeeping_between_apply_and_store_reports_no_expiry_and_keeps_latency(
        tmp_path: Path) -> None:
    """A housekeeping pass that finds an applied block's transaction (the ledger's nonce
    moved, the block not stored yet) drops it as ``nonce_used`` without logging it as
    ``mempool.expired``, and its commit latency is still observed once it is stored."""
    health, digest, proposal, committed = await applied_not_stored(tmp_path)
    service, ledger, mempool = health.service, health.ledger, health.mempool
    latency = service.metrics.commit_latency
    before = latency.collect()[0].samples
    count_before = next(s.value for s in before if s.name.endswith("_count"))
    with capture_logs() as logs:
        service.housekeeping_pass()
    assert digest not in mempool  # dropped as nonce_used ...
    assert not [e for e in logs if e["event"] == "mempool.expired"]  # ... not "expired"
    cert = cert_at(ledger.genesis, 1, proposal.block_hash)
    await service.store.commit_block(compute_block_commit(
        committed.block, committed.result, encode(cert)))
    service.on_committed(committed, cert)
    after = latency.collect()[0].samples
    assert next(s.value for s in after if s.name.endswith("_count")) == count_before + 1
