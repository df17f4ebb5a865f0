"""``P2PAPI`` in memory, for tests of the node without sockets or threads.

A :class:`MemoryNetwork` connects :class:`MemoryP2P` members on one asyncio loop.
Delivery keeps per-sender order (one FIFO per link, drained by ``call_soon``), requests
call the peer's handler directly, gossip reaches every other subscriber. Faults for
tests: :meth:`MemoryNetwork.cut` / :meth:`MemoryNetwork.heal` a link, a stopped member
is unreachable. Unlike the libp2p host, messages to an unreachable peer are dropped at
once (``drops["disconnected"]``) instead of waiting in the send queue.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from node.p2p.api import GossipHandler, GossipValidator, MessageHandler, RequestHandler
from node.p2p.config import P2PError, RequestFailed


class MemoryNetwork:
    """The members and the links between them."""

    def __init__(self) -> None:
        self.members: dict[str, MemoryP2P] = {}
        self.cut_links: set[frozenset[str]] = set()

    def join(self, peer_id: str, peers: Iterable[str], queue_max: int = 100_000) -> MemoryP2P:
        member = MemoryP2P(self, peer_id, frozenset(peers) - {peer_id}, queue_max)
        self.members[peer_id] = member
        return member

    def cut(self, a: str, b: str) -> None:
        self.cut_links.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        self.cut_links.discard(frozenset((a, b)))

    def reachable(self, a: str, b: str) -> bool:
        member = self.members.get(b)
        return (
            member is not None
            and member.running
            and self.members[a].running
            and frozenset((a, b)) not in self.cut_links
        )


class MemoryP2P:
    """One member of a :class:`MemoryNetwork`; same interface as ``P2PHost``."""

    def __init__(
        self, network: MemoryNetwork, peer_id: str, peers: frozenset[str], queue_max: int
    ) -> None:
        self.network = network
        self.peer_id = peer_id
        self.peers = peers
        self.queue_max = queue_max
        self.msgs_sent: Counter[int] = Counter()
        self.bytes_sent: Counter[int] = Counter()
        self.msgs_received: Counter[int] = Counter()
        self.bytes_received: Counter[int] = Counter()
        self.drops: Counter[str] = Counter()
        self.requests_failed = 0
        self.gossip_published = 0
        self._running = False
        self._msg_handler: MessageHandler | None = None
        self._request_handler: RequestHandler | None = None
        self._topics: dict[str, tuple[GossipHandler, GossipValidator | None]] = {}
        self._inbox: deque[tuple[str, int, bytes]] = deque()
        self._drain_scheduled = False

    async def __aenter__(self) -> MemoryP2P:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False
        self._inbox.clear()

    @property
    def running(self) -> bool:
        return self._running

    def on_message(self, handler: MessageHandler) -> None:
        self._msg_handler = handler

    def set_request_handler(self, handler: RequestHandler) -> None:
        self._request_handler = handler

    def connected_peers(self) -> frozenset[str]:
        return frozenset(p for p in self.peers if self.network.reachable(self.peer_id, p))

    def send_nowait(self, peer: str, channel: int, data: bytes) -> bool:
        if peer not in self.peers:
            self.drops["unknown_peer"] += 1
            return False
        if not self.network.reachable(self.peer_id, peer):
            self.drops["disconnected"] += 1
            return False
        target = self.network.members[peer]
        if len(target._inbox) >= target.queue_max:
            self.drops["queue_full"] += 1
            return False
        self.msgs_sent[channel] += 1
        self.bytes_sent[channel] += len(data)
        target._deliver(self.peer_id, channel, data)
        return True

    async def send(self, peer: str, channel: int, data: bytes) -> bool:
        return self.send_nowait(peer, channel, data)

    def broadcast(self, peers: Iterable[str], channel: int, data: bytes) -> int:
        return sum(self.send_nowait(peer, channel, data) for peer in peers)

    def _deliver(self, sender: str, channel: int, data: bytes) -> None:
        self._inbox.append((sender, channel, data))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        while self._inbox:
            sender, channel, data = self._inbox.popleft()
            self.msgs_received[channel] += 1
            self.bytes_received[channel] += len(data)
            if self._msg_handler is None:
                self.drops["no_handler"] += 1
                continue
            try:
                self._msg_handler(sender, channel, data)
            except Exception:
                self.drops["handler_error"] += 1

    async def request(self, peer: str, data: bytes, timeout: float | None = None) -> bytes:
        if not self._running:
            raise RequestFailed("not running", reason="not_running")
        if not self.network.reachable(self.peer_id, peer):
            self.requests_failed += 1
            raise RequestFailed(f"{peer} unreachable", reason="stream_error")
        handler = self.network.members[peer]._request_handler
        if handler is None:
            self.requests_failed += 1
            raise RequestFailed("no request handler", reason="remote_error")
        try:
            return bytes(await asyncio.wait_for(handler(self.peer_id, data), timeout or 10.0))
        except TimeoutError as error:
            self.requests_failed += 1
            raise RequestFailed(f"no answer from {peer}", reason="timeout") from error
        except Exception as error:
            self.requests_failed += 1
            raise RequestFailed(repr(error), reason="remote_error") from error

    def publish(self, topic: str, data: bytes) -> bool:
        if not self._running:
            raise P2PError("not running", reason="not_running")
        self.gossip_published += 1
        loop = asyncio.get_running_loop()
        for peer in self.peers:
            if self.network.reachable(self.peer_id, peer):
                loop.call_soon(self.network.members[peer]._on_gossip, topic, self.peer_id, data)
        return True

    def _on_gossip(self, topic: str, origin: str, data: bytes) -> None:
        entry = self._topics.get(topic)
        if entry is None or not self._running:
            return
        handler, validator = entry
        if validator is not None and not validator(origin, data):
            self.drops["gossip_invalid"] += 1
            return
        handler(origin, data)

    def subscribe(
        self, topic: str, handler: GossipHandler, validator: GossipValidator | None = None
    ) -> None:
        self._topics[topic] = (handler, validator)

    def stats_snapshot(self) -> dict[str, Any]:
        return {
            "msgs_sent": dict(self.msgs_sent),
            "bytes_sent": dict(self.bytes_sent),
            "msgs_received": dict(self.msgs_received),
            "bytes_received": dict(self.bytes_received),
            "drops": dict(self.drops),
            "requests_failed": self.requests_failed,
            "gossip_published": self.gossip_published,
            "connected_peers": len(self.connected_peers()),
        }
