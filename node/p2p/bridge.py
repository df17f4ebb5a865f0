"""Thread-safe queues between the asyncio node loop and the p2p thread's trio loop.

Both directions batch their wake-ups: a producer wakes the consumer only when no
wake-up is already pending, so one cross-thread call carries every item queued
meanwhile (P2P-NOTES: the cost is per wake-up and per write, not per byte).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import trio


class OutQueue:
    """Frames waiting to be written to one peer's message stream.

    Producer: the asyncio thread (:meth:`put`), or the trio thread for control frames.
    Consumer: the trio writer task (:meth:`take`). Bounded by frames and bytes; a full
    queue refuses (the caller counts the drop). Control frames (heartbeats) bypass the
    bound and go first.
    """

    def __init__(self, frames_max: int, bytes_max: int) -> None:
        self.frames_max = frames_max
        self.bytes_max = bytes_max
        self.lock = threading.Lock()
        self.frames: deque[tuple[int, bytes]] = deque()  # (channel, encoded frame)
        self.control: deque[bytes] = deque()
        self.queued_bytes = 0
        self.wake_pending = False
        self.event: trio.Event | None = None  # created and awaited only in trio
        self.token: trio.lowlevel.TrioToken | None = None
        self.drain_waiters: list[tuple[int, asyncio.Event, asyncio.AbstractEventLoop]] = []

    def __len__(self) -> int:
        return len(self.frames)

    def put(self, channel: int, frame: bytes) -> bool:
        """Enqueue a frame (any thread). False when the queue is full."""
        with self.lock:
            if len(self.frames) >= self.frames_max or (
                self.queued_bytes + len(frame) > self.bytes_max
            ):
                return False
            self.frames.append((channel, frame))
            self.queued_bytes += len(frame)
            wake = not self.wake_pending
            self.wake_pending = True
        if wake:
            self._wake()
        return True

    def put_control(self, frame: bytes) -> None:
        with self.lock:
            self.control.append(frame)
            wake = not self.wake_pending
            self.wake_pending = True
        if wake:
            self._wake()

    def _wake(self) -> None:
        token = self.token
        if token is None:
            return  # no writer yet: it looks at the queue when it starts
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._set_event)

    def _set_event(self) -> None:
        if self.event is not None:
            self.event.set()

    def take(self, bytes_max: int) -> tuple[list[bytes], list[int], trio.Event | None]:
        """(trio) Pop frames up to ``bytes_max`` (at least one). When empty, return
        an event that is set at the next put; the caller awaits it and calls again."""
        frames: list[bytes] = []
        channels: list[int] = []
        with self.lock:
            size = 0
            while self.control:
                frame = self.control.popleft()
                frames.append(frame)
                channels.append(-1)
                size += len(frame)
            while self.frames and (size < bytes_max or not frames):
                channel, frame = self.frames.popleft()
                frames.append(frame)
                channels.append(channel)
                size += len(frame)
                self.queued_bytes -= len(frame)
            if not frames:
                self.wake_pending = False
                self.event = trio.Event()
                return frames, channels, self.event
            waiters = self._ready_waiters()
        for event, loop in waiters:
            loop.call_soon_threadsafe(event.set)
        return frames, channels, None

    def _ready_waiters(self) -> list[tuple[asyncio.Event, asyncio.AbstractEventLoop]]:
        if not self.drain_waiters:
            return []
        ready = [(ev, lp) for below, ev, lp in self.drain_waiters if len(self.frames) <= below]
        self.drain_waiters = [w for w in self.drain_waiters if len(self.frames) > w[0]]
        return ready

    def clear(self) -> int:
        """Drop everything queued; return the number of application frames dropped."""
        with self.lock:
            dropped = len(self.frames)
            self.frames.clear()
            self.control.clear()
            self.queued_bytes = 0
            waiters = [(ev, lp) for _, ev, lp in self.drain_waiters]
            self.drain_waiters = []
        for event, loop in waiters:
            loop.call_soon_threadsafe(event.set)
        return dropped


class Inbox:
    """Items from the trio thread to the asyncio loop, delivered in batches.

    ``put_many`` (trio thread) appends and, if no drain is pending, schedules one
    ``dispatch`` call on the asyncio loop for everything queued meanwhile. When the
    inbox is full, readers can ``wait_room`` (back-pressure onto the sender's stream)
    before they give up and drop.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        items_max: int,
        dispatch: Callable[[list[tuple[Any, ...]]], None],
    ) -> None:
        self.loop = loop
        self.items_max = items_max
        self.dispatch = dispatch
        self.lock = threading.Lock()
        self.items: list[tuple[Any, ...]] = []
        self.drain_pending = False
        self.closed = False
        self.token: trio.lowlevel.TrioToken | None = None
        self._room: trio.Event | None = None  # created and awaited in trio

    def full(self) -> bool:
        return len(self.items) >= self.items_max

    async def wait_room(self) -> None:
        """(trio) Wait until the asyncio side has drained the inbox."""
        with self.lock:
            if len(self.items) < self.items_max:
                return
            if self._room is None:
                self._room = trio.Event()
            room = self._room
        await room.wait()

    def put_many(self, items: list[tuple[Any, ...]]) -> int:
        """Queue items; return how many were refused because the inbox is full."""
        with self.lock:
            room = self.items_max - len(self.items)
            refused = max(0, len(items) - room)
            if refused:
                items = items[:room]
            self.items.extend(items)
            wake = bool(self.items) and not self.drain_pending
            if wake:
                self.drain_pending = True
        if wake and not self.closed:
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # loop closed during shutdown
                self.closed = True
        return refused

    def _drain(self) -> None:
        with self.lock:
            batch = self.items
            self.items = []
            self.drain_pending = False
            room, self._room = self._room, None
        if room is not None and self.token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(room.set)
        if batch:
            self.dispatch(batch)
