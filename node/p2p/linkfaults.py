"""Per-link faults inside the p2p layer, for tests (docs/NODE.md, "Faults and
byzantine modes").

A :class:`~node.p2p.api.LinkFilter` (the node's ``node.faults.FaultState``) says, per
message, request or gossip copy to or from a peer, whether it passes and how late.
:class:`LinkHook` applies that answer where the p2p layer sends and receives: both
``P2PHost`` and ``MemoryP2P`` hold ``links: LinkHook | None`` (None unless the node
enables faults: then every send and receive costs one attribute check).

- Messages (both directions): dropped (counted, ``fault_partition`` / ``fault_loss``)
  or delayed by scheduling them on the loop, never by sleeping in the send path. Per
  peer and direction a delay line keeps them in order.
- Requests (both directions): a partition fails them at once (``RequestFailed``
  reason ``partitioned`` to the asker; the server refuses one from a peer it is cut
  from); a delay holds only that request. Loss does not apply to requests.
- Gossip (received only: gossipsub relays copies through other peers; the filter
  judges the origin).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from node.p2p.api import KIND_GOSSIP, KIND_MESSAGE, KIND_REQUEST, LinkFilter
from node.p2p.config import RequestFailed

OUT, IN = "out", "in"
CountDrop = Callable[[str, str], None]  # (peer, reason)


class LinkHook:
    """Applies a ``LinkFilter`` to one p2p member's traffic."""

    def __init__(self, links: LinkFilter, count_drop: CountDrop) -> None:
        self.links = links
        self._count_drop = count_drop
        # (direction, peer) -> (due time, function, args) in arrival order
        self._lines: dict[tuple[str, str], deque[tuple[float, Callable[..., Any],
                                                      tuple[Any, ...]]]] = {}

    def _judge(self, peer: str, kind: str) -> float | None:
        delay = self.links.route(peer, kind)
        if delay is None:
            self._count_drop(peer, "fault_partition" if self.links.partitioned(peer)
                             else "fault_loss")
        return delay

    def _later(self, direction: str, peer: str, delay_s: float, fn: Callable[..., Any],
               *args: Any) -> None:
        """Run ``fn(*args)`` in ``delay_s``, after what this line already holds."""
        loop = asyncio.get_running_loop()
        key = (direction, peer)
        line = self._lines.setdefault(key, deque())
        at = loop.time() + delay_s
        if line:
            at = max(at, line[-1][0])
        line.append((at, fn, args))
        loop.call_at(at, self._due, key)

    def _due(self, key: tuple[str, str]) -> None:
        line = self._lines.get(key)
        now = asyncio.get_running_loop().time()
        while line and line[0][0] <= now:
            _, fn, args = line.popleft()
            fn(*args)
        if line is not None and not line:
            del self._lines[key]

    # -- messages -------------------------------------------------------------------

    def send(self, peer: str, channel: int, data: bytes,
             send: Callable[[str, int, bytes], bool]) -> bool:
        """A message to ``peer``: True when it left or was lost on the link (the
        sender of a lossy link cannot tell), else what ``send`` said."""
        delay = self._judge(peer, KIND_MESSAGE)
        if delay is None:
            return True
        if delay <= 0 and (OUT, peer) not in self._lines:
            return send(peer, channel, data)
        self._later(OUT, peer, delay, send, peer, channel, data)
        return True

    def receive(self, peer: str, channel: int, data: bytes,
                deliver: Callable[[str, int, bytes], None]) -> None:
        delay = self._judge(peer, KIND_MESSAGE)
        if delay is None:
            return
        if delay <= 0 and (IN, peer) not in self._lines:
            deliver(peer, channel, data)
            return
        self._later(IN, peer, delay, deliver, peer, channel, data)

    def receive_gossip(self, origin: str, data: bytes,
                       deliver: Callable[[str, bytes], None]) -> None:
        delay = self._judge(origin, KIND_GOSSIP)
        if delay is None:
            return
        if delay <= 0:
            deliver(origin, data)
            return
        asyncio.get_running_loop().call_later(delay, deliver, origin, data)

    # -- requests -------------------------------------------------------------------

    async def before_request(self, peer: str) -> None:
        """(asker) Raise ``RequestFailed`` (``partitioned``) or wait the link's delay."""
        delay = self.links.route(peer, KIND_REQUEST)
        if delay is None:
            self._count_drop(peer, "fault_partition")
            raise RequestFailed(f"link to {peer} is partitioned (fault)", reason="partitioned")
        if delay > 0:
            await asyncio.sleep(delay)  # holds this request only

    async def before_serving(self, peer: str) -> None:
        """(server) Refuse a request from a peer we are cut from, or wait the delay."""
        await self.before_request(peer)

