"""The node's p2p layer: an asyncio facade over py-libp2p 0.8.1.

py-libp2p is trio-only, so the libp2p host lives in its own thread running its own
trio loop (:mod:`node.p2p.bridge`); nothing outside ``node/p2p/`` knows trio.
:class:`P2PHost` implements :class:`~node.p2p.api.P2PAPI` by composing the parts:

* ``send``/``broadcast``: ordered messages on one persistent stream per peer
  (``/shardnet/msg/1.0.0``), supervised by :mod:`node.p2p.sessions`. Sends are
  non-blocking enqueues onto a bounded per-peer queue; the writer joins queued frames
  into writes of up to ``write_batch_bytes_max``. A full queue refuses the message and
  counts ``drops["queue_full"]``.
* ``on_message``: one handler, called on the asyncio loop with (peer, channel, data);
  the streams peers open to us are read by :mod:`node.p2p.inbound`.
* ``request``/``set_request_handler``: request/response on a fresh stream per request
  (``/shardnet/req/1.0.0``), for block sync.
* ``publish``/``subscribe``: gossipsub (:mod:`node.p2p.gossip`). Gossip is never the
  only path for anything correctness needs.
* ``emulated_latency_s`` / ``emulated_rate_bit`` in the config: userspace network
  emulation (:mod:`node.p2p.shaping`), a one-way delay and a rate cap on everything
  sent to peers; off (the default) builds none of it.
* ``set_link_filter``: injected per-link delay, loss and partition for tests
  (:mod:`node.p2p.linkfaults`); None (the default) costs one attribute check.
* Only the configured peers are served, on every stream of every protocol
  (:mod:`node.p2p.gate`, unless ``accept_unknown_peers``); requests served at once,
  the inbox and the send queues are bounded in count and bytes.

Frames are laid out in :mod:`node.p2p.framing`; drops are counted and logged by
:mod:`node.p2p.drops`.

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
import contextlib
import functools
import os
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any

import multiaddr  # type: ignore[import-untyped]
import structlog
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service
from structlog.typing import FilteringBoundLogger

from node.p2p.api import (
    GossipHandler,
    GossipValidator,
    LinkFilter,
    MessageHandler,
    RequestHandler,
)
from node.p2p.bridge import InboundMessage, Inbox, InboxItem, Shared, TrioThread
from node.p2p.config import P2PConfig, P2PError, P2PStats, RequestFailed, is_ipv4
from node.p2p.drops import DropLog
from node.p2p.gate import PeerGate
from node.p2p.gossip import Gossip, rpc_queue_drops
from node.p2p.inbound import Inbound
from node.p2p.linkfaults import LinkHook
from node.p2p.sessions import MSG_PROTOCOL, REQ_PROTOCOL, Sessions
from node.p2p.shaped_queue import ShapedOutQueue
from node.p2p.shaping import shaper_of

__all__ = ["MSG_PROTOCOL", "REQ_PROTOCOL", "P2PHost"]

AUTO_CONNECT_IDLE_S = 86_400.0  # the swarm's own re-dialler; our supervisors dial
REQUEST_GRACE_S = 1.0  # past the trio-side timeout, before the caller gives up


class P2PHost:
    """The p2p layer of one node. Use ``async with P2PHost(config, log):`` or
    ``await start()`` / ``await stop()`` on the node's asyncio loop."""

    def __init__(self, config: P2PConfig, log: FilteringBoundLogger | None = None) -> None:
        self.config = config
        self.peer_id = config.peer_id
        self.stats = P2PStats()
        self.listen_addrs: list[str] = []
        base: FilteringBoundLogger = log if log is not None else structlog.get_logger()
        self._log = base.bind(component="p2p", node_peer=self.peer_id)
        self._key_pair = create_new_key_pair(config.private_key_seed)
        self._msg_handler: MessageHandler | None = None
        self._drop = DropLog(self.stats, self._log)
        self._thread = TrioThread(self._log)
        self._inbox = Inbox(config.inbound_queue_max, self._dispatch,
                            config.inbound_queue_bytes_max)
        self.shaper = shaper_of(config.emulated_latency_s, config.emulated_rate_bit)
        shared = Shared(config, self.stats, self._drop, self._log, self._thread, self.shaper)
        self._sessions = Sessions(shared, None if self.shaper is None else functools.partial(
            ShapedOutQueue, shaper=self.shaper))
        self._gate = PeerGate(shared, frozenset({*self._sessions.known, self.peer_id}))
        self._inbound = Inbound(shared, self._inbox, self._gate, self._sessions.heard)
        self._gossip = Gossip(shared, self._inbox, self.peer_id, self._gate)
        self.links: LinkHook | None = None  # injected link faults (tests)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> P2PHost:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the p2p thread; return once it listens (raises P2PError if it fails)."""
        if self._thread.started:
            raise RuntimeError("P2PHost already started")
        _check_port_free(self.config.listen_host, self.config.listen_port)
        self._inbox.open(asyncio.get_running_loop())
        try:
            await self._thread.start(self._serve, self.config.startup_timeout_s)
        except TimeoutError as error:
            await self.stop()
            raise P2PError("p2p host did not start in time", reason="startup_timeout") from error
        self._log.info("p2p.started", listen=self.listen_addrs, peers=len(self._sessions.known))
        if self.shaper is not None:
            self._log.info("net.emulation.applied", method="userspace", applied=True,
                           **self.shaper.describe())

    async def wait_ended(self) -> None:
        """Return when the p2p thread has ended (after ``stop``, or a crash)."""
        await self._thread.wait_ended()

    async def stop(self) -> None:
        """Close every stream and connection and end the p2p thread. Idempotent."""
        if await self._thread.stop():
            self._inbox.closed = True
            self._log.info("p2p.stopped")

    @property
    def running(self) -> bool:
        """True between a successful start and stop, unless the p2p thread crashed
        (then ``crashed`` holds the error and ``p2p.crashed`` was logged)."""
        return self._thread.running

    @property
    def crashed(self) -> BaseException | None:
        return self._thread.crashed

    @contextlib.asynccontextmanager
    async def _serve(self) -> AsyncIterator[trio.Nursery]:
        """(trio) Build the libp2p host and its services; yield once it listens."""
        cfg = self.config
        if not cfg.yamux_release_on_read:
            os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
        self._inbox.token = trio.lowlevel.current_trio_token()
        listen = multiaddr.Multiaddr(f"/ip4/{cfg.listen_host}/tcp/{cfg.listen_port}")
        host = _new_libp2p_host(cfg, self._key_pair, listen)
        # Every inbound stream of every protocol passes the peer check first.
        self._gate.guard_streams(host.get_network(), host._swarm_stream_handler)  # type: ignore[attr-defined]
        pubsub, router = self._gossip.build(host)
        host.set_stream_handler(MSG_PROTOCOL, self._inbound.handle_msg_stream)
        host.set_stream_handler(REQ_PROTOCOL, self._inbound.handle_req_stream)
        async with (
            host.run([listen]),
            background_trio_service(pubsub),
            background_trio_service(router),
            trio.open_nursery() as nursery,
        ):
            self._gate.start(nursery, host.get_network())
            await self._gossip.start(nursery)
            self._sessions.start(nursery, host)
            self.listen_addrs = [str(addr) for addr in host.get_transport_addrs()]
            yield nursery

    # ------------------------------------------------------------- asyncio API

    def on_message(self, handler: MessageHandler) -> None:
        """Set the handler of stream messages: ``handler(peer, channel, data)``, called
        on the asyncio loop. Keep it quick (hand the message to the node's queue)."""
        self._msg_handler = handler

    def set_request_handler(self, handler: RequestHandler) -> None:
        """Set ``async handler(peer, data) -> bytes`` answering requests. It raises a
        ``ShardnetError`` to reject a request (the peer gets its ``reason``); any other
        exception is our failure (the peer gets a generic error; ``p2p.handler_failed``)."""
        async def serve(peer: str, data: bytes) -> bytes:
            links = self.links
            if links is not None:
                await links.before_serving(peer)
            return await handler(peer, data)

        self._inbound.request_handler = serve

    def set_link_filter(self, links: LinkFilter | None) -> None:
        """Injected link faults for tests (:mod:`node.p2p.linkfaults`); None: none."""
        self.links = None if links is None else LinkHook(
            links, lambda peer, reason: self._drop(peer, reason))

    def connected_peers(self) -> frozenset[str]:
        """Peers with a live outbound message stream (messages to them flow now)."""
        return self._sessions.connected_peers()

    def queued(self, peer: str) -> int:
        """Frames waiting in the send queue of ``peer``."""
        return self._sessions.queued(peer)

    def send_nowait(self, peer: str, channel: int, data: bytes) -> bool:
        """Queue ``data`` for ``peer`` on ``channel``. Never blocks. False (and a
        counted ``p2p.dropped``) when the peer is unknown or its queue is full."""
        if self.links is not None:
            return self.links.send(peer, channel, data, self._sessions.send_nowait)
        return self._sessions.send_nowait(peer, channel, data)

    async def send(self, peer: str, channel: int, data: bytes) -> bool:
        """Same as :meth:`send_nowait` (kept awaitable for callers that prefer it)."""
        return self.send_nowait(peer, channel, data)

    def broadcast(self, peers: Iterable[str], channel: int, data: bytes) -> int:
        """Queue ``data`` for every peer in ``peers``; return how many accepted it."""
        if self.links is not None:
            return sum(self.send_nowait(peer, channel, data) for peer in peers)
        return self._sessions.broadcast(peers, channel, data)

    async def wait_sendable(self, peer: str, frames_below: int, timeout: float) -> bool:
        """Wait until at most ``frames_below`` frames are queued for ``peer`` (for
        producers that pace themselves, e.g. benchmarks). False on timeout."""
        return await self._sessions.wait_sendable(peer, frames_below, timeout)

    async def request(self, peer: str, data: bytes, timeout: float | None = None) -> bytes:
        """Send a request to ``peer`` and return its answer. Raises RequestFailed."""
        self._sessions.check_request(data)
        timeout = self.config.request_timeout_s if timeout is None else timeout
        if self.links is not None:
            await self.links.before_request(peer)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        thread = self._thread
        thread.call_trio(thread.start_task, self._sessions.request, peer, data, timeout, future)
        try:
            return await asyncio.wait_for(future, timeout + REQUEST_GRACE_S)
        except TimeoutError as error:
            raise RequestFailed(f"no answer from {peer}", reason="timeout") from error

    def publish(self, topic: str, data: bytes) -> bool:
        """Publish on gossipsub. False (counted) if the publish queue is full."""
        if len(data) > self.config.gossip_message_bytes_max:
            raise ValueError(f"gossip message of {len(data)} bytes is too large")
        if not self.running:
            raise P2PError("p2p host is not running", reason="not_running")
        self._thread.call_trio(self._gossip.enqueue_publish, topic, data)
        return True

    def subscribe(
        self, topic: str, handler: GossipHandler, validator: GossipValidator | None = None
    ) -> None:
        """Deliver gossip on ``topic`` to ``handler(origin_peer, data)`` on the asyncio
        loop (our own publishes are not delivered back). ``validator(origin, data)``
        runs synchronously in the p2p thread before a message is accepted and
        forwarded: it must be pure and fast."""
        self._gossip.handlers[topic] = handler
        if validator is not None:
            self._gossip.validators[topic] = validator
        if self.running:
            thread = self._thread
            thread.call_trio(thread.start_task, self._gossip.subscribe_topic, topic)

    def stats_snapshot(self) -> dict[str, Any]:
        """Counters for metrics (see :class:`P2PStats`)."""
        snapshot = self.stats.snapshot()
        snapshot["drops"]["gossip_rpc_queue_full"] = rpc_queue_drops()
        snapshot["connected_peers"] = len(self._sessions.connected_peers())
        snapshot["heartbeat_rtt_ms"] = {
            peer: round(rtt, 3) for peer, rtt in list(self._sessions.rtt_ms.items())
        }
        snapshot["send_queue_frames"] = self._sessions.queued_total()
        snapshot["send_queue_bytes"] = self._sessions.budget.used
        snapshot["inbound_queue_bytes"] = self._inbox.queued_bytes
        snapshot["inbound_queue_bytes_peak"] = self._inbox.queued_bytes_peak
        snapshot["requests_in_flight"] = self._inbound.slots.total
        return snapshot

    def _dispatch(self, batch: list[InboxItem]) -> None:
        """(asyncio) Hand a batch of received items to the handlers."""
        msg_handler = self._msg_handler
        gossip_handlers = self._gossip.handlers
        links = self.links
        for item in batch:
            try:
                if isinstance(item, InboundMessage):
                    if msg_handler is None:
                        self._drop(item.peer, "no_handler")
                    elif links is not None:
                        links.receive(item.peer, item.channel, item.data,
                                      self._guarded_handler(msg_handler))
                    else:
                        msg_handler(item.peer, item.channel, item.data)
                else:
                    handler = gossip_handlers.get(item.topic)
                    if handler is None:
                        self._drop(item.origin, "no_handler")
                    elif links is not None:
                        links.receive_gossip(item.origin, item.data,
                                             self._guarded_gossip(item.topic, handler))
                    else:
                        handler(item.origin, item.data)
            except Exception as error:
                where = item.peer if isinstance(item, InboundMessage) else item.topic
                self._drop(where, "handler_error", detail=repr(error))

    def _guarded_handler(self, handler: MessageHandler) -> MessageHandler:
        """``handler`` for a message a link fault delays: its failure is counted
        like one in ``_dispatch``."""
        def deliver(peer: str, channel: int, data: bytes) -> None:
            try:
                handler(peer, channel, data)
            except Exception as error:
                self._drop(peer, "handler_error", detail=repr(error))
        return deliver

    def _guarded_gossip(self, topic: str, handler: GossipHandler) -> GossipHandler:
        """The same for a gossip message a link fault delays."""
        def deliver(origin: str, data: bytes) -> None:
            try:
                handler(origin, data)
            except Exception as error:
                self._drop(topic, "handler_error", detail=repr(error))
        return deliver


def _new_libp2p_host(cfg: P2PConfig, key_pair: KeyPair, listen: multiaddr.Multiaddr) -> IHost:
    return new_host(
        key_pair=key_pair,
        sec_opt={
            NOISE_PROTOCOL_ID: NoiseTransport(
                key_pair, noise_privkey=create_x25519_key_pair().private_key
            )
        },
        muxer_preference="YAMUX",
        # Our supervisors own dialling: keep the swarm's periodic auto-dialler idle.
        connection_config=ConnectionConfig(
            dial_timeout=cfg.dial_timeout_s, auto_connect_interval=AUTO_CONNECT_IDLE_S
        ),
        listen_addrs=[listen],
        announce_addrs=_announce_addrs(cfg),
    )


def _announce_addrs(cfg: P2PConfig) -> list[multiaddr.Multiaddr] | None:
    host = cfg.announce_host or (None if cfg.listen_host == "0.0.0.0" else cfg.listen_host)
    port = cfg.announce_port or cfg.listen_port
    if host is None or port == 0:
        return None
    proto = "ip4" if is_ipv4(host) else "dns4"
    return [multiaddr.Multiaddr(f"/{proto}/{host}/tcp/{port}")]


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
