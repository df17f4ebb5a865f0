"""The p2p thread and the way across between it and the node's asyncio loop.

py-libp2p is trio-only, so the libp2p host lives in its own thread running its own
trio loop (P2P-NOTES "Concurrency", option (a)). :class:`TrioThread` starts and stops
that thread and carries calls both ways; :class:`Inbox` carries what peers sent to the
asyncio loop as typed items (:class:`InboundMessage`, :class:`InboundGossip`).

Both directions batch their wake-ups: a producer wakes the consumer only when no
wake-up is already pending, so one cross-thread call carries every item queued
meanwhile (P2P-NOTES: the cost is per wake-up and per write, not per byte).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import NamedTuple, TypeVar, TypeVarTuple, Unpack

import trio
from structlog.typing import FilteringBoundLogger

from node.p2p.config import P2PConfig, P2PError, P2PStats
from node.p2p.drops import DropLog
from node.p2p.shaping import LinkShaper

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

STOP_TIMEOUT_S = 10.0


class InboundMessage(NamedTuple):
    """A message a peer sent on its message stream."""

    peer: str
    channel: int
    data: bytes


class InboundGossip(NamedTuple):
    """A valid gossip message on a topic we subscribe to (``origin`` published it)."""

    topic: str
    origin: str
    data: bytes


InboxItem = InboundMessage | InboundGossip


class Inbox:
    """Items from the trio thread to the asyncio loop, delivered in batches.

    ``put_many`` (trio thread) appends and, if no drain is pending, schedules one
    ``dispatch`` call on the asyncio loop (set by :meth:`open`) for everything queued
    meanwhile. Bounded by items (``items_max``) and by the bytes of their payloads
    (``bytes_max``; an empty inbox takes any one item, so it holds at most ``bytes_max``
    plus one frame). When the inbox is full, readers can ``wait_room`` (back-pressure
    onto the sender's stream) before they give up and drop.
    """

    def __init__(
        self, items_max: int, dispatch: Callable[[list[InboxItem]], None],
        bytes_max: int | None = None,
    ) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.items_max = items_max
        self.bytes_max = bytes_max
        self.dispatch = dispatch
        self.lock = threading.Lock()
        self.items: list[InboxItem] = []
        self.queued_bytes = 0
        self.queued_bytes_peak = 0
        self.drain_pending = False
        self.closed = False
        self.token: trio.lowlevel.TrioToken | None = None
        self._room: trio.Event | None = None  # created and awaited in trio

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver to ``loop`` from now on."""
        self.loop = loop
        self.closed = False

    def _fits(self, size: int) -> bool:
        """(under the lock) One more item of ``size`` payload bytes fits."""
        if len(self.items) >= self.items_max:
            return False
        limit = self.bytes_max
        return limit is None or not self.items or self.queued_bytes + size <= limit

    async def wait_room(self, size: int = 0) -> None:
        """(trio) Wait until the asyncio side has drained the inbox, if an item of
        ``size`` payload bytes does not fit now."""
        await trio.lowlevel.checkpoint()
        with self.lock:
            if self._fits(size):
                return
            if self._room is None:
                self._room = trio.Event()
            room = self._room
        await room.wait()

    def put_many(self, items: Sequence[InboxItem]) -> tuple[int, str]:
        """Queue items, in order, while they fit; return how many were refused and
        why (``inbound_full``: items_max; ``inbound_bytes_full``: bytes_max)."""
        reason = ""
        size = sum([len(item.data) for item in items])
        with self.lock:
            limit = self.bytes_max
            if len(self.items) + len(items) <= self.items_max and (
                limit is None or self.queued_bytes + size <= limit
            ):  # the usual case: all fit
                self.items.extend(items)
                self.queued_bytes += size
                taken = len(items)
            else:
                taken = 0
                for item in items:
                    if not self._fits(len(item.data)):
                        full = len(self.items) >= self.items_max
                        reason = "inbound_full" if full else "inbound_bytes_full"
                        break
                    self.items.append(item)
                    self.queued_bytes += len(item.data)
                    taken += 1
            self.queued_bytes_peak = max(self.queued_bytes_peak, self.queued_bytes)
            refused = len(items) - taken
            wake = bool(self.items) and not self.drain_pending
            if wake:
                self.drain_pending = True
        loop = self.loop
        if wake and not self.closed and loop is not None:
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # loop closed during shutdown
                self.closed = True
        return refused, reason

    def _drain(self) -> None:
        with self.lock:
            batch = self.items
            self.items = []
            self.queued_bytes = 0
            self.drain_pending = False
            room, self._room = self._room, None
        if room is not None and self.token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(room.set)
        if batch:
            self.dispatch(batch)


# Entered in the p2p thread: sets up the host and yields the nursery that runs its
# tasks once it listens; leaving it stops everything.
Serve = Callable[[], AbstractAsyncContextManager[trio.Nursery]]


class TrioThread:
    """The p2p thread: runs ``serve`` on a trio loop, and calls across threads.

    ``start`` returns once ``serve`` has yielded (the host listens) or raises
    ``P2PError`` (``start_failed``) or ``TimeoutError``. An error after that is a
    crash: ``crashed`` holds it, ``running`` turns False and ``p2p.crashed`` is logged.
    """

    def __init__(self, log: FilteringBoundLogger) -> None:
        self._log = log
        self.loop: asyncio.AbstractEventLoop | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None
        self.running = False
        self.crashed: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._finished: asyncio.Future[None] | None = None
        self._stop_event: trio.Event | None = None
        self._listening = False

    @property
    def started(self) -> bool:
        return self._thread is not None

    async def start(self, serve: Serve, timeout_s: float) -> None:
        if self._thread is not None:
            raise RuntimeError("P2PHost already started")
        loop = asyncio.get_running_loop()
        self.loop = loop
        started: asyncio.Future[None] = loop.create_future()
        self._finished = loop.create_future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(serve, started), name="p2p-trio", daemon=True
        )
        self._thread.start()
        await asyncio.wait_for(started, timeout_s)  # TimeoutError: the caller stops us
        self.running = True

    async def wait_ended(self) -> None:
        """Return when the p2p thread has ended (after ``stop``, or a crash)."""
        finished = self._finished
        if finished is None:
            raise RuntimeError("P2PHost not started")
        await asyncio.shield(finished)

    async def stop(self) -> bool:
        """End the thread (idempotent); False if it was never started."""
        self.running = False
        token, thread, finished = self.token, self._thread, self._finished
        if thread is None or finished is None:
            return False
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._request_stop)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(finished), STOP_TIMEOUT_S)
        return True

    def _thread_main(self, serve: Serve, started: asyncio.Future[None]) -> None:
        loop = self.loop
        if loop is None:
            raise RuntimeError("TrioThread started without a loop")  # set by start()
        error: BaseException | None = None
        try:
            trio.run(self._trio_main, serve, started)
        except BaseException as exc:  # the thread must report, whatever happened
            error = exc
        if error is not None and not self._listening:
            failure = P2PError(f"p2p host failed to start: {error!r}", reason="start_failed")
            loop.call_soon_threadsafe(settle, started, failure)
        elif error is not None:
            self.crashed = error
            self.running = False
            self._log.error("p2p.crashed", error=repr(error))
        finished = self._finished
        if finished is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, finished, None)

    def _request_stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    async def _trio_main(self, serve: Serve, started: asyncio.Future[None]) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop_event = trio.Event()
        async with serve() as nursery:
            self.nursery = nursery
            self._listening = True
            self.call_asyncio(settle, started, None)
            await self._stop_event.wait()
            nursery.cancel_scope.cancel()
        self.nursery = None

    # ------------------------------------------------------------ across threads

    def call_trio(self, fn: Callable[[Unpack[Ts]], object], *args: *Ts) -> None:
        """(asyncio) Run ``fn(*args)`` soon in the p2p thread; P2PError if not running."""
        token = self.token
        if token is None or not self.running:
            raise P2PError("p2p host is not running", reason="not_running")
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError as error:
            raise P2PError("p2p host is not running", reason="not_running") from error

    def call_asyncio(self, fn: Callable[[Unpack[Ts]], object], *args: *Ts) -> None:
        """(trio) Run ``fn(*args)`` soon on the asyncio loop, unless it is closed."""
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(fn, *args)

    def start_task(
        self, fn: Callable[[Unpack[Ts]], Awaitable[object]], *args: *Ts
    ) -> None:
        """(trio) Start a task asked for by the asyncio side, in the main nursery."""
        if self.nursery is not None:
            self.nursery.start_soon(self._guarded, fn, *args)

    async def _guarded(
        self, fn: Callable[[Unpack[Ts]], Awaitable[object]], *args: *Ts
    ) -> None:
        """A task's failure must not end the host."""
        try:
            await fn(*args)
        except Exception as error:
            self._log.error("p2p.task_failed", task=getattr(fn, "__name__", "?"),
                            error=repr(error))


@dataclass(frozen=True, slots=True)
class Shared:
    """What every part of one host uses."""

    config: P2PConfig
    stats: P2PStats
    drop: DropLog
    log: FilteringBoundLogger
    thread: TrioThread
    # Userspace network emulation (node.p2p.shaping); None: off, nothing delayed.
    shaper: LinkShaper | None = None


class Part:
    """A part of the host (sessions, inbound, gossip), built on the shared pieces."""

    def __init__(self, shared: Shared) -> None:
        self.config = shared.config
        self._stats = shared.stats
        self._drop = shared.drop
        self._log = shared.log
        self._thread = shared.thread
        self._shaper = shared.shaper


def settle(future: asyncio.Future[T], outcome: T | BaseException) -> None:
    """(asyncio) Complete ``future`` with a result or an exception, unless done."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


async def wait_concurrent(future: concurrent.futures.Future[T]) -> T:
    """(trio) Await a future completed by the asyncio thread."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    await done.wait()
    return future.result()
