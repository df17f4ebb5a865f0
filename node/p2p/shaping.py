"""Userspace network emulation: a one-way delay and a rate cap on what this node sends
to its peers, for machines where the kernel cannot add them (no netem qdisc) and for
testnets of local processes (``[net_emulation]`` in the node's config, docs/NODE.md).

:class:`LinkShaper` is the model, pure and thread-safe: it answers when a message of
``size`` bytes, handed over at ``now``, reaches the peer. Like netem with a rate, the
node's egress is one link: messages go out one after another at ``rate_bit`` (a token
bucket lets ``burst_bytes`` out at once), then travel ``latency_s``. With no rate the
answer is ``now + latency_s``.

Where the p2p layer applies it (only when the config asks; otherwise none of this is
built and the send path is the plain one):

* Messages and heartbeat PINGs: the peer's send queue
  (:class:`~node.p2p.shaped_queue.ShapedOutQueue`) stamps each frame with its due time,
  and the peer's writer writes only frames that are due, in order. Each peer has its
  own writer: a slow link to one peer holds back no other.
* PONGs and request answers (the streams peers open to us), our requests and gossip
  RPCs (per peer, every hop, relays too): held until due before they are written.

Not delayed: the HTTP API, and anything the kernel already delays (the container's
entry point uses netem when it can; the node is then told ``mode = "netem"``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import trio


def burst_bytes_of(rate_bit: int) -> int:
    """The bucket: 10 ms of the rate, at least 16 KiB (tbf's sizing in the containers)."""
    return max(16 * 1024, rate_bit // 8 // 100)


class LinkShaper:
    """When a message reaches the peer: one node's egress, one delay."""

    def __init__(self, latency_s: float, rate_bit: int = 0, burst_bytes: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if latency_s < 0 or rate_bit < 0:
            raise ValueError("latency_s and rate_bit must be >= 0")
        self.clock = clock  # time.monotonic(), or a test's
        self.latency_s = latency_s
        self.rate_bit = rate_bit
        self.burst_s = (8 * (burst_bytes if burst_bytes is not None
                             else burst_bytes_of(rate_bit)) / rate_bit) if rate_bit else 0.0
        self._free_at = 0.0  # when the link has sent everything handed to it
        self._lock = threading.Lock()

    def due(self, size: int, now: float | None = None) -> float:
        """When (on ``clock``) ``size`` bytes handed over at ``now`` (default: now)
        reach the peer. Any thread."""
        now = self.clock() if now is None else now
        if not self.rate_bit:
            return now + self.latency_s
        transmit_s = 8 * size / self.rate_bit
        with self._lock:
            start = max(now, self._free_at - self.burst_s)
            self._free_at = max(self._free_at, now) + transmit_s
        return start + transmit_s + self.latency_s

    def describe(self) -> dict[str, int | None]:
        """The fields of ``net.emulation.applied``."""
        return {"delay_ms": round(self.latency_s * 1000) or None,
                "rate_bit": self.rate_bit or None}


def shaper_of(latency_s: float, rate_bit: int) -> LinkShaper | None:
    """A shaper when either is set, else None (nothing emulated, nothing built)."""
    return LinkShaper(latency_s, rate_bit) if latency_s > 0 or rate_bit > 0 else None


def wait_s(due: float) -> float:
    """Seconds from now until ``due`` (``time.monotonic()``), at least 0."""
    return max(0.0, due - time.monotonic())


class Due(NamedTuple):
    """The head of a shaped queue is not due yet: wait until ``at`` (monotonic)."""

    at: float

    async def wait(self) -> None:
        await trio.sleep(wait_s(self.at))


class DelayLine:
    """(trio) Writes what it is given no earlier than due, in order, from its own task
    (:meth:`run`): the PONGs of a stream peers opened to us, so the stream's reader is
    never held up. Holds at most ``items_max`` writes; more are dropped (PONGs only
    measure the round trip)."""

    def __init__(self, shaper: LinkShaper, items_max: int) -> None:
        self.shaper = shaper
        self.items_max = items_max
        self.items: deque[tuple[float, bytes]] = deque()
        self.event = trio.Event()

    def put(self, data: bytes) -> bool:
        if len(self.items) >= self.items_max:
            return False
        self.items.append((self.shaper.due(len(data)), data))
        self.event.set()
        return True

    async def run(self, write: Callable[[bytes], Awaitable[object]], timeout_s: float
                  ) -> None:
        """Until cancelled, or a write fails or stalls for ``timeout_s``."""
        while True:
            while not self.items:
                await self.event.wait()
                self.event = trio.Event()
            due, data = self.items[0]
            await trio.sleep(wait_s(due))
            self.items.popleft()
            with trio.move_on_after(timeout_s) as scope:
                try:
                    await write(data)
                except Exception:
                    return
            if scope.cancelled_caught:
                return
