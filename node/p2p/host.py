"""The node's p2p layer: an asyncio facade over py-libp2p 0.8.1.

py-libp2p is trio-only, so the libp2p host lives in its own thread running its own
trio loop (P2P-NOTES "Concurrency", option (a)); nothing outside ``node/p2p/`` knows
trio. The facade offers what the node needs:

* ``send``/``broadcast``: ordered messages on one persistent stream per peer
  (``/shardnet/msg/1.0.0``). Sends are non-blocking enqueues onto a bounded per-peer
  queue; the writer joins queued frames into writes of up to ``write_batch_bytes_max``.
  A full queue refuses the message and counts ``drops["queue_full"]``.
* ``on_message``: one handler, called on the asyncio loop with (peer, channel, data).
* ``request``/``set_request_handler``: request/response on a fresh stream per request
  (``/shardnet/req/1.0.0``), for block sync.
* ``publish``/``subscribe``: gossipsub, configured as P2P-NOTES says (content-addressed
  message ids, no self rate limit, deep queues, 1 s heartbeat without adaptive stretch,
  sync validators). Gossip is never the only path for anything correctness needs.

A supervisor per configured peer dials it (resolving DNS names with getaddrinfo and
dialling ``/ip4``), clears the swarm's negative dial cache and stale addresses first,
backs off exponentially, and runs a session: writer, heartbeat (PING every
``heartbeat_interval_s``; no frame back for ``heartbeat_timeout_s`` means the peer is
frozen and the connection is closed) and the reader of the heartbeat answers. Every
write has a timeout. A malformed or oversized frame resets that stream, is counted and
logged as ``p2p.dropped``; the node keeps running. Messages queued for a peer that is
down wait (bounded) and go out, in order, once it is back. When the node's loop falls
behind, readers stop reading for a while (back-pressure onto the senders) before they
drop anything.

Process-wide side effects (one node per process): ``PY_YAMUX_RELEASE_ON_READ`` defaults
to 0, and ``node.p2p.gossip.install`` patches py-libp2p's gossip queue class and signed
record check. The entry point, not this module, configures logging: py-libp2p logs an
ERROR for every failed dial (peers still starting), so quiet the ``libp2p`` logger.

Use::

    host = P2PHost(P2PConfig(private_key_seed=seed, listen_port=9000, peers=(
        PeerSpec(address="shard0-node1:9000", public_key=validator_key), ...)), log)
    host.on_message(node.on_p2p_message)            # (peer, channel, data)
    host.set_request_handler(node.serve_sync)       # async (peer, data) -> bytes
    host.subscribe("blocks", node.on_block_announce)
    async with host:
        host.broadcast(shard_peers, CHANNEL_PBFT, encoded)
        blocks = await host.request(peer, encoded_range, timeout=5.0)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import multiaddr
import structlog
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from node.p2p import gossip as p2p_gossip
from node.p2p.api import GossipHandler, GossipValidator, MessageHandler, RequestHandler
from node.p2p.bridge import Inbox, OutQueue
from node.p2p.config import (
    P2PConfig,
    P2PError,
    P2PStats,
    PeerSpec,
    RequestFailed,
    is_ipv4,
    split_host_port,
)
from node.p2p.framing import (
    KIND_MSG,
    KIND_PING,
    KIND_REQ,
    MSG_KINDS,
    REQ_KINDS,
    RESP_ERROR,
    RESP_KINDS,
    RESP_OK,
    FrameDecoder,
    encode_msg,
    encode_ping,
    encode_pong,
    encode_req,
    encode_resp,
)

MSG_PROTOCOL = TProtocol("/shardnet/msg/1.0.0")
REQ_PROTOCOL = TProtocol("/shardnet/req/1.0.0")
READ_BYTES = 256 * 1024
CLOSE_TIMEOUT_S = 1.0
DROP_LOG_INTERVAL_S = 1.0
DROP_LOG_KEYS_MAX = 10_000

_ITEM_MSG = 0
_ITEM_GOSSIP = 1


def gossip_message_id(msg: rpc_pb2.Message) -> bytes:
    """Content-addressed gossip id: equal (topics, data) is the same message, so a
    restarted publisher's fresh seqnos cannot collide with old ones (P2P-NOTES)."""
    digest = hashlib.sha256()
    for topic in msg.topicIDs:
        digest.update(topic.encode() + b"\x00")
    digest.update(msg.data)
    return digest.digest()


class _Session:
    """State shared by the tasks of one outbound message stream."""

    def __init__(self) -> None:
        self.last_rx = trio.current_time()
        self.reason: str | None = None
        self.pings: dict[int, float] = {}  # nonce -> sent at (trio clock)


class P2PHost:
    """The p2p layer of one node. Use ``async with P2PHost(config, log):`` or
    ``await start()`` / ``await stop()`` on the node's asyncio loop."""

    def __init__(self, config: P2PConfig, log: Any | None = None) -> None:
        self.config = config
        self.peer_id = config.peer_id
        self.stats = P2PStats()
        self._log = (log if log is not None else structlog.get_logger()).bind(
            component="p2p", node_peer=self.peer_id
        )
        self._key_pair = create_new_key_pair(config.private_key_seed)
        # Long enough for a busy node to catch up, short of the peer's write timeout and
        # heartbeat (a reader waiting for room answers no PING).
        self._backpressure_s = min(config.write_timeout_s, config.heartbeat_timeout_s) / 2
        self._known: dict[str, PeerSpec] = {spec.id: spec for spec in config.peers}
        self._queues: dict[str, OutQueue] = {
            pid: OutQueue(config.send_queue_frames_max, config.send_queue_bytes_max)
            for pid in self._known
        }
        self._connected: frozenset[str] = frozenset()
        self._rtt_ms: dict[str, float] = {}  # last heartbeat round trip per peer
        self._connected_lock = threading.Lock()
        self._msg_handler: MessageHandler | None = None
        self._request_handler: RequestHandler | None = None
        self._gossip_handlers: dict[str, GossipHandler] = {}
        self._gossip_validators: dict[str, GossipValidator] = {}
        self._drop_log_at: dict[tuple[str, str], tuple[float, int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: Inbox | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop_event: trio.Event | None = None
        self._host: IHost | None = None
        self._pubsub: Pubsub | None = None
        self._publish_send: trio.MemorySendChannel[tuple[str, bytes]] | None = None
        self._finished: asyncio.Future[None] | None = None
        self._running = False
        self.crashed: BaseException | None = None
        self._listening = False
        self.listen_addrs: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> P2PHost:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the p2p thread; return once it listens (raises P2PError if it fails)."""
        if self._thread is not None:
            raise RuntimeError("P2PHost already started")
        _check_port_free(self.config.listen_host, self.config.listen_port)
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._inbox = Inbox(loop, self.config.inbound_queue_max, self._dispatch)
        started: asyncio.Future[None] = loop.create_future()
        self._finished = loop.create_future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(started,), name="p2p-trio", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wait_for(started, self.config.startup_timeout_s)
        except TimeoutError as error:
            await self.stop()
            raise P2PError("p2p host did not start in time", reason="startup_timeout") from error
        self._running = True
        self._log.info("p2p.started", listen=self.listen_addrs, peers=len(self._known))

    async def wait_ended(self) -> None:
        """Return when the p2p thread has ended (after ``stop``, or a crash)."""
        finished = self._finished
        if finished is None:
            raise RuntimeError("P2PHost not started")
        await asyncio.shield(finished)

    async def stop(self) -> None:
        """Close every stream and connection and end the p2p thread. Idempotent."""
        self._running = False
        token, thread, finished = self._token, self._thread, self._finished
        if thread is None or finished is None:
            return
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._request_stop)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(finished), 10.0)
        if self._inbox is not None:
            self._inbox.closed = True
        self._log.info("p2p.stopped")

    def _thread_main(self, started: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None  # set by start()
        error: BaseException | None = None
        try:
            trio.run(self._trio_main, started)
        except BaseException as exc:  # the thread must report, whatever happened
            error = exc
        if error is not None and not self._listening:
            failure = P2PError(f"p2p host failed to start: {error!r}", reason="start_failed")
            loop.call_soon_threadsafe(_settle, started, None, failure)
        elif error is not None:
            self.crashed = error
            self._running = False
            self._log.error("p2p.crashed", error=repr(error))
        finished = self._finished
        if finished is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, finished, None, None)

    def _request_stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    async def _trio_main(self, started: asyncio.Future[None]) -> None:
        cfg = self.config
        if not cfg.yamux_release_on_read:
            os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
        p2p_gossip.install(cfg.gossip_queue_max)
        self._token = trio.lowlevel.current_trio_token()
        if self._inbox is not None:
            self._inbox.token = self._token
        for queue in self._queues.values():
            queue.token = self._token
        self._stop_event = trio.Event()
        send, receive = trio.open_memory_channel[tuple[str, bytes]](cfg.gossip_queue_max)
        self._publish_send = send
        listen = multiaddr.Multiaddr(f"/ip4/{cfg.listen_host}/tcp/{cfg.listen_port}")
        host = new_host(
            key_pair=self._key_pair,
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(
                    self._key_pair, noise_privkey=create_x25519_key_pair().private_key
                )
            },
            muxer_preference="YAMUX",
            # Our supervisor owns dialling: keep the swarm's periodic auto-dialler idle.
            connection_config=ConnectionConfig(
                dial_timeout=cfg.dial_timeout_s, auto_connect_interval=86_400.0
            ),
            listen_addrs=[listen],
            announce_addrs=self._announce_addrs(),
        )
        self._host = host
        router = GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=cfg.gossip_degree,
            degree_low=cfg.gossip_degree_low,
            degree_high=cfg.gossip_degree_high,
            heartbeat_initial_delay=0.1,
            heartbeat_interval=cfg.gossip_heartbeat_interval_s,
            adaptive_gossip_enabled=False,
            spam_protection_enabled=False,
            eclipse_protection_enabled=False,
            max_pending_messages_per_peer=cfg.gossip_queue_max,
        )
        pubsub = p2p_gossip.BridgedPubsub(
            host, router, deliver=self._on_gossip, msg_id_constructor=gossip_message_id
        )
        self._pubsub = pubsub
        host.set_stream_handler(MSG_PROTOCOL, self._handle_msg_stream)
        host.set_stream_handler(REQ_PROTOCOL, self._handle_req_stream)
        async with (
            host.run([listen]),
            background_trio_service(pubsub),
            background_trio_service(router),
            trio.open_nursery() as nursery,
        ):
            self._nursery = nursery
            await pubsub.wait_until_ready()
            for topic in {*cfg.gossip_topics, *self._gossip_handlers}:
                await self._subscribe_trio(topic)
            nursery.start_soon(self._publisher, receive)
            for pid in self._known:
                nursery.start_soon(self._supervise, pid)
            self.listen_addrs = [str(addr) for addr in host.get_transport_addrs()]
            self._listening = True
            self._call_asyncio(_settle, started, None, None)
            await self._stop_event.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None

    def _announce_addrs(self) -> list[multiaddr.Multiaddr] | None:
        cfg = self.config
        host = cfg.announce_host or (None if cfg.listen_host == "0.0.0.0" else cfg.listen_host)
        port = cfg.announce_port or cfg.listen_port
        if host is None or port == 0:
            return None
        proto = "ip4" if is_ipv4(host) else "dns4"
        return [multiaddr.Multiaddr(f"/{proto}/{host}/tcp/{port}")]

    # ------------------------------------------------------------- asyncio API

    def on_message(self, handler: MessageHandler) -> None:
        """Set the handler of stream messages: ``handler(peer, channel, data)``, called
        on the asyncio loop. Keep it quick (hand the message to the node's queue)."""
        self._msg_handler = handler

    def set_request_handler(self, handler: RequestHandler) -> None:
        """Set ``async handler(peer, data) -> bytes`` answering requests."""
        self._request_handler = handler

    @property
    def running(self) -> bool:
        """True between a successful start and stop, unless the p2p thread crashed
        (then ``crashed`` holds the error and ``p2p.crashed`` was logged)."""
        return self._running

    def connected_peers(self) -> frozenset[str]:
        """Peers with a live outbound message stream (messages to them flow now)."""
        return self._connected

    def queued(self, peer: str) -> int:
        """Frames waiting in the send queue of ``peer``."""
        queue = self._queues.get(peer)
        return len(queue) if queue is not None else 0

    def send_nowait(self, peer: str, channel: int, data: bytes) -> bool:
        """Queue ``data`` for ``peer`` on ``channel``. Never blocks. False (and a
        counted ``p2p.dropped``) when the peer is unknown or its queue is full."""
        if len(data) + 3 > self.config.frame_bytes_max:
            raise ValueError(f"message of {len(data)} bytes exceeds frame_bytes_max")
        frame = encode_msg(channel, data)
        queue = self._queues.get(peer)
        if queue is None:
            self._drop(peer, "unknown_peer")
            return False
        if not queue.put(channel, frame):
            self._drop(peer, "queue_full")
            return False
        return True

    async def send(self, peer: str, channel: int, data: bytes) -> bool:
        """Same as :meth:`send_nowait` (kept awaitable for callers that prefer it)."""
        return self.send_nowait(peer, channel, data)

    def broadcast(self, peers: Iterable[str], channel: int, data: bytes) -> int:
        """Queue ``data`` for every peer in ``peers``; return how many accepted it."""
        if len(data) + 3 > self.config.frame_bytes_max:
            raise ValueError(f"message of {len(data)} bytes exceeds frame_bytes_max")
        frame = encode_msg(channel, data)
        accepted = 0
        for peer in peers:
            queue = self._queues.get(peer)
            if queue is None:
                self._drop(peer, "unknown_peer")
            elif queue.put(channel, frame):
                accepted += 1
            else:
                self._drop(peer, "queue_full")
        return accepted

    async def wait_sendable(self, peer: str, frames_below: int, timeout: float) -> bool:
        """Wait until at most ``frames_below`` frames are queued for ``peer`` (for
        producers that pace themselves, e.g. benchmarks). False on timeout."""
        queue = self._queues.get(peer)
        if queue is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with queue.lock:
                if len(queue.frames) <= frames_below:
                    return True
                event = asyncio.Event()
                queue.drain_waiters.append((frames_below, event, loop))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return False

    async def request(self, peer: str, data: bytes, timeout: float | None = None) -> bytes:
        """Send a request to ``peer`` and return its answer. Raises RequestFailed."""
        if len(data) + 1 > self.config.frame_bytes_max:
            raise ValueError(f"request of {len(data)} bytes exceeds frame_bytes_max")
        timeout = self.config.request_timeout_s if timeout is None else timeout
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._call_trio(self._start_task, self._do_request, peer, data, timeout, future)
        try:
            return await asyncio.wait_for(future, timeout + 1.0)
        except TimeoutError as error:
            raise RequestFailed(f"no answer from {peer}", reason="timeout") from error

    def publish(self, topic: str, data: bytes) -> bool:
        """Publish on gossipsub. False (counted) if the publish queue is full."""
        if len(data) > self.config.gossip_message_bytes_max:
            raise ValueError(f"gossip message of {len(data)} bytes is too large")
        if not self._running:
            raise P2PError("p2p host is not running", reason="not_running")
        self._call_trio(self._enqueue_publish, topic, data)
        return True

    def subscribe(
        self, topic: str, handler: GossipHandler, validator: GossipValidator | None = None
    ) -> None:
        """Deliver gossip on ``topic`` to ``handler(origin_peer, data)`` on the asyncio
        loop (our own publishes are not delivered back). ``validator(origin, data)``
        runs synchronously in the p2p thread before a message is accepted and
        forwarded: it must be pure and fast."""
        self._gossip_handlers[topic] = handler
        if validator is not None:
            self._gossip_validators[topic] = validator
        if self._running:
            self._call_trio(self._start_task, self._subscribe_trio, topic)

    def stats_snapshot(self) -> dict[str, Any]:
        """Counters for metrics (see :class:`P2PStats`)."""
        snapshot = self.stats.snapshot()
        snapshot["drops"]["gossip_rpc_queue_full"] = p2p_gossip.rpc_queue_drops()
        snapshot["connected_peers"] = len(self._connected)
        snapshot["heartbeat_rtt_ms"] = {
            peer: round(rtt, 3) for peer, rtt in list(self._rtt_ms.items())
        }
        snapshot["send_queue_frames"] = sum(len(q) for q in self._queues.values())
        return snapshot

    # ----------------------------------------------------------- thread bridge

    def _call_trio(self, fn: Callable[..., Any], *args: Any) -> None:
        token = self._token
        if token is None or not self._running:
            raise P2PError("p2p host is not running", reason="not_running")
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError as error:
            raise P2PError("p2p host is not running", reason="not_running") from error

    def _call_asyncio(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(fn, *args)

    def _start_task(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._guarded, fn, *args)

    async def _guarded(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run a task asked for by the asyncio side; its failure must not end the host."""
        try:
            await fn(*args)
        except Exception as error:
            self._log.error("p2p.task_failed", task=getattr(fn, "__name__", "?"),
                            error=repr(error))

    def _dispatch(self, batch: list[tuple[Any, ...]]) -> None:
        """(asyncio) Hand a batch of received items to the handlers."""
        msg_handler = self._msg_handler
        for item in batch:
            try:
                if item[0] == _ITEM_MSG:
                    if msg_handler is None:
                        self._drop(item[1], "no_handler")
                    else:
                        msg_handler(item[1], item[2], item[3])
                else:
                    handler = self._gossip_handlers.get(item[1])
                    if handler is None:
                        self._drop(item[2], "no_handler")
                    else:
                        handler(item[2], item[3])
            except Exception as error:
                self._drop(str(item[1]), "handler_error", detail=repr(error))

    def _drop(self, peer: str, reason: str, count: int = 1, detail: str = "") -> None:
        """Count a drop and log ``p2p.dropped``, at most once a second per (peer,
        reason) with the number dropped since the last line (any thread)."""
        now = time.monotonic()
        with self.stats.lock:
            self.stats.drops[reason] += count
            last_at, pending = self._drop_log_at.get((peer, reason), (0.0, 0))
            pending += count
            if now - last_at < DROP_LOG_INTERVAL_S:
                self._drop_log_at[(peer, reason)] = (last_at, pending)
                return
            if len(self._drop_log_at) >= DROP_LOG_KEYS_MAX:  # peers are not ours to bound
                self._drop_log_at.clear()
            self._drop_log_at[(peer, reason)] = (now, 0)
        self._log.warning("p2p.dropped", peer=peer, reason=reason, count=pending, detail=detail)

    def _set_connected(self, peer: str, connected: bool) -> None:
        with self._connected_lock:
            peers = set(self._connected)
            if connected:
                peers.add(peer)
            else:
                peers.discard(peer)
            self._connected = frozenset(peers)

    # ------------------------------------------------------ trio: supervision

    async def _resolve(self, address: str) -> multiaddr.Multiaddr:
        host, port = split_host_port(address)
        if not is_ipv4(host):
            infos = await trio.socket.getaddrinfo(
                host, port, family=socket.AF_INET, type=socket.SOCK_STREAM
            )
            if not infos:
                raise P2PError(f"{host} did not resolve", reason="dns")
            host = str(infos[0][4][0])
        return multiaddr.Multiaddr(f"/ip4/{host}/tcp/{port}")

    async def _supervise(self, peer: str) -> None:
        """Keep a message stream open to a configured peer, forever."""
        cfg = self.config
        host = self._host
        assert host is not None
        peer_id = ID.from_base58(peer)
        spec = self._known[peer]
        backoff = cfg.dial_backoff_min_s
        ever_connected = False
        failures = 0
        while True:
            try:
                with trio.fail_after(cfg.dial_timeout_s):
                    addr = await self._resolve(spec.address)
                    network = host.get_network()
                    network.unblock_peer(peer_id)  # type: ignore[attr-defined]
                    host.get_peerstore().clear_addrs(peer_id)
                    host.get_peerstore().add_addrs(peer_id, [addr], 0)
                    await host.connect(PeerInfo(peer_id, [addr]))
                    stream = await host.new_stream(peer_id, [MSG_PROTOCOL])
            except Exception as error:  # any dial failure: back off and retry
                failures += 1
                with self.stats.lock:
                    self.stats.dial_failures += 1
                log = self._log.info if failures == 1 else self._log.debug
                log("p2p.dial_failed", peer=peer, address=spec.address, error=repr(error))
                await trio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, cfg.dial_backoff_max_s)
                continue
            failures = 0
            backoff = cfg.dial_backoff_min_s
            with self.stats.lock:
                self.stats.connects += 1
                if ever_connected:
                    self.stats.reconnects += 1
            ever_connected = True
            reason = await self._run_session(peer, stream, str(addr))
            if reason in ("heartbeat_timeout", "write_timeout"):
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await host.get_network().close_peer(peer_id)
            await trio.sleep(cfg.dial_backoff_min_s * random.uniform(0.5, 1.0))

    async def _run_session(self, peer: str, stream: INetStream, address: str) -> str:
        queue = self._queues[peer]
        session = _Session()
        self._set_connected(peer, True)
        self._log.info("p2p.connected", peer=peer, address=address)
        try:
            async with trio.open_nursery() as nursery:

                async def run(fn: Callable[..., Awaitable[str]], *args: Any) -> None:
                    try:
                        reason = await fn(*args)
                    except Exception as error:
                        reason = f"stream_error:{type(error).__name__}"
                    if session.reason is None:
                        session.reason = reason
                    nursery.cancel_scope.cancel()

                nursery.start_soon(run, self._writer, peer, stream, queue)
                nursery.start_soon(run, self._pong_reader, peer, stream, session)
                nursery.start_soon(run, self._heartbeat, peer, queue, session)
        finally:
            self._set_connected(peer, False)
            with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
                scope.shield = True
                with contextlib.suppress(Exception):
                    await stream.reset()
            self._log.info("p2p.disconnected", peer=peer, reason=session.reason or "cancelled")
        return session.reason or "cancelled"

    async def _writer(self, peer: str, stream: INetStream, queue: OutQueue) -> str:
        cfg = self.config
        stats = self.stats
        while True:
            frames, channels, event = queue.take(cfg.write_batch_bytes_max)
            if event is not None:
                await event.wait()
                continue
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            try:
                with trio.move_on_after(cfg.write_timeout_s) as scope:
                    await stream.write(data)
            except Exception as error:
                self._drop(peer, "write_failed", _app_frames(channels), repr(error))
                return f"write_failed:{type(error).__name__}"
            if scope.cancelled_caught:
                with stats.lock:
                    stats.write_timeouts += 1
                self._drop(peer, "write_timeout", _app_frames(channels))
                return "write_timeout"
            with stats.lock:
                stats.writes += 1
                stats.frames_written += len(frames)
                stats.frames_per_write_max = max(stats.frames_per_write_max, len(frames))
                for channel, frame in zip(channels, frames, strict=True):
                    if channel >= 0:
                        stats.msgs_sent[channel] += 1
                        stats.bytes_sent[channel] += len(frame) - 7

    async def _pong_reader(self, peer: str, stream: INetStream, session: _Session) -> str:
        decoder = FrameDecoder(64, MSG_KINDS)
        while True:
            chunk = await stream.read(4096)
            now = trio.current_time()
            session.last_rx = now
            for frame in decoder.feed(chunk):
                sent_at = session.pings.pop(frame.nonce, None)
                if sent_at is not None:
                    self._rtt_ms[peer] = (now - sent_at) * 1000
            if decoder.error is not None:
                self._drop(peer, decoder.error.reason, detail=decoder.error.detail)
                return "protocol_error"

    async def _heartbeat(self, peer: str, queue: OutQueue, session: _Session) -> str:
        cfg = self.config
        nonce = 0
        while True:
            await trio.sleep(cfg.heartbeat_interval_s)
            silent_s = trio.current_time() - session.last_rx
            if silent_s > cfg.heartbeat_timeout_s:
                with self.stats.lock:
                    self.stats.heartbeat_misses += 1
                self._log.warning("p2p.heartbeat_missed", peer=peer, silent_s=round(silent_s, 2))
                return "heartbeat_timeout"
            nonce += 1
            if len(session.pings) > 64:  # unanswered pings: keep the map bounded
                session.pings.clear()
            session.pings[nonce] = trio.current_time()
            queue.put_control(encode_ping(nonce))

    # --------------------------------------------------------- trio: inbound

    async def _handle_msg_stream(self, stream: INetStream) -> None:
        cfg = self.config
        peer = stream.muxed_conn.peer_id.to_base58()
        if not cfg.accept_unknown_peers and peer not in self._known:
            self._drop(peer, "unknown_peer")
            await _reset(stream)
            return
        inbox = self._inbox
        assert inbox is not None
        stats = self.stats
        decoder = FrameDecoder(cfg.frame_bytes_max, MSG_KINDS)
        try:
            while True:
                chunk = await stream.read(READ_BYTES)
                frames = decoder.feed(chunk)
                items: list[tuple[Any, ...]] = []
                pings: list[bytes] = []
                for frame in frames:
                    if frame.kind == KIND_MSG:
                        items.append((_ITEM_MSG, peer, frame.channel, frame.payload))
                    elif frame.kind == KIND_PING:
                        pings.append(encode_pong(frame.nonce))
                if items:
                    with stats.lock:
                        for item in items:
                            stats.msgs_received[item[2]] += 1
                            stats.bytes_received[item[2]] += len(item[3])
                    await self._deliver(peer, items)
                if pings:
                    with trio.move_on_after(cfg.write_timeout_s) as scope:
                        await stream.write(b"".join(pings))
                    if scope.cancelled_caught:
                        with stats.lock:
                            stats.write_timeouts += 1
                        await _reset(stream)
                        return
                if decoder.error is not None:
                    self._drop(peer, decoder.error.reason, detail=decoder.error.detail)
                    await _reset(stream)
                    return
        except Exception as error:  # EOF, reset, connection lost: the stream is over
            self._log.debug("p2p.stream_closed", peer=peer, error=repr(error))

    async def _deliver(self, peer: str, items: list[tuple[Any, ...]]) -> None:
        """Hand items to the asyncio side. When its inbox is full, stop reading (the
        sender's writes stall: back-pressure) while the node catches up, and drop only
        what still does not fit after ``_backpressure_s``."""
        inbox = self._inbox
        assert inbox is not None
        with trio.move_on_after(self._backpressure_s):
            while True:
                refused = inbox.put_many(items)
                if not refused:
                    return
                items = items[len(items) - refused :]
                await inbox.wait_room()
        self._drop(peer, "inbound_full", len(items))

    async def _handle_req_stream(self, stream: INetStream) -> None:
        cfg = self.config
        peer = stream.muxed_conn.peer_id.to_base58()
        decoder = FrameDecoder(cfg.frame_bytes_max, REQ_KINDS)
        try:
            with trio.fail_after(cfg.request_timeout_s):
                payload: bytes | None = None
                while payload is None:
                    frames = decoder.feed(await stream.read(READ_BYTES))
                    if decoder.error is not None:
                        self._drop(peer, decoder.error.reason, detail=decoder.error.detail)
                        await _reset(stream)
                        return
                    if frames and frames[0].kind == KIND_REQ:
                        payload = frames[0].payload
                status, answer = await self._answer(peer, payload)
                if len(answer) + 2 > cfg.frame_bytes_max:
                    self._log.error("p2p.response_too_large", peer=peer, size=len(answer))
                    status, answer = RESP_ERROR, b"response too large"
                await stream.write(encode_resp(status, answer))
                await stream.close()
            with self.stats.lock:
                self.stats.requests_served += 1
        except Exception as error:
            self._log.debug("p2p.request_aborted", peer=peer, error=repr(error))
            await _reset(stream)

    async def _answer(self, peer: str, payload: bytes) -> tuple[int, bytes]:
        handler = self._request_handler
        loop = self._loop
        if handler is None or loop is None:
            return RESP_ERROR, b"no request handler"
        future = asyncio.run_coroutine_threadsafe(_call_handler(handler, peer, payload), loop)
        try:
            return await _wait_concurrent(future)
        except trio.Cancelled:
            future.cancel()
            raise

    async def _do_request(
        self, peer: str, data: bytes, timeout: float, future: asyncio.Future[bytes]
    ) -> None:
        with self.stats.lock:
            self.stats.requests_sent += 1
        result: bytes | None = None
        failure: RequestFailed | None = RequestFailed("p2p host stopped", reason="not_running")
        try:
            with trio.fail_after(timeout):
                result, failure = await self._exchange(peer, data)
        except trio.TooSlowError:
            failure = RequestFailed(f"no answer from {peer} in {timeout}s", reason="timeout")
        except Exception as error:
            failure = RequestFailed(repr(error), reason="stream_error")
        finally:
            # Settle the caller's future even when cancelled by shutdown.
            if failure is not None:
                result = None
                with self.stats.lock:
                    self.stats.requests_failed += 1
            self._call_asyncio(_settle, future, result, failure)

    async def _exchange(self, peer: str, data: bytes) -> tuple[bytes | None, RequestFailed | None]:
        host = self._host
        assert host is not None
        stream = await host.new_stream(ID.from_base58(peer), [REQ_PROTOCOL])
        failure: RequestFailed | None = None
        try:
            await stream.write(encode_req(data))
            decoder = FrameDecoder(self.config.frame_bytes_max, RESP_KINDS)
            while True:
                frames = decoder.feed(await stream.read(READ_BYTES))
                if decoder.error is not None:
                    self._drop(peer, decoder.error.reason, detail=decoder.error.detail)
                    failure = RequestFailed(decoder.error.detail, reason="protocol_error")
                    return None, failure
                if frames:
                    if frames[0].status == RESP_OK:
                        return frames[0].payload, None
                    message = frames[0].payload.decode(errors="replace")
                    failure = RequestFailed(message, reason="remote_error")
                    return None, failure
        except BaseException:
            failure = RequestFailed("aborted", reason="stream_error")
            raise
        finally:
            if failure is not None:
                await _reset(stream)
            else:
                await _close(stream)

    # ---------------------------------------------------------- trio: gossip

    def _on_gossip(self, msg: rpc_pb2.Message) -> None:
        """(trio) A new, valid gossip message: hand it to the asyncio side."""
        origin = ID(msg.from_id).to_base58()
        if origin == self.peer_id:
            return
        inbox = self._inbox
        assert inbox is not None
        items: list[tuple[Any, ...]] = [
            (_ITEM_GOSSIP, topic, origin, msg.data) for topic in msg.topicIDs
        ]
        with self.stats.lock:
            self.stats.gossip_received += len(items)
        refused = inbox.put_many(items)
        if refused:
            self._drop(origin, "inbound_full", refused)

    async def _subscribe_trio(self, topic: str) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        validator = self._gossip_validators.get(topic)
        if validator is not None:
            pubsub.set_topic_validator(topic, self._wrap_validator(topic, validator), False)
        if topic not in pubsub.topic_ids:
            await pubsub.subscribe(topic)

    def _wrap_validator(
        self, topic: str, validator: GossipValidator
    ) -> Callable[[ID, rpc_pb2.Message], bool]:
        def check(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            origin = ID(msg.from_id).to_base58()
            try:
                ok = bool(validator(origin, msg.data))
            except Exception as error:
                self._drop(origin, "gossip_invalid", detail=f"{topic}: {error!r}")
                return False
            if not ok:
                self._drop(origin, "gossip_invalid", detail=topic)
            return ok

        return check

    def _enqueue_publish(self, topic: str, data: bytes) -> None:
        send = self._publish_send
        if send is None:
            return
        try:
            send.send_nowait((topic, data))
        except trio.WouldBlock:
            self._drop(topic, "gossip_publish_full")

    async def _publisher(self, receive: trio.MemoryReceiveChannel[tuple[str, bytes]]) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        async for topic, data in receive:
            try:
                await pubsub.publish(topic, data)
            except Exception as error:
                self._drop(topic, "gossip_publish_failed", detail=repr(error))
                continue
            with self.stats.lock:
                self.stats.gossip_published += 1


def _check_port_free(host: str, port: int) -> None:
    """py-libp2p listens with SO_REUSEPORT, so a second node on a taken port would
    start and share the port's connections with the first. Refuse that up front."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT
        try:
            probe.bind((host, port))
        except OSError as error:
            raise P2PError(
                f"cannot listen on {host}:{port}: {error.strerror}", reason="start_failed"
            ) from error


def _app_frames(channels: list[int]) -> int:
    return sum(1 for channel in channels if channel >= 0)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


async def _call_handler(handler: RequestHandler, peer: str, payload: bytes) -> tuple[int, bytes]:
    try:
        return RESP_OK, bytes(await handler(peer, payload))
    except Exception as error:
        return RESP_ERROR, f"{type(error).__name__}: {error}".encode()


async def _wait_concurrent(
    future: concurrent.futures.Future[tuple[int, bytes]],
) -> tuple[int, bytes]:
    """(trio) Await a future completed by the asyncio thread."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    await done.wait()
    return future.result()


async def _reset(stream: INetStream) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(Exception):
        await stream.reset()


async def _close(stream: INetStream) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(Exception):
        await stream.close()
