"""Gossip: publish and subscribe over gossipsub, and its adjustments for py-libp2p 0.8.1.

:class:`Gossip` builds the router and the pubsub service, configured as P2P-NOTES says
(content-addressed message ids, no self rate limit, deep queues, 1 s heartbeat without
adaptive stretch, sync validators), runs the publisher task and hands accepted
messages to the asyncio loop as :class:`~node.p2p.bridge.InboundGossip` items. Gossip is
never the only path for anything correctness needs. The adjustments (see
shared/docs/P2P-NOTES.md):

* Each peer's outbound RPC queue holds 32 RPCs and drops silently while ``publish``
  reports success. :func:`install` replaces the queue class used by ``Pubsub`` with one
  of configurable depth that counts what it refuses. This is process-wide (the class
  is a module global of py-libp2p); one node runs one host per process.
* Subscription channels hold 32 messages and drop when full. :class:`BridgedPubsub`
  bypasses them: accepted messages go straight to a callback (the asyncio bridge).
* Every gossip RPC carries the sender's signed peer record, and the receiver verifies
  its Ed25519 signature and rewrites the peerstore for every RPC, twice for RPCs with
  control messages. The record's bytes only change when the sender's addresses do, so
  :func:`install` remembers the (peer, record bytes) pairs already accepted; the
  result of verifying identical bytes cannot differ.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
import trio
from libp2p.abc import IHost, INetStream, IPubsubRouter
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize, RpcQueue
from libp2p.pubsub.utils import maybe_consume_signed_record

from node.p2p.api import GossipHandler, GossipValidator
from node.p2p.bridge import InboundGossip, Inbox, Part, Shared
from node.p2p.gate import PeerGate
from node.p2p.shaping import LinkShaper, wait_s

GOSSIP_HEARTBEAT_INITIAL_DELAY_S = 0.1

_lock = threading.Lock()
_drops = 0


class CountingRpcQueue(RpcQueue):
    """An ``RpcQueue`` whose depth is set by :func:`install` and which counts
    refused RPCs (py-libp2p only logs them at DEBUG)."""

    depth = 32
    shaper: LinkShaper | None = None  # per queue, under network emulation (its sender)

    def __init__(
        self, max_size: int | None = None, max_message_size: int = DefaultMaxMessageSize
    ) -> None:
        super().__init__(max_size or CountingRpcQueue.depth, max_message_size)
        self.dues: dict[int, float] = {}  # id(rpc) -> when it reaches the peer

    def push(self, rpc: rpc_pb2.RPC, priority: bool = False) -> bool:
        ok = super().push(rpc, priority)
        if ok and self.shaper is not None:
            self.dues[id(rpc)] = self.shaper.due(rpc.ByteSize())
        if not ok and not self.closed:
            global _drops
            with _lock:
                _drops += 1
        return ok


_RECORDS_MAX = 4096
_accepted_records: OrderedDict[tuple[ID, bytes], None] = OrderedDict()
_verify_record = maybe_consume_signed_record


def consume_signed_record_once(msg: rpc_pb2.RPC, host: IHost, peer_id: ID) -> bool:
    """``maybe_consume_signed_record`` that skips records it already accepted."""
    if not msg.HasField("senderRecord"):
        return True
    key = (peer_id, msg.senderRecord)
    with _lock:
        if key in _accepted_records:
            _accepted_records.move_to_end(key)
            return True
    if not _verify_record(msg, host, peer_id):
        return False
    with _lock:
        _accepted_records[key] = None
        if len(_accepted_records) > _RECORDS_MAX:
            _accepted_records.popitem(last=False)
    return True


def install(queue_depth: int) -> None:
    """Make every Pubsub created from now on use deep, counting peer queues, and
    verify each distinct signed peer record once."""
    CountingRpcQueue.depth = max(CountingRpcQueue.depth, queue_depth)
    pubsub_module.RpcQueue = CountingRpcQueue  # type: ignore[attr-defined]
    pubsub_module.maybe_consume_signed_record = consume_signed_record_once  # type: ignore[attr-defined,unused-ignore]
    gossipsub_module.maybe_consume_signed_record = consume_signed_record_once  # type: ignore[attr-defined]


def rpc_queue_drops() -> int:
    """Gossip RPCs refused by full per-peer queues, in this process."""
    with _lock:
        return _drops


class BridgedPubsub(Pubsub):
    """``Pubsub`` that hands accepted messages to ``deliver`` instead of bounded
    per-topic channels. ``deliver`` runs in the trio thread and must not block.

    ``admit(peer, where)`` (the :class:`~node.p2p.gate.PeerGate`) is asked before a
    peer's gossip stream is read, before we open one to a new peer (so a stranger is
    never a gossip peer: it gets neither our subscriptions nor our messages), and for
    the forwarder and the origin of every message."""

    def __init__(
        self,
        host: IHost,
        router: IPubsubRouter,
        *,
        deliver: Callable[[rpc_pb2.Message], None],
        msg_id_constructor: Callable[[rpc_pb2.Message], bytes],
        admit: Callable[[str, str], bool] = lambda peer, where: True,
        shaper: LinkShaper | None = None,
    ) -> None:
        super().__init__(host, router, msg_id_constructor=msg_id_constructor)
        self._deliver = deliver
        self._admit = admit
        self._shaper = shaper

    async def handle_sending_messages(self, peer_id: ID, stream: INetStream,
                                      queue: RpcQueue) -> None:
        """Under userspace network emulation, py-libp2p's per-peer sending loop with
        each RPC held until due (pushed before this task started: not held)."""
        shaper = self._shaper
        if shaper is None or not isinstance(queue, CountingRpcQueue):
            await super().handle_sending_messages(peer_id, stream, queue)
            return
        queue.shaper = shaper
        try:
            while (rpc := await queue.pop()) is not None:
                due = queue.dues.pop(id(rpc), None)
                if due is not None:
                    await trio.sleep(wait_s(due))
                if not await self.write_msg(stream, rpc):
                    return
        except Exception:
            self._handle_dead_peer(peer_id)

    async def stream_handler(self, stream: INetStream) -> None:
        if self._admit(stream.muxed_conn.peer_id.to_base58(), "gossip_stream"):
            await super().stream_handler(stream)
        else:
            with trio.move_on_after(1.0), contextlib.suppress(Exception):
                await stream.reset()

    async def _handle_new_peer(self, peer_id: ID) -> None:
        if self._admit(peer_id.to_base58(), "gossip_peer"):
            await super()._handle_new_peer(peer_id)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if self._admit(msg_forwarder.to_base58(), "gossip_forwarder") and self._admit(
            ID(msg.from_id).to_base58(), "gossip_origin"
        ):
            await super().push_msg(msg_forwarder, msg)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        if any(topic in self.topic_ids for topic in publish_message.topicIDs):
            self._deliver(publish_message)


def gossip_message_id(msg: rpc_pb2.Message) -> bytes:
    """Content-addressed gossip id: equal (topics, data) is the same message, so a
    restarted publisher's fresh seqnos cannot collide with old ones (P2P-NOTES)."""
    digest = hashlib.sha256()
    for topic in msg.topicIDs:
        digest.update(topic.encode() + b"\x00")
    digest.update(msg.data)
    return digest.digest()


class GossipPublish(NamedTuple):
    """A publish asked for by the asyncio side, waiting for the publisher task."""

    topic: str
    data: bytes


class Gossip(Part):
    """Topics, their handlers and validators, and the gossipsub service (trio side)."""

    def __init__(self, shared: Shared, inbox: Inbox, peer_id: str, gate: PeerGate) -> None:
        super().__init__(shared)
        self._inbox = inbox
        self._peer_id = peer_id
        self._gate = gate
        self.handlers: dict[str, GossipHandler] = {}
        self.validators: dict[str, GossipValidator] = {}
        self.pubsub: BridgedPubsub | None = None
        self._publish_send: trio.MemorySendChannel[GossipPublish] | None = None
        self._publish_receive: trio.MemoryReceiveChannel[GossipPublish] | None = None

    def build(self, host: IHost) -> tuple[BridgedPubsub, GossipSub]:
        """(trio) The pubsub service and its router on ``host``; run both as services."""
        cfg = self.config
        install(cfg.gossip_queue_max)
        send, receive = trio.open_memory_channel[GossipPublish](cfg.gossip_queue_max)
        self._publish_send, self._publish_receive = send, receive
        router = GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=cfg.gossip_degree,
            degree_low=cfg.gossip_degree_low,
            degree_high=cfg.gossip_degree_high,
            heartbeat_initial_delay=GOSSIP_HEARTBEAT_INITIAL_DELAY_S,
            heartbeat_interval=cfg.gossip_heartbeat_interval_s,
            adaptive_gossip_enabled=False,
            spam_protection_enabled=False,
            eclipse_protection_enabled=False,
            max_pending_messages_per_peer=cfg.gossip_queue_max,
        )
        self.pubsub = BridgedPubsub(
            host, router, deliver=self._on_gossip, msg_id_constructor=gossip_message_id,
            admit=self._gate.admit, shaper=self._shaper,
        )
        return self.pubsub, router

    async def start(self, nursery: trio.Nursery) -> None:
        """(trio) Once pubsub runs: subscribe the configured and handled topics, and
        start the publisher."""
        pubsub, receive = self.pubsub, self._publish_receive
        if pubsub is None or receive is None:
            raise RuntimeError("Gossip.start before build")
        await pubsub.wait_until_ready()
        for topic in {*self.config.gossip_topics, *self.handlers}:
            await self.subscribe_topic(topic)
        nursery.start_soon(self._publisher, pubsub, receive)

    def _on_gossip(self, msg: rpc_pb2.Message) -> None:
        """(trio) A new, valid gossip message: hand it to the asyncio side."""
        origin = ID(msg.from_id).to_base58()
        if origin == self._peer_id:
            return
        items = [InboundGossip(topic, origin, msg.data) for topic in msg.topicIDs]
        with self._stats.lock:
            self._stats.gossip_received += len(items)
        refused, reason = self._inbox.put_many(items)
        if refused:
            self._drop(origin, reason, refused)

    async def subscribe_topic(self, topic: str) -> None:
        """(trio) Subscribe ``topic`` (again: its validator may have changed)."""
        pubsub = self.pubsub
        if pubsub is None:
            raise RuntimeError("Gossip.subscribe_topic before build")
        validator = self.validators.get(topic)
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

    def enqueue_publish(self, topic: str, data: bytes) -> None:
        """(trio) Queue a publish for the publisher task; a full queue drops it."""
        send = self._publish_send
        if send is None:
            return
        try:
            send.send_nowait(GossipPublish(topic, data))
        except trio.WouldBlock:
            self._drop(topic, "gossip_publish_full")

    async def _publisher(
        self, pubsub: Pubsub, receive: trio.MemoryReceiveChannel[GossipPublish]
    ) -> None:
        async for topic, data in receive:
            try:
                await pubsub.publish(topic, data)
            except Exception as error:
                self._drop(topic, "gossip_publish_failed", detail=repr(error))
                continue
            with self._stats.lock:
                self._stats.gossip_published += 1
