"""The p2p interface the rest of the node depends on (STYLE.md: interfaces are
Protocols with an in-memory twin). :class:`node.p2p.host.P2PHost` is the libp2p
implementation, :class:`node.p2p.memory.MemoryP2P` the in-memory one for tests.

Peers are libp2p peer id strings (``node.p2p.config.peer_id_from_public_key`` maps a
validator key from genesis to one). Channels are small integers chosen by the node
(e.g. one per PBFT message family); messages on one channel, or across channels, to
one peer arrive in the order they were sent, unless dropped (every drop is counted
and logged as ``p2p.dropped`` with a reason).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

MessageHandler = Callable[[str, int, bytes], None]
RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
GossipHandler = Callable[[str, bytes], None]
GossipValidator = Callable[[str, bytes], bool]

# What a link filter (and the in-memory network's LinkModel) is asked about.
KIND_MESSAGE, KIND_REQUEST, KIND_ANSWER, KIND_GOSSIP = "message", "request", "answer", "gossip"


class LinkFilter(Protocol):
    """Injected link faults, for tests (``node.p2p.linkfaults``; the node's
    ``node.faults.FaultState`` is one)."""

    def route(self, peer: str, kind: str) -> float | None:
        """A message, request or gossip copy to or from ``peer``: None drops it, else
        its extra delay in seconds."""

    def partitioned(self, peer: str) -> bool: ...


@runtime_checkable
class P2PAPI(Protocol):
    peer_id: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def running(self) -> bool: ...

    def on_message(self, handler: MessageHandler) -> None:
        """``handler(peer, channel, data)``, called on the asyncio loop."""

    def set_request_handler(self, handler: RequestHandler) -> None:
        """``async handler(peer, data) -> bytes``; an exception becomes a remote error
        for the asker: a ``ShardnetError`` rejects the request with its ``reason``, any
        other exception is our failure and the asker learns only that it failed."""

    def connected_peers(self) -> frozenset[str]: ...

    def send_nowait(self, peer: str, channel: int, data: bytes) -> bool:
        """Queue a message; never blocks; False (counted) when it cannot be queued."""

    async def send(self, peer: str, channel: int, data: bytes) -> bool: ...

    def broadcast(self, peers: Iterable[str], channel: int, data: bytes) -> int:
        """Queue for every peer; return how many accepted."""

    async def request(self, peer: str, data: bytes, timeout: float | None = None) -> bytes:
        """The peer's answer; raises ``RequestFailed`` (reason: timeout, remote_error,
        stream_error, protocol_error, not_running)."""

    def publish(self, topic: str, data: bytes) -> bool:
        """Best-effort gossip to every subscriber of ``topic`` (never needed for
        correctness: block sync fills gaps)."""

    def subscribe(
        self, topic: str, handler: GossipHandler, validator: GossipValidator | None = None
    ) -> None:
        """``handler(origin, data)`` on the asyncio loop; own publishes not delivered."""

    def set_link_filter(self, links: LinkFilter | None) -> None:
        """Injected link faults for tests (None: none, the default)."""

    def stats_snapshot(self) -> dict[str, Any]:
        """Counters for metrics: msgs/bytes sent and received per channel, drops by
        reason, reconnects, heartbeat misses, ..."""
