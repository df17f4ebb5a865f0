"""The composition root: builds one node from its home folder and runs it.

Everything concrete is constructed here (CometBFT's node/setup.go is the model);
the pieces receive what they need and know nothing of each other's construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import structlog
from aiohttp import web

from consensus.certificate import CommitCertificate
from consensus.kernel.codec import decode, encode
from consensus.kernel.crypto import verify_signature
from consensus.kernel.errors import DecodeError, ShardnetError
from consensus.replica import Replica
from consensus.state import PersistentState, ReplicaConfig
from node.api import build_app
from node.config import PRE_PREPARE_OVERHEAD_BYTES, ConfigError, NodeConfig, load_config
from node.driver import META_REPLICA, ConsensusDriver, monotonic_ms
from node.executor_pool import make_executor
from node.finality import Finality
from node.keys import load_node_key
from node.ledger_store import open_state
from node.logs import configure_logging
from node.mempool import Mempool
from node.metrics import NodeMetrics, P2PCollector
from node.p2p.config import P2PConfig, PeerSpec, peer_id_from_public_key
from node.p2p.host import P2PHost
from node.relay import ReceiptRelay, RelaySettings
from node.service import NodeService, check_announcement
from node.store import Store
from node.wire import (
    CHANNEL_CONSENSUS,
    CHANNEL_RECEIPTS,
    CHANNEL_TXS,
    REQUEST_BYTES_MAX,
    TOPIC_BLOCKS,
    ReceiptsRequest,
    ReceiptsResponse,
    ReceiptStatusRequest,
    Request,
    SyncedBlockWire,
    SyncRequest,
    SyncResponse,
    decode_tx_batch,
)
from sharding.block import block_hash
from sharding.genesis import Genesis, load_genesis
from sharding.inbound import InboundPool
from sharding.ledger import Committed, Ledger
from sharding.parallel import ExecutionStats

DB_FILE = "shard.sqlite"
SYNC_BLOCK_OVERHEAD_BYTES = 64  # height, block hash and msgpack framing of one synced block


def resolve(address: str) -> str:
    """``host:port`` with the host resolved by the system resolver (/etc/hosts, Docker DNS)."""
    host, _, port = address.rpartition(":")
    try:
        ip = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
    except OSError:
        return address
    return f"{ip}:{port}"


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        node = config.node
        self.name = node.name or f"shard{node.shard}-node{node.index}"
        self.log = structlog.get_logger().bind(node=self.name, shard=node.shard)
        self.genesis: Genesis = load_genesis(config.path(node.genesis))
        self.key = load_node_key(config.path(node.key_file))
        if node.shard >= self.genesis.num_shards:
            raise ConfigError(f"$.node.shard: {node.shard} but genesis has "
                              f"{self.genesis.num_shards} shards")
        validators = self.genesis.validators[node.shard]
        if node.index >= len(validators):
            raise ConfigError(f"$.node.index: {node.index} but shard has {len(validators)}")
        if validators[node.index].public_key != self.key.public_key:
            raise ConfigError("node key is not the genesis key of this validator")
        self.validators = validators
        self.metrics = NodeMetrics()
        self.store: Store | None = None
        self.p2p: P2PHost | None = None
        self.runner: web.AppRunner | None = None
        self.driver: ConsensusDriver | None = None
        self.service: NodeService | None = None
        self.relay: ReceiptRelay | None = None
        self._peer_index: dict[str, int] = {}  # validators of our shard
        self._index_peer: dict[int, str] = {}
        self._validator_peer: dict[tuple[int, int], str] = {}  # (shard, index) -> peer id
        self._ledger_pool = ThreadPoolExecutor(1, thread_name_prefix="ledger")
        self._admission_pool = ThreadPoolExecutor(1, thread_name_prefix="admission")
        # Bundles are verified (certificates, proofs) and built off the event loop.
        self._relay_pool = ThreadPoolExecutor(1, thread_name_prefix="relay")
        # Block execution's worker processes live as long as the node (issue 7).
        self.executor, self._executor_pool = make_executor(config.executor.workers,
                                                           on_stats=self._on_executed)
        self._stopped = asyncio.Event()

    # -- start-up --------------------------------------------------------------------

    async def _open_ledger(self) -> tuple[Ledger, PersistentState | None]:
        node = self.config.node
        self.store = store = await Store.open(self.config.path(node.data_dir) / DB_FILE)
        state, latest = await open_state(store, self.genesis, node.shard)
        if latest is None:
            ledger = Ledger(self.genesis, node.shard, state,
                            block_bytes_max=self.config.consensus.block_bytes_max,
                            executor=self.executor)
        else:
            ledger = Ledger(self.genesis, node.shard, state, latest.header.height,
                            block_hash(latest.header),
                            block_bytes_max=self.config.consensus.block_bytes_max,
                            executor=self.executor)
        persisted = None
        raw = await store.get_metadata(META_REPLICA)
        if raw is not None:
            persisted = decode(raw, PersistentState, 64 * 1024 * 1024)
        self.metrics.height.set(ledger.height)
        return ledger, persisted

    def _p2p_config(self) -> P2PConfig:
        p2p = self.config.p2p
        peers: list[PeerSpec] = []
        for shard_validators in self.genesis.validators:
            for validator in shard_validators:
                if validator.public_key == self.key.public_key:
                    continue
                peers.append(PeerSpec(resolve(validator.p2p_address),
                                      public_key=validator.public_key))
                peer_id = peer_id_from_public_key(validator.public_key)
                self._validator_peer[(validator.shard, validator.index)] = peer_id
                if validator.shard == self.config.node.shard:
                    peer = peer_id_from_public_key(validator.public_key)
                    self._peer_index[peer] = validator.index
                    self._index_peer[validator.index] = peer
        own = self.validators[self.config.node.index].p2p_address
        announce_host = p2p.announce_host or own.rpartition(":")[0]
        return P2PConfig(
            private_key_seed=self.key.private_bytes,
            listen_host=p2p.listen_host, listen_port=p2p.listen_port,
            announce_host=resolve(f"{announce_host}:0").rpartition(":")[0],
            announce_port=p2p.listen_port or None,
            peers=tuple(peers), gossip_topics=(TOPIC_BLOCKS,),
            write_timeout_s=p2p.write_timeout_ms / 1000,
            heartbeat_interval_s=p2p.heartbeat_interval_ms / 1000,
            heartbeat_timeout_s=5 * p2p.heartbeat_interval_ms / 1000,
            dial_backoff_min_s=p2p.dial_backoff_min_ms / 1000,
            dial_backoff_max_s=p2p.dial_backoff_max_ms / 1000,
            frame_bytes_max=p2p.frame_bytes_max,
        )

    def _replica(self, persisted: PersistentState | None, ledger: Ledger) -> Replica:
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
        )
        return Replica(config, self.key, verify_signature, persisted, now_ms=monotonic_ms())

    async def start(self) -> None:
        config = self.config
        ledger, persisted = await self._open_ledger()
        store = self.store
        if store is None:
            raise ShardnetError("store did not open")
        mempool = Mempool(
            txs_max=config.mempool.txs_max, bytes_max=config.mempool.bytes_max,
            nonce_window=config.mempool.nonce_window,
            sender_txs_max=config.mempool.sender_txs_max,
            committed_nonce=ledger.committed_nonce,
        )
        inbound = InboundPool()
        self.p2p = p2p = P2PHost(self._p2p_config(), self.log)
        self.metrics.registry.register(P2PCollector(p2p.stats_snapshot))
        service = NodeService(
            name=self.name, config=config, ledger=ledger, mempool=mempool, store=store,
            metrics=self.metrics, log=self.log, admission_pool=self._admission_pool,
            ledger_pool=self._ledger_pool,
            forward=self._forward_txs, peers_connected=lambda: len(p2p.connected_peers()),
            finality=Finality(shard=config.node.shard, index=config.node.index,
                              validators_per_shard=[len(v) for v in self.genesis.validators],
                              store=store, request=self._request_to),
        )
        self.service = service
        replica = self._replica(persisted, ledger)
        self.driver = driver = ConsensusDriver(
            config=config, replica=replica, ledger=ledger, store=store, mempool=mempool,
            metrics=self.metrics, log=self.log, send=self._send, request=self._request,
            on_committed=self._on_committed, on_rejected=service.on_rejected,
            ledger_pool=self._ledger_pool, inbound=inbound,
        )
        service.driver = driver
        relay = config.relay
        self.relay = ReceiptRelay(
            ledger=ledger, index=config.node.index, pool=inbound, store=store,
            metrics=self.metrics, log=self.log, send=self._send_to, request=self._request_to,
            verify_pool=self._relay_pool, shard_tips=service.shard_tips, on_pooled=driver.wake,
            settings=RelaySettings(
                poll_interval_ms=relay.poll_interval_ms, idle_poll_ms=relay.idle_poll_ms,
                request_timeout_ms=relay.request_timeout_ms,
                bundle_receipts_max=relay.bundle_receipts_max,
                serve_receipts_max=relay.serve_receipts_max,
                frame_bytes_max=config.p2p.frame_bytes_max),
        )
        service.relay = self.relay
        p2p.on_message(self._on_p2p_message)
        p2p.set_request_handler(self._serve_request)
        p2p.subscribe(TOPIC_BLOCKS, self._on_block_announcement,
                      validator=self._valid_announcement)
        await p2p.start()
        requests = self.metrics.api_requests
        app = build_app(service, body_bytes_max=config.api.body_bytes_max,
                        batch_txs_max=config.api.batch_txs_max,
                        count_request=lambda route, status: requests.labels(
                            route=route, status=str(status)).inc())
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, config.api.host, config.api.port).start()
        self.metrics.view.set(replica.view)
        self.metrics.is_primary.set(int(replica.primary() == replica.me))
        host, port = self.runner.addresses[0][:2]  # the bound port when config says 0
        self.log.info("node.started", height=ledger.height, view=replica.view,
                      api=f"http://{host}:{port}",
                      p2p=p2p.listen_addrs, peer_id=p2p.peer_id, pid=os.getpid())

    # -- p2p glue --------------------------------------------------------------------

    def _send(self, index: int, channel: int, data: bytes) -> bool:
        return self._send_to(self.config.node.shard, index, channel, data)

    async def _request(self, index: int, data: bytes, timeout_s: float) -> bytes:
        return await self._request_to(self.config.node.shard, index, data, timeout_s)

    def _send_to(self, shard: int, index: int, channel: int, data: bytes) -> bool:
        """Send to a validator of any shard (the relay's push)."""
        peer = self._validator_peer.get((shard, index))
        if peer is None or self.p2p is None:
            return False
        ok = self.p2p.send_nowait(peer, channel, data)
        if ok:
            self.metrics.p2p_messages.labels(direction="out", channel=str(channel)).inc()
            self.metrics.p2p_bytes.labels(direction="out", channel=str(channel)).inc(len(data))
        return ok

    async def _request_to(self, shard: int, index: int, data: bytes, timeout_s: float
                          ) -> bytes:
        peer = self._validator_peer.get((shard, index))
        if peer is None or self.p2p is None:
            raise ShardnetError(f"no peer for validator {shard}/{index}", reason="unknown_peer")
        return await self.p2p.request(peer, data, timeout_s)

    def _forward_txs(self, batch: bytes) -> None:
        for index in self._index_peer:
            self._send(index, CHANNEL_TXS, batch)

    def _on_p2p_message(self, peer: str, channel: int, data: bytes) -> None:
        self.metrics.p2p_messages.labels(direction="in", channel=str(channel)).inc()
        self.metrics.p2p_bytes.labels(direction="in", channel=str(channel)).inc(len(data))
        if channel == CHANNEL_RECEIPTS and self.relay is not None:
            # Bundles come from other shards' relayers; their proofs, not the sender,
            # make them acceptable.
            self.relay.on_bundle(peer, data)
            return
        index = self._peer_index.get(peer)
        if index is None:
            if self.driver is not None:
                self.driver.drop("p2p", "not_shard_peer", peer=peer)
            return
        if channel == CHANNEL_CONSENSUS and self.driver is not None:
            self.driver.deliver(data, index)
        elif channel == CHANNEL_TXS and self.service is not None:
            try:
                batch = decode_tx_batch(data, self.config.api.body_bytes_max)
            except DecodeError as exc:
                if self.driver is not None:
                    self.driver.drop("p2p", exc.reason, peer=peer, channel=channel)
                return
            self.service.receive_forwarded(batch.txs)
        elif self.driver is not None:
            self.driver.drop("p2p", "unknown_channel", peer=peer, channel=channel)

    async def _serve_request(self, peer: str, data: bytes) -> bytes:
        request = decode(data, Request, REQUEST_BYTES_MAX)
        if isinstance(request, ReceiptsRequest):
            return await self.relay.serve(request) if self.relay else encode(
                ReceiptsResponse([], 0))
        if isinstance(request, ReceiptStatusRequest):
            if self.service is None:
                raise ShardnetError("not started", reason="not_ready")
            return await self.service.finality.serve(request)
        return await self._serve_sync(request)

    async def _serve_sync(self, request: SyncRequest) -> bytes:
        store = self.store
        if store is None or request.shard != self.config.node.shard or request.last < request.first:
            return encode(SyncResponse([]))
        last = min(request.last, request.first + self.config.consensus.sync_batch_blocks_max - 1)
        blocks = await store.get_blocks(request.first, last)
        # Bounded by bytes too: 64 full blocks are ~20 MB, over a frame; the asker asks
        # again from where the answer stops. One block always fits (config check).
        budget = self.config.p2p.frame_bytes_max - PRE_PREPARE_OVERHEAD_BYTES
        answer: list[SyncedBlockWire] = []
        for b in blocks:
            budget -= len(b.block) + len(b.certificate) + SYNC_BLOCK_OVERHEAD_BYTES
            if answer and budget < 0:
                break
            answer.append(SyncedBlockWire(b.height, b.block_hash, b.block, b.certificate))
        return encode(SyncResponse(answer))

    def _on_executed(self, stats: ExecutionStats) -> None:
        """Per-block executor telemetry (called on the ledger thread)."""
        self.metrics.executor_workers.set(stats.workers)
        self.metrics.executor_components.set(stats.components)
        self.metrics.executor_largest_component_share.set(stats.largest_component_share)
        self.metrics.executor_reexecutions.inc(stats.reexecutions)
        self.log.info("block.executed", height=stats.height, **stats.as_log_fields())

    def _on_committed(self, committed: Committed, certificate: CommitCertificate) -> None:
        if self.service is None:
            return
        self.service.on_committed(committed, certificate)
        if self.relay is not None:
            self.relay.on_committed(committed, encode(certificate))
        self.metrics.peers.set(len(self.p2p.connected_peers()) if self.p2p else 0)
        # One announcement per block, from its proposer: gossip costs tens of ms of CPU
        # per message across the network, and certificates differ between replicas.
        if self.p2p is not None and committed.block.header.proposer == self.config.node.index:
            with contextlib.suppress(ShardnetError, ValueError):
                self.p2p.publish(TOPIC_BLOCKS, self.service.announcement(committed, certificate))

    def _valid_announcement(self, origin: str, data: bytes) -> bool:
        """The gossip validator (runs in the p2p thread): what fails is neither
        delivered nor relayed, and counts as ``gossip_invalid`` in the p2p drops."""
        return not check_announcement(self.genesis, data)[0]

    def _on_block_announcement(self, origin: str, data: bytes) -> None:
        """Other shards' certified tips (the cross-shard relay will build on these)."""
        self.metrics.p2p_messages.labels(direction="in", channel="gossip").inc()
        if self.service is None:
            return
        reason = self.service.on_announcement(data)
        if reason and self.driver is not None:
            self.driver.drop("gossip", reason, origin=origin)

    # -- running and stopping ---------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.start()
        except BaseException as exc:
            self.log.error("node.start_failed", error=repr(exc))
            await self.close()
            raise
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)
        driver = self.driver
        if driver is None:
            raise ShardnetError("driver did not start")
        task = asyncio.ensure_future(driver.run())
        service = self.service
        housekeeping = asyncio.ensure_future(service.housekeeping()) if service else None
        relay_loop = asyncio.ensure_future(self.relay.run()) if self.relay else None
        stop_wait = asyncio.ensure_future(self._stopped.wait())
        # A node whose p2p thread died cannot take part: halt (exit 1) rather than keep
        # serving a stale view; the supervisor (compose, testnet up) restarts it.
        p2p_ended = asyncio.ensure_future(self.p2p.wait_ended()) if self.p2p else None
        watched = {task, stop_wait} | ({p2p_ended} if p2p_ended else set())
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        halted = task in done and task.exception() is not None
        if halted:
            self.log.error("node.halted", error=repr(task.exception()))
        elif p2p_ended is not None and p2p_ended in done:
            halted = True
            crashed = self.p2p.crashed if self.p2p else None
            self.log.error("node.halted", error=f"p2p thread ended: {crashed!r}")
        for waiter in (stop_wait, p2p_ended):
            if waiter is not None:
                waiter.cancel()
        self.log.info("node.stopping")
        for background in (housekeeping, relay_loop):
            if background is not None:
                background.cancel()
        if self.relay is not None:
            self.relay.stop()
        await driver.stop()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)
        await self.close()
        if halted:
            raise SystemExit(1)

    async def close(self) -> None:
        if self.service is not None:
            self.service.close_subscribers()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.p2p is not None:
            with contextlib.suppress(Exception):
                await self.p2p.stop()
        self._ledger_pool.shutdown(wait=True)
        self._admission_pool.shutdown(wait=True)
        self._relay_pool.shutdown(wait=True)
        if self._executor_pool is not None:
            self._executor_pool.close()
        if self.store is not None:
            await self.store.close()
        self.log.info("node.stopped")


@click.command("node")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Node home: config.toml, node_key.json, genesis.json, data/.")
@click.option("--log-format", type=click.Choice(["json", "console"]), default=None,
              help="Override [log] format.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default=None, help="Override [log] level.")
def node_command(home: Path, log_format: str | None, log_level: str | None) -> None:
    """Run one validator node."""
    try:
        config = load_config(home)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(log_format or config.log.format,  # type: ignore[arg-type]
                      log_level or config.log.level)
    sys.setswitchinterval(0.001)
    # A crash in a C extension (a segfault) leaves the Python stack of every thread in
    # the node's log instead of a silent exit.
    faulthandler.enable()
    try:
        asyncio.run(Node(config).run())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except (ShardnetError, OSError) as exc:
        # Genesis, key, store (locked, another genesis) and p2p start-up failures:
        # one line naming the reason, no traceback (node.start_failed is logged too).
        reason = getattr(exc, "reason", type(exc).__name__)
        raise click.ClickException(f"cannot start the node: {reason}: {exc}") from None
