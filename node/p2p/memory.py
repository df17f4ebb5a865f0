"""``P2PAPI`` in memory, for tests of the node without sockets or threads.

A :class:`MemoryNetwork` connects :class:`MemoryP2P` members on one asyncio loop.
Delivery keeps per-sender order (one FIFO per link, drained by ``call_soon``), requests
call the peer's handler directly, gossip reaches every other subscriber. Faults for
tests: :meth:`MemoryNetwork.cut` / :meth:`MemoryNetwork.heal` a link,
:meth:`MemoryNetwork.partition` / :meth:`MemoryNetwork.heal_all` sets of members, a
stopped member is unreachable (a crash: what was in flight to it is lost; a restarted
node joins again under its peer id). Unlike the libp2p host, messages to an unreachable
peer are dropped at once (``drops["disconnected"]``) instead of waiting in the send queue.

A :class:`LinkModel` (``MemoryNetwork(links=...)``) decides, per message, request,
answer and gossip copy, when each copy arrives (none: lost; two: duplicated), on the
loop's clock (``call_at``): :class:`RandomLinks` from a ``random.Random(seed)``, or the
whole-network simulator's fault model (``node/sim``). Per link, arrivals stay in send
order unless the model ``reorders``. A member's own injected link faults
(``set_link_filter``, ``node/p2p/linkfaults.py``) apply on top, as in ``P2PHost``.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from node.p2p.api import (
    KIND_ANSWER,
    KIND_GOSSIP,
    KIND_MESSAGE,
    KIND_REQUEST,
    GossipHandler,
    GossipValidator,
    LinkFilter,
    MessageHandler,
    RequestHandler,
)
from node.p2p.config import P2PError, RequestFailed
from node.p2p.linkfaults import LinkHook

__all__ = ["KIND_ANSWER", "KIND_GOSSIP", "KIND_MESSAGE", "KIND_REQUEST", "LinkModel",
           "MemoryNetwork", "MemoryP2P", "RandomLinks"]


class LinkModel(Protocol):
    """Seeded link faults: ``route`` returns each copy's delay in seconds."""

    reorders: bool  # False: arrivals on a link keep their send order (a stream)

    def route(self, src: str, dst: str, kind: str, channel: int, data: bytes
              ) -> Sequence[float]: ...


class RandomLinks:
    """Per message: lost with ``loss``, else a delay in ``delay_ms``, and a second copy
    with ``duplicate``; all drawn from ``rng`` in one fixed order."""

    def __init__(self, rng: random.Random, delay_ms: tuple[int, int] = (1, 8),
                 loss: float = 0.0, duplicate: float = 0.0, reorders: bool = False) -> None:
        self.rng, self.delay_ms, self.loss, self.duplicate = rng, delay_ms, loss, duplicate
        self.reorders = reorders

    def route(self, src: str, dst: str, kind: str, channel: int, data: bytes
              ) -> Sequence[float]:
        if self.loss and self.rng.random() < self.loss:
            return ()
        delay = self.rng.randint(*self.delay_ms) / 1000
        if self.duplicate and self.rng.random() < self.duplicate:
            return delay, delay + self.rng.randint(0, 50) / 1000
        return (delay,)


class MemoryNetwork:
    """The members and the links between them."""

    def __init__(self, links: LinkModel | None = None) -> None:
        self.members: dict[str, MemoryP2P] = {}
        self.cut_links: set[frozenset[str]] = set()
        self.links = links
        # (src, dst) -> copies in flight on that link, in arrival order (stream links)
        self._in_flight: dict[tuple[str, str], deque[tuple[float, MemoryP2P, int, bytes]]] = {}
        self._last_arrival: dict[tuple[str, str], float] = {}

    def join(self, peer_id: str, peers: Iterable[str], queue_max: int = 100_000) -> MemoryP2P:
        member = MemoryP2P(self, peer_id, frozenset(peers) - {peer_id}, queue_max)
        self.members[peer_id] = member
        return member

    def cut(self, a: str, b: str) -> None:
        self.cut_links.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        self.cut_links.discard(frozenset((a, b)))

    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Cut every link between members of different ``groups``."""
        sets = [sorted(set(g)) for g in groups]
        for i, group in enumerate(sets):
            for other in sets[i + 1:]:
                for a in group:
                    for b in other:
                        self.cut(a, b)

    def heal_all(self) -> None:
        self.cut_links.clear()

    def transmit(self, sender: str, target: MemoryP2P, channel: int, data: bytes) -> None:
        """Hand a message to ``target``: now, or as the link model says."""
        if self.links is None:
            target._deliver(sender, channel, data)
            return
        loop = asyncio.get_running_loop()
        key = (sender, target.peer_id)
        for delay in self.links.route(sender, target.peer_id, KIND_MESSAGE, channel, data):
            at = loop.time() + delay
            if self.links.reorders:
                loop.call_at(at, target._deliver, sender, channel, data)
                continue
            # One timer per copy; each drains the link's head, so equal arrival times
            # cannot swap two messages.
            at = max(at, self._last_arrival.get(key, at))
            self._last_arrival[key] = at
            self._in_flight.setdefault(key, deque()).append((at, target, channel, data))
            loop.call_at(at, self._arrive, key)

    def _arrive(self, key: tuple[str, str]) -> None:
        queue = self._in_flight[key]
        now = asyncio.get_running_loop().time()
        while queue and queue[0][0] <= now:
            _, target, channel, data = queue.popleft()
            target._deliver(key[0], channel, data)

    def delays(self, src: str, dst: str, kind: str, data: bytes) -> Sequence[float]:
        """Delays of the copies of a request, answer or gossip message (0: no model)."""
        if self.links is None:
            return (0.0,)
        return self.links.route(src, dst, kind, 0, data)

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
        self.links: LinkHook | None = None  # injected link faults (tests)

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

    def set_link_filter(self, links: LinkFilter | None) -> None:
        self.links = None if links is None else LinkHook(links, self._count_fault)

    def _count_fault(self, peer: str, reason: str) -> None:
        self.drops[reason] += 1

    def send_nowait(self, peer: str, channel: int, data: bytes) -> bool:
        if self.links is not None:
            return self.links.send(peer, channel, data, self._send_now)
        return self._send_now(peer, channel, data)

    def _send_now(self, peer: str, channel: int, data: bytes) -> bool:
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
        self.network.transmit(self.peer_id, target, channel, data)
        return True

    async def send(self, peer: str, channel: int, data: bytes) -> bool:
        return self.send_nowait(peer, channel, data)

    def broadcast(self, peers: Iterable[str], channel: int, data: bytes) -> int:
        return sum(self.send_nowait(peer, channel, data) for peer in peers)

    def _deliver(self, sender: str, channel: int, data: bytes) -> None:
        if not self._running:  # stopped (crashed) while the message was on its way
            self.drops["not_running"] += 1
            return
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
            if self.links is not None:
                self.links.receive(sender, channel, data, self._handle)
            else:
                self._handle(sender, channel, data)

    def _handle(self, sender: str, channel: int, data: bytes) -> None:
        if self._msg_handler is None or not self._running:
            self.drops["no_handler" if self._running else "not_running"] += 1
            return
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
        try:
            return await asyncio.wait_for(self._exchange(peer, data), timeout or 10.0)
        except TimeoutError as error:
            self.requests_failed += 1
            raise RequestFailed(f"no answer from {peer}", reason="timeout") from error
        except RequestFailed:
            self.requests_failed += 1
            raise

    async def _exchange(self, peer: str, data: bytes) -> bytes:
        """The request's trip, the peer's handler, the answer's trip; a lost leg
        waits for the caller's timeout."""
        network = self.network
        if self.links is not None:
            await self.links.before_request(peer)
        there = network.delays(self.peer_id, peer, KIND_REQUEST, data)
        await self._travel(there)
        if not network.reachable(self.peer_id, peer):
            raise RequestFailed(f"{peer} unreachable", reason="stream_error")
        server = network.members[peer]
        handler = server._request_handler
        if handler is None:
            raise RequestFailed("no request handler", reason="remote_error")
        try:
            if server.links is not None:
                await server.links.before_serving(self.peer_id)
            answer = bytes(await handler(self.peer_id, data))
        except Exception as error:
            raise RequestFailed(repr(error), reason="remote_error") from error
        await self._travel(network.delays(peer, self.peer_id, KIND_ANSWER, answer))
        if not network.reachable(self.peer_id, peer):
            raise RequestFailed(f"{peer} unreachable", reason="stream_error")
        return answer

    @staticmethod
    async def _travel(delays: Sequence[float]) -> None:
        if not delays:
            await asyncio.Event().wait()  # lost: only the timeout ends it
        if delays[0] > 0:
            await asyncio.sleep(delays[0])

    def publish(self, topic: str, data: bytes) -> bool:
        if not self._running:
            raise P2PError("not running", reason="not_running")
        self.gossip_published += 1
        loop = asyncio.get_running_loop()
        for peer in sorted(self.peers):  # sorted: the same order in every process
            if self.network.reachable(self.peer_id, peer):
                target = self.network.members[peer]
                for delay in self.network.delays(self.peer_id, peer, KIND_GOSSIP, data):
                    if delay > 0:
                        loop.call_later(delay, target._on_gossip, topic, self.peer_id, data)
                    else:
                        loop.call_soon(target._on_gossip, topic, self.peer_id, data)
        return True

    def _on_gossip(self, topic: str, origin: str, data: bytes) -> None:
        entry = self._topics.get(topic)
        if entry is None or not self._running:
            return
        handler, validator = entry
        if validator is not None and not validator(origin, data):
            self.drops["gossip_invalid"] += 1
            return
        if self.links is not None:
            self.links.receive_gossip(origin, data, handler)
        else:
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
