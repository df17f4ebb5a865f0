"""Who may talk to us, and how many of their requests we serve at once (trio side).

:class:`PeerGate` admits the configured peers (the node's: every other validator of
every shard in genesis, which the cross-shard relay needs) and refuses anyone else
unless ``accept_unknown_peers`` is set. It checks at three depths, so no single hook
of py-libp2p is trusted alone:

* the connection: a stranger's connection is closed as soon as the swarm reports it
  (:class:`GateNotifee`), so pubsub never adds it as a gossip peer;
* every inbound stream, whatever its protocol (ours, gossipsub, identify, ping, ...):
  :meth:`PeerGate.guard_streams` wraps the swarm's stream handler and resets a
  stranger's stream before protocol negotiation;
* each of our protocol handlers again (message, request, gossip streams and gossip
  forwarders), for the streams and RPCs that get past the first two.

Every refusal is counted and logged as ``p2p.dropped`` with reason ``unknown_peer``
(``detail`` says where). :class:`RequestSlots` bounds the requests served at once,
in total and per peer; a request beyond either bound is answered ``busy`` at once
(counted and logged as ``requests_in_flight_full``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from multiaddr import Multiaddr  # type: ignore[import-untyped]

from node.p2p.bridge import Part, Shared

UNKNOWN_PEER = "unknown_peer"
REQUESTS_IN_FLIGHT_FULL = "requests_in_flight_full"
CLOSE_TIMEOUT_S = 1.0

StreamHandler = Callable[[INetStream], Awaitable[None]]


def stream_peer(stream: INetStream) -> str:
    """The peer id (base58) at the other end of ``stream``."""
    return str(stream.muxed_conn.peer_id.to_base58())


class PeerGate(Part):
    """The configured peers, and the checks that keep everyone else out."""

    def __init__(self, shared: Shared, known: frozenset[str]) -> None:
        super().__init__(shared)
        self.known = known
        self._nursery: trio.Nursery | None = None

    def allows(self, peer: str) -> bool:
        return self.config.accept_unknown_peers or peer in self.known

    def admit(self, peer: str, where: str) -> bool:
        """True if ``peer`` may use ``where``; else count and log the refusal."""
        if self.allows(peer):
            return True
        self._drop(peer, UNKNOWN_PEER, detail=where)
        return False

    async def admit_stream(self, stream: INetStream, where: str) -> bool:
        """True if the stream's peer may use ``where``; else reset it (counted)."""
        if self.admit(stream_peer(stream), where):
            return True
        await _reset(stream)
        return False

    def guard_streams(self, network: INetwork, handler: StreamHandler) -> None:
        """Put the peer check in front of the swarm's handler of every new stream."""

        async def guarded(stream: INetStream) -> None:
            if await self.admit_stream(stream, "stream"):
                await handler(stream)

        network.set_stream_handler(guarded)

    def start(self, nursery: trio.Nursery, network: INetwork) -> None:
        """(trio) Close strangers' connections from now on, in ``nursery``."""
        self._nursery = nursery
        if not self.config.accept_unknown_peers:
            network.register_notifee(GateNotifee(self))

    def close_stranger(self, network: INetwork, peer_id: ID) -> None:
        """(trio) A stranger connected: close its connections (counted)."""
        peer = peer_id.to_base58()
        if self.allows(peer):
            return
        self._drop(peer, UNKNOWN_PEER, detail="connection")
        nursery = self._nursery
        if nursery is not None:
            nursery.start_soon(_close_peer, network, peer_id)


async def _close_peer(network: INetwork, peer_id: ID) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(Exception):
        await network.close_peer(peer_id)


async def _reset(stream: INetStream) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(Exception):
        await stream.reset()


class GateNotifee(INotifee):
    """Swarm events: a stranger's new connection is closed."""

    def __init__(self, gate: PeerGate) -> None:
        self._gate = gate

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._gate.close_stranger(network, conn.muxed_conn.peer_id)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass


class RequestSlots:
    """Requests being served (trio thread only): at most ``total_max`` at once, and at
    most ``per_peer_max`` from one peer."""

    def __init__(self, total_max: int, per_peer_max: int) -> None:
        self.total_max = total_max
        self.per_peer_max = per_peer_max
        self.total = 0
        self.per_peer: dict[str, int] = {}

    def take(self, peer: str) -> str | None:
        """Take a slot for ``peer``; None if taken, else which bound refused it."""
        held = self.per_peer.get(peer, 0)
        if self.total >= self.total_max:
            return "total"
        if held >= self.per_peer_max:
            return "per_peer"
        self.total += 1
        self.per_peer[peer] = held + 1
        return None

    def give_back(self, peer: str) -> None:
        self.total -= 1
        held = self.per_peer[peer] - 1
        if held:
            self.per_peer[peer] = held
        else:
            del self.per_peer[peer]
