"""The node shell: one validator made of parts (``node/parts.py``).

``Node`` receives everything concrete (p2p, store, clock, block execution, thread
pools, randomness) and reads no file; ``start`` builds the pieces that are its own
(ledger, mempool, replica, driver, relay, service), wires them together and starts
them; ``stop`` undoes it. The production parts and the ``shardnet node`` command
are in ``node/main.py``; a simulation gives in-memory parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web

from consensus.certificate import CommitCertificate
from consensus.kernel.codec import decode, encode
from consensus.kernel.crypto import VERIFY_BACKEND, KeyPair, verify_signature
from consensus.kernel.errors import ShardnetError
from consensus.kernel.limits import REQUEST_BYTES_MAX
from consensus.replica import Replica
from consensus.state import PersistentState, ReplicaConfig
from node.api import build_app
from node.config import ConfigError, NodeConfig
from node.defaults import API_KEEPALIVE_IDLE_S
from node.driver import META_REPLICA, ConsensusDriver
from node.drops import DropLog
from node.faults.byzantine import Byzantine
from node.faults.endpoint import FaultEndpoint
from node.faults.metrics import FaultMetrics
from node.faults.state import FaultState, names_of_validators
from node.finality import Finality
from node.ledger_store import open_state
from node.mempool import Mempool
from node.metrics import NodeMetrics, P2PCollector
from node.p2p.config import peer_id_from_public_key
from node.parts import (
    OFFLOAD_POOLS,
    NodeParts,
)
from node.relay import ReceiptRelay, RelaySettings
from node.service import NodeService, check_announcement
from node.sync import SyncCheck, SyncClient, SyncLimits, SyncServer
from node.wire import (
    CHANNEL_ANNOUNCE,
    CHANNEL_CONSENSUS,
    CHANNEL_RECEIPTS,
    CHANNEL_TXS,
    TOPIC_BLOCKS,
    ReceiptsRequest,
    ReceiptStatusRequest,
    Request,
)
from sharding.block import GENESIS_PREV_HASH, block_hash
from sharding.genesis import Genesis
from sharding.inbound import InboundPool
from sharding.ledger import Committed, Ledger
from sharding.parallel import ExecutionStats

DRIVER_STOP_WAIT_S = 10


def freeze_start_up_heap() -> int:
    """Move every object alive once the node has started (modules, genesis, state, the
    libp2p host: ~125,000 objects) out of the collector's reach, once per process; the
    number of objects frozen.

    Issue 16: a full (generation 2) collection scanned them all, 75-100 ms of CPU on the
    2-core machine and 0.3-0.7 s of wall clock under load, during which the whole node
    (its p2p thread too: the collector holds the GIL) stood still; each node of a fresh
    2 x 4 testnet had one a few seconds after start-up, in the benchmark's first steps,
    and more as the heap grew. Frozen objects are still freed by reference counting;
    only garbage cycles among them would stay (``gc.collect()`` first leaves none from
    start-up). Later collections scan what was allocated since."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
    return gc.get_freeze_count()


def node_name(config: NodeConfig) -> str:
    return config.node.name or f"shard{config.node.shard}-node{config.node.index}"


def check_identity(config: NodeConfig, genesis: Genesis, key: KeyPair) -> None:
    """The configured shard and index exist in genesis and the key is that validator's."""
    node = config.node
    if node.shard >= genesis.num_shards:
        raise ConfigError(f"$.node.shard: {node.shard} but genesis has "
                          f"{genesis.num_shards} shards")
    validators = genesis.validators[node.shard]
    if node.index >= len(validators):
        raise ConfigError(f"$.node.index: {node.index} but shard has {len(validators)}")
    if validators[node.index].public_key != key.public_key:
        raise ConfigError("node key is not the genesis key of this validator")


@dataclass(slots=True)
class Running:
    """The pieces of a started node."""

    ledger: Ledger
    replica: Replica
    driver: ConsensusDriver
    relay: ReceiptRelay
    service: NodeService


class Node:
    def __init__(self, config: NodeConfig, genesis: Genesis, key: KeyPair,
                 parts: NodeParts, faults: FaultState | None = None) -> None:
        """``faults``: injected faults for tests (a simulation sets them directly);
        None and ``[faults] enabled`` makes a state the control endpoint changes."""
        check_identity(config, genesis, key)
        self.config = config
        self.genesis = genesis
        self.key = key
        self.parts = parts
        self.p2p = parts.p2p
        self.store = parts.store
        self.clock = parts.clock
        node = config.node
        self.name = node_name(config)
        self.log = structlog.get_logger().bind(node=self.name, shard=node.shard)
        self.validators = genesis.validators[node.shard]
        self.metrics = NodeMetrics()
        self.drop = DropLog(self.log, self.metrics, parts.clock)
        self.metrics.registry.register(P2PCollector(parts.p2p.stats_snapshot))
        self._validator_peer: dict[tuple[int, int], str] = {}  # (shard, index) -> peer id
        self._peer_index: dict[str, int] = {}  # validators of our shard
        for shard_validators in genesis.validators:
            for validator in shard_validators:
                if validator.public_key == key.public_key:
                    continue
                peer = peer_id_from_public_key(validator.public_key)
                self._validator_peer[(validator.shard, validator.index)] = peer
                if validator.shard == node.shard:
                    self._peer_index[peer] = validator.index
        self._sync_limits = SyncLimits(batch_blocks_max=config.consensus.sync_batch_blocks_max,
                                       frame_bytes_max=config.p2p.frame_bytes_max)
        self._sync_server = SyncServer(parts.store, node.shard, self._sync_limits, self.drop)
        self._pools = {name: parts.offload(name) for name in OFFLOAD_POOLS}
        # Block execution's worker processes live as long as the node (issue 7).
        self.executor, self._close_executor = parts.executor(self._on_executed)
        self._running: Running | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}  # driver, housekeeping, relay
        self._http: web.AppRunner | None = None
        self.api_url = ""
        self.faults = faults
        if faults is None and config.faults.enabled:
            self.faults = FaultState(
                names_of_validators(genesis.validators, key.public_key, peer_id_from_public_key),
                seed=parts.rng.getrandbits(64))
        self.byzantine: Byzantine | None = None
        self._fault_endpoint: FaultEndpoint | None = None
        if self.faults is not None:
            self._arm_faults(self.faults)

    @property
    def running(self) -> Running:
        if self._running is None:  # our bug: handlers are registered by start()
            raise RuntimeError(f"{self.name} is not started")
        return self._running

    @property
    def service(self) -> NodeService:
        """What clients use (the HTTP API, or a simulator directly)."""
        return self.running.service

    # -- faults (tests only; node/faults/) ---------------------------------------------

    def _arm_faults(self, faults: FaultState) -> None:
        """Hook the fault state into p2p, the send path, the relay and sync serving."""
        consensus = self.config.consensus
        self._fault_metrics = FaultMetrics(self.metrics.registry)
        self.byzantine = Byzantine(
            faults, key=self.key, chain_id=self.genesis.chain_id, shard=self.config.node.shard,
            me=self.config.node.index, validators=len(self.validators),
            message_bytes_max=consensus.block_bytes_max + 64 * 1024,
            block_bytes_max=consensus.block_bytes_max, log=self.log,
            count=self._fault_metrics.acts)
        self._sync_server.faults = self.byzantine
        self.p2p.set_link_filter(faults)
        faults.on_change = self._on_faults_changed
        self._on_faults_changed(faults.snapshot(), log=False)

    def _on_faults_changed(self, snapshot: dict[str, object], log: bool = True) -> None:
        self._fault_metrics.set(snapshot)
        if log:
            self._fault_metrics.changes.inc()
            self.log.warning("faults.changed", **snapshot)

    # -- start-up --------------------------------------------------------------------

    async def _open_ledger(self) -> tuple[Ledger, PersistentState | None]:
        shard = self.config.node.shard
        state, latest = await open_state(self.store, self.genesis, shard)
        height, tip = ((0, GENESIS_PREV_HASH) if latest is None
                       else (latest.header.height, block_hash(latest.header)))
        ledger = Ledger(self.genesis, shard, state, height, tip,
                        block_bytes_max=self.config.consensus.block_bytes_max,
                        tip_time_ms=None if latest is None else latest.header.time_ms,
                        executor=self.executor)
        persisted = None
        raw = await self.store.get_metadata(META_REPLICA)
        if raw is not None:
            persisted = decode(raw, PersistentState, 64 * 1024 * 1024)
        self.metrics.height.set(ledger.height)
        return ledger, persisted

    def _replica(self, persisted: PersistentState | None) -> Replica:
        consensus = self.config.consensus
        config = ReplicaConfig(
            chain_id=self.genesis.chain_id, shard=self.config.node.shard,
            validators=tuple(v.public_key for v in self.validators),
            index=self.config.node.index,
            checkpoint_interval=consensus.checkpoint_interval,
            watermark_window=max(4 * consensus.checkpoint_interval, 40),
            request_timeout_ms=consensus.request_timeout_ms,
            view_change_timeout_ms=consensus.view_change_timeout_ms,
            message_bytes_max=consensus.block_bytes_max + 64 * 1024,
            pipeline_depth=consensus.pipeline_depth,
        )
        return Replica(config, self.key, verify_signature, persisted,
                       now_ms=self.clock.monotonic_ms())

    def _relay_settings(self) -> RelaySettings:
        relay = self.config.relay
        return RelaySettings(
            poll_interval_ms=relay.poll_interval_ms, idle_poll_ms=relay.idle_poll_ms,
            request_timeout_ms=relay.request_timeout_ms,
            bundle_receipts_max=relay.bundle_receipts_max,
            serve_receipts_max=relay.serve_receipts_max,
            frame_bytes_max=self.config.p2p.frame_bytes_max)

    async def start(self) -> None:
        """Open the ledger from the store, start p2p, the driver, the relay, the
        housekeeping and (``serve_http``) the HTTP API."""
        ledger, persisted = await self._open_ledger()
        running = self._running = self._assemble(ledger, persisted)
        p2p, replica = self.p2p, running.replica
        p2p.on_message(self._on_p2p_message)
        p2p.set_request_handler(self._serve_request)
        p2p.subscribe(TOPIC_BLOCKS, self._on_block_announcement,
                      validator=self._valid_announcement)
        await p2p.start()
        if self.parts.serve_http:
            await self._start_http(running.service)
        if self.config.faults.enabled and self.faults is not None:
            self._fault_endpoint = FaultEndpoint(self.faults, Path(self.config.home),
                                                 self.config.faults.port)
            await self._fault_endpoint.start()
            self.log.warning("faults.enabled", url=self._fault_endpoint.url)
        self.metrics.view.set(replica.view)
        self.metrics.is_primary.set(int(replica.primary() == replica.me))
        self._tasks = {"driver": asyncio.ensure_future(running.driver.run()),
                       "housekeeping": asyncio.ensure_future(running.service.housekeeping()),
                       "relay": asyncio.ensure_future(running.relay.run())}
        listen = getattr(p2p, "listen_addrs", [])  # the libp2p host's; not in P2PAPI
        self.log.info("node.started", height=ledger.height, view=replica.view,
                      api=self.api_url, p2p=listen, peer_id=p2p.peer_id, pid=os.getpid(),
                      verify_backend=VERIFY_BACKEND, heap_frozen=freeze_start_up_heap())

    def _assemble(self, ledger: Ledger, persisted: PersistentState | None) -> Running:
        """The node's own pieces, wired to each other and to the parts."""
        config, p2p = self.config, self.p2p
        mempool = Mempool(
            txs_max=config.mempool.txs_max, bytes_max=config.mempool.bytes_max,
            nonce_window=config.mempool.nonce_window,
            sender_txs_max=config.mempool.sender_txs_max,
            committed_nonce=ledger.committed_nonce,
            gapped_txs_max=config.mempool.gapped_txs_max,
            gapped_sender_txs_max=config.mempool.gapped_sender_txs_max,
        )
        inbound = InboundPool()
        shard_tips: dict[int, int] = {}
        replica = self._replica(persisted)
        syncer = SyncClient(shard=config.node.shard, me=config.node.index,
                            validators=len(self.validators), request=self._request,
                            limits=self._sync_limits, height=lambda: ledger.height,
                            metrics=self.metrics, log=self.log, drop=self.drop,
                            check=SyncCheck(
                                chain_id=self.genesis.chain_id, shard=config.node.shard,
                                validators=tuple(v.public_key for v in self.validators),
                                verify=verify_signature,
                                block_bytes_max=config.consensus.block_bytes_max),
                            rng=self.parts.rng, clock=self.clock, pool=self._pools["ledger"])
        driver = ConsensusDriver(
            config=config, replica=replica, ledger=ledger, store=self.store, mempool=mempool,
            metrics=self.metrics, log=self.log, send=self._send, syncer=syncer,
            on_committed=self._on_committed,
            on_applied=lambda committed: self.service.on_applied(committed),
            on_rejected=lambda rejected: self.service.on_rejected(rejected),
            ledger_pool=self._pools["ledger"], inbound=inbound, clock=self.clock,
            drop=self.drop,
        )
        relay = ReceiptRelay(
            ledger=ledger, index=config.node.index, pool=inbound, store=self.store,
            metrics=self.metrics, log=self.log, send=self._send_to, request=self._request_to,
            verify_pool=self._pools["relay"], shard_tips=shard_tips, on_pooled=driver.wake,
            settings=self._relay_settings(), clock=self.clock, drop=self.drop,
        )
        service = NodeService(
            name=self.name, config=config, ledger=ledger, mempool=mempool, store=self.store,
            metrics=self.metrics, log=self.log, admission_pool=self._pools["admission"],
            ledger_pool=self._pools["ledger"], forward=self._send_to_shard,
            peers_connected=lambda: len(p2p.connected_peers()),
            finality=Finality(shard=config.node.shard, index=config.node.index,
                              validators_per_shard=[len(v) for v in self.genesis.validators],
                              store=self.store, request=self._request_to),
            driver=driver, relay=relay, shard_tips=shard_tips, clock=self.clock,
            drop=self.drop, send_to=self._send, shard_peers=self._shard_peers_connected,
        )
        relay.faults = self.byzantine
        if self.byzantine is not None:  # fabricate_inbound reads both (tests only)
            self.byzantine.attach(ledger, inbound)
        return Running(ledger, replica, driver, relay, service)

    async def _start_http(self, service: NodeService) -> None:
        config = self.config
        requests = self.metrics.api_requests
        app = build_app(service, body_bytes_max=config.api.body_bytes_max,
                        batch_txs_max=config.api.batch_txs_max,
                        connections_max=config.api.connections_max,
                        events_subscribers_max=config.api.events_subscribers_max,
                        log=self.log,
                        count_request=lambda route, status: requests.labels(
                            route=route, status=str(status)).inc())
        self._http = web.AppRunner(app, access_log=None, keepalive_timeout=API_KEEPALIVE_IDLE_S)
        await self._http.setup()
        await web.TCPSite(self._http, config.api.host, config.api.port).start()
        host, port = self._http.addresses[0][:2]  # the bound port when config says 0
        self.api_url = f"http://{host}:{port}"

    # -- p2p glue --------------------------------------------------------------------

    def _send(self, index: int, channel: int, data: bytes) -> bool:
        return self._send_to(self.config.node.shard, index, channel, data)

    async def _request(self, index: int, data: bytes, timeout_s: float) -> bytes:
        return await self._request_to(self.config.node.shard, index, data, timeout_s)

    def _send_to(self, shard: int, index: int, channel: int, data: bytes) -> bool:
        """Send to a validator of any shard (the relay's push)."""
        peer = self._validator_peer.get((shard, index))
        if peer is None:
            return False
        if self.byzantine is not None and channel == CHANNEL_CONSENSUS:
            altered = self.byzantine.consensus_out(index, data)
            if altered is None:
                return True  # withheld
            data = altered
        ok = self.p2p.send_nowait(peer, channel, data)
        if ok:
            self.metrics.p2p_messages.labels(direction="out", channel=str(channel)).inc()
            self.metrics.p2p_bytes.labels(direction="out", channel=str(channel)).inc(len(data))
        return ok

    async def _request_to(self, shard: int, index: int, data: bytes, timeout_s: float
                          ) -> bytes:
        peer = self._validator_peer.get((shard, index))
        if peer is None:
            raise ShardnetError(f"no peer for validator {shard}/{index}", reason="unknown_peer")
        return await self.p2p.request(peer, data, timeout_s)

    def _shard_peers_connected(self) -> frozenset[int]:
        """The other validators of our shard we hold a connection to, by index."""
        connected = self.p2p.connected_peers()
        return frozenset(i for peer, i in self._peer_index.items() if peer in connected)

    def _send_to_shard(self, channel: int, data: bytes) -> None:
        """To every other validator of our shard (forwarded transactions)."""
        for index in self._peer_index.values():
            self._send(index, channel, data)

    def _on_p2p_message(self, peer: str, channel: int, data: bytes) -> None:
        self.metrics.p2p_messages.labels(direction="in", channel=str(channel)).inc()
        self.metrics.p2p_bytes.labels(direction="in", channel=str(channel)).inc(len(data))
        running = self.running
        if channel == CHANNEL_RECEIPTS:
            # Bundles come from other shards' relayers; their proofs, not the sender,
            # make them acceptable.
            running.relay.on_bundle(peer, data)
            return
        if channel == CHANNEL_ANNOUNCE:
            # From other shards' proposers; the certificate makes one acceptable.
            reason = running.service.on_announcement(data)
            if reason:
                self.drop("announce", reason, peer=peer)
            return
        index = self._peer_index.get(peer)
        if index is None:
            self.drop("p2p", "not_shard_peer", peer=peer)
        elif channel == CHANNEL_CONSENSUS:
            running.driver.deliver(data, index)
        elif channel == CHANNEL_TXS:
            running.service.admission.on_batch(peer, data)
        else:
            self.drop("p2p", "unknown_channel", peer=peer, channel=channel)

    async def _serve_request(self, peer: str, data: bytes) -> bytes:
        request: Request = decode(data, Request, REQUEST_BYTES_MAX)  # type: ignore[arg-type]
        if isinstance(request, ReceiptsRequest):
            answer = await self.running.relay.serve(request)
            if self.byzantine is not None:  # forge_receipts (tests only)
                answer = self.byzantine.receipts_answer(answer)
            return answer
        if isinstance(request, ReceiptStatusRequest):
            return await self.running.service.finality.serve(request)
        return await self._sync_server.serve(peer, request)

    def _on_executed(self, stats: ExecutionStats) -> None:
        """Per-block executor telemetry (called on the ledger thread)."""
        self.metrics.executor_workers.set(stats.workers)
        self.metrics.executor_components.set(stats.components)
        self.metrics.executor_largest_component_share.set(stats.largest_component_share)
        self.metrics.executor_reexecutions.inc(stats.reexecutions)
        self.metrics.executor_aborts.inc(stats.aborts)
        self.log.info("block.executed", height=stats.height, **stats.as_log_fields())

    def _on_committed(self, committed: Committed, certificate: CommitCertificate) -> None:
        running = self.running
        running.service.on_committed(committed, certificate)
        running.relay.on_committed(committed, encode(certificate))
        self.metrics.peers.set(len(self.p2p.connected_peers()))
        running.service.note_own_tip(committed.height)
        # One announcement per block, from its proposer (certificates differ between
        # replicas), straight to every node of the other shards over the message
        # streams: gossip cost ~50 ms of CPU per message across an 8-node network and
        # reached our own shard too, which has no use for it (BENCHMARKS.md,
        # "Announcements over streams").
        if committed.block.header.proposer == self.config.node.index:
            self._announce(running.service.announcement(committed, certificate))

    def _announce(self, data: bytes) -> None:
        own = self.config.node.shard
        for shard, index in self._validator_peer:
            if shard != own:
                self._send_to(shard, index, CHANNEL_ANNOUNCE, data)

    def _valid_announcement(self, origin: str, data: bytes) -> bool:
        """The gossip validator (runs in the p2p thread): what fails is neither
        delivered nor relayed, and counts as ``gossip_invalid`` in the p2p drops."""
        return not check_announcement(self.genesis, data)[0]

    def _on_block_announcement(self, origin: str, data: bytes) -> None:
        """An announcement gossiped on ``TOPIC_BLOCKS`` (nothing publishes there since
        announcements moved to ``CHANNEL_ANNOUNCE``; still checked the same way)."""
        self.metrics.p2p_messages.labels(direction="in", channel="gossip").inc()
        reason = self.running.service.on_announcement(data)
        if reason:
            self.drop("gossip", reason, origin=origin)

    # -- stopping --------------------------------------------------------------------

    @property
    def driver_task(self) -> asyncio.Task[None]:
        """Ends only when the driver fails (``node.halted``) or the node stops."""
        return self._tasks["driver"]

    async def stop(self) -> None:
        """Stop what ``start`` started (also after a failed start) and release the parts."""
        if self._tasks:
            self.log.info("node.stopping")
            self._tasks["housekeeping"].cancel()
            self._tasks["relay"].cancel()
        if self._running is not None:
            self._running.relay.stop()
            await self._running.driver.stop()
            if self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(self._tasks["driver"], DRIVER_STOP_WAIT_S)
            self._running.service.close()
        if self._http is not None:
            await self._http.cleanup()
        if self._fault_endpoint is not None:
            await self._fault_endpoint.stop()
        with contextlib.suppress(Exception):
            await self.p2p.stop()
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._close_executor()
        await self.store.close()
        self.log.info("node.stopped")
