"""Outbound: a supervised message stream to every configured peer, its send queue, and
the requests we make.

A supervisor per configured peer dials it (resolving DNS names with getaddrinfo and
dialling ``/ip4``), clears the swarm's negative dial cache and stale addresses first,
backs off exponentially, and runs a session: writer, heartbeat (PING every
``heartbeat_interval_s``; nothing heard from the peer for ``heartbeat_timeout_s``, no
PONG on this stream and no bytes on its stream to us, means the peer is frozen and the
connection is closed) and the reader of the heartbeat answers. Bytes on the peer's own
stream count because a PING waits behind up to ``write_batch_bytes_max`` of queued
frames and the PONG behind the peer's: on a starved machine a busy, healthy peer's
PONG can take longer than the timeout. Every write piece (up to 256 KiB) has a timeout.
Messages queued for a peer that is down wait (bounded) in its :class:`OutQueue` and go
out, in order, once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple

import multiaddr  # type: ignore[import-untyped]
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from node.p2p.bridge import Part, Shared, settle
from node.p2p.config import (
    P2PError,
    PeerSpec,
    RequestFailed,
    is_ipv4,
    split_host_port,
)
from node.p2p.framing import (
    BUSY_ANSWER,
    MSG_KINDS,
    MSG_LENGTH_EXTRA,
    MSG_OVERHEAD_BYTES,
    REQ_LENGTH_EXTRA,
    RESP_KINDS,
    RESP_OK,
    FrameDecoder,
    encode_msg,
    encode_ping,
    encode_req,
)
from node.p2p.shaping import wait_s

MSG_PROTOCOL = TProtocol("/shardnet/msg/1.0.0")
REQ_PROTOCOL = TProtocol("/shardnet/req/1.0.0")
READ_BYTES = 256 * 1024
# A batch goes out in pieces of at most this (yamux's initial stream window), each with
# its own ``write_timeout_s``: the timeout measures a stalled peer, not a slow machine
# (a 1 MiB batch needing several window updates took over 5 s under heavy CPU load).
WRITE_PIECE_BYTES = 256 * 1024
CLOSE_TIMEOUT_S = 1.0
CONTROL = -1  # the channel of a control frame (PING) in a write batch
PONG_FRAME_BYTES_MAX = 64  # our outbound message stream only carries PONGs back
PONG_READ_BYTES = 4096
PINGS_PENDING_MAX = 64  # unanswered pings remembered for the round-trip time


class QueuedFrame(NamedTuple):
    channel: int
    frame: bytes


class WriteBatch(NamedTuple):
    """Encoded frames for one write; ``channels[i]`` is ``CONTROL`` for a PING."""

    frames: list[bytes]
    channels: list[int]

    def app_frames(self) -> int:
        return sum(1 for channel in self.channels if channel != CONTROL)


class DrainWaiter(NamedTuple):
    frames_below: int
    event: asyncio.Event
    loop: asyncio.AbstractEventLoop


class SendBudget:
    """Bytes queued for all peers together (any thread), at most ``bytes_max``."""

    def __init__(self, bytes_max: int) -> None:
        self.bytes_max = bytes_max
        self.used = 0
        self.lock = threading.Lock()

    def acquire(self, size: int) -> bool:
        with self.lock:
            if self.used + size > self.bytes_max:
                return False
            self.used += size
            return True

    def release(self, size: int) -> None:
        with self.lock:
            self.used -= size


QUEUE_FULL = "queue_full"  # the peer's queue holds send_queue_frames_max / _bytes_max
SEND_BUDGET_FULL = "send_budget_full"  # all queues hold send_queues_bytes_max


class OutQueue:
    """Frames waiting to be written to one peer's message stream.

    Producer: the asyncio thread (:meth:`put`), or the trio thread for control frames.
    Consumer: the trio writer task (:meth:`take`). Bounded by frames and bytes, and by
    the :class:`SendBudget` all peers' queues share; a full queue refuses (the caller
    counts the drop). Control frames (heartbeats) bypass the bounds and go first.
    """

    def __init__(self, frames_max: int, bytes_max: int, budget: SendBudget | None = None
                 ) -> None:
        self.frames_max = frames_max
        self.bytes_max = bytes_max
        self.budget = budget if budget is not None else SendBudget(bytes_max)
        self.refused_by = QUEUE_FULL  # why the last refused put was refused
        self.lock = threading.Lock()
        self.frames: deque[QueuedFrame] = deque()
        self.control: deque[bytes] = deque()
        self.queued_bytes = 0
        self.wake_pending = False
        self.event: trio.Event | None = None  # created and awaited only in trio
        self.token: trio.lowlevel.TrioToken | None = None
        self.drain_waiters: list[DrainWaiter] = []

    def __len__(self) -> int:
        return len(self.frames)

    def put(self, channel: int, frame: bytes) -> bool:
        """Enqueue a frame (any thread). False when the queue is full."""
        with self.lock:
            if len(self.frames) >= self.frames_max or (
                self.queued_bytes + len(frame) > self.bytes_max
            ):
                self.refused_by = QUEUE_FULL
                return False
            if not self.budget.acquire(len(frame)):
                self.refused_by = SEND_BUDGET_FULL
                return False
            self.frames.append(QueuedFrame(channel, frame))
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

    def take(self, bytes_max: int) -> WriteBatch | trio.Event:
        """(trio) Pop frames up to ``bytes_max`` (at least one). When empty, return
        an event that is set at the next put; the caller awaits it and calls again."""
        frames: list[bytes] = []
        channels: list[int] = []
        with self.lock:
            size = 0
            while self.control:
                frame = self.control.popleft()
                frames.append(frame)
                channels.append(CONTROL)
                size += len(frame)
            while self.frames and (size < bytes_max or not frames):
                channel, frame = self.frames.popleft()
                frames.append(frame)
                channels.append(channel)
                size += len(frame)
                self.queued_bytes -= len(frame)
                self.budget.release(len(frame))
            if not frames:
                self.wake_pending = False
                self.event = trio.Event()
                return self.event
            waiters = self._ready_waiters()
        for waiter in waiters:
            waiter.loop.call_soon_threadsafe(waiter.event.set)
        return WriteBatch(frames, channels)

    def _ready_waiters(self) -> list[DrainWaiter]:
        if not self.drain_waiters:
            return []
        queued = len(self.frames)
        ready = [w for w in self.drain_waiters if queued <= w.frames_below]
        self.drain_waiters = [w for w in self.drain_waiters if queued > w.frames_below]
        return ready


NewQueue = Callable[[int, int, SendBudget], OutQueue]


class _Session:
    """State shared by the tasks of one outbound message stream."""

    def __init__(self) -> None:
        self.last_rx = trio.current_time()
        self.reason: str | None = None
        self.pings: dict[int, float] = {}  # nonce -> sent at (trio clock)


class Sessions(Part):
    """The configured peers: their send queues (filled from the asyncio side), the
    supervised stream to each (trio side), and requests to any peer."""

    def __init__(self, shared: Shared, new_queue: NewQueue | None = None) -> None:
        super().__init__(shared)
        config = shared.config
        self.known: dict[str, PeerSpec] = {spec.id: spec for spec in config.peers}
        self.budget = SendBudget(config.send_queues_bytes_max)
        new_queue = new_queue or OutQueue  # a ShapedOutQueue under network emulation
        self._queues: dict[str, OutQueue] = {
            pid: new_queue(config.send_queue_frames_max, config.send_queue_bytes_max, self.budget)
            for pid in self.known
        }
        self._connected: frozenset[str] = frozenset()
        self._connected_lock = threading.Lock()
        self.rtt_ms: dict[str, float] = {}  # last heartbeat round trip per peer
        # When each peer last sent us anything on its own message stream (trio clock):
        # a peer busy sending is not frozen, even when its PONGs queue behind bulk data.
        self._heard_at: dict[str, float] = {}
        self._host: IHost | None = None

    # ------------------------------------------------------------- asyncio side

    def connected_peers(self) -> frozenset[str]:
        return self._connected

    def queued(self, peer: str) -> int:
        queue = self._queues.get(peer)
        return len(queue) if queue is not None else 0

    def queued_total(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def send_nowait(self, peer: str, channel: int, data: bytes) -> bool:
        frame = self._encode(channel, data)
        queue = self._queues.get(peer)
        if queue is None:
            self._drop(peer, "unknown_peer")
            return False
        if not queue.put(channel, frame):
            self._drop(peer, queue.refused_by)
            return False
        return True

    def broadcast(self, peers: Iterable[str], channel: int, data: bytes) -> int:
        frame = self._encode(channel, data)
        accepted = 0
        for peer in peers:
            queue = self._queues.get(peer)
            if queue is None:
                self._drop(peer, "unknown_peer")
            elif queue.put(channel, frame):
                accepted += 1
            else:
                self._drop(peer, queue.refused_by)
        return accepted

    async def wait_sendable(self, peer: str, frames_below: int, timeout: float) -> bool:
        queue = self._queues.get(peer)
        if queue is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with queue.lock:
                if len(queue.frames) <= frames_below:
                    return True
                event = asyncio.Event()
                queue.drain_waiters.append(DrainWaiter(frames_below, event, loop))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return False

    def _encode(self, channel: int, data: bytes) -> bytes:
        if len(data) + MSG_LENGTH_EXTRA > self.config.frame_bytes_max:
            raise ValueError(f"message of {len(data)} bytes exceeds frame_bytes_max")
        return encode_msg(channel, data)

    def check_request(self, data: bytes) -> None:
        if len(data) + REQ_LENGTH_EXTRA > self.config.request_bytes_max:
            raise ValueError(f"request of {len(data)} bytes exceeds request_bytes_max")

    # ---------------------------------------------------------------- trio side

    def start(self, nursery: trio.Nursery, host: IHost) -> None:
        """(trio) Supervise every configured peer on ``host``."""
        self._host = host
        token = trio.lowlevel.current_trio_token()
        for queue in self._queues.values():
            queue.token = token
        for pid in self.known:
            nursery.start_soon(self._supervise, host, pid)

    def heard(self, peer: str) -> None:
        """(trio) ``peer`` sent us bytes on its message stream: it is alive."""
        self._heard_at[peer] = trio.current_time()

    def _set_connected(self, peer: str, connected: bool) -> None:
        with self._connected_lock:
            peers = set(self._connected)
            if connected:
                peers.add(peer)
            else:
                peers.discard(peer)
            self._connected = frozenset(peers)

    async def _resolve(self, address: str) -> multiaddr.Multiaddr:
        host, port = split_host_port(address)
        if not is_ipv4(host):
            infos = await trio.socket.getaddrinfo(
                host, port, family=socket.AF_INET, type=socket.SOCK_STREAM
            )
            if not infos:
                raise P2PError(f"{host} did not resolve", reason="dns")
            host = str(infos[0][4][0])
        return multiaddr.Multiaddr(f"/ip4/{host}/tcp/{port}")

    async def _supervise(self, host: IHost, peer: str) -> None:
        """Keep a message stream open to a configured peer, forever."""
        cfg = self.config
        stats = self._stats
        peer_id = ID.from_base58(peer)
        spec = self.known[peer]
        backoff = cfg.dial_backoff_min_s
        ever_connected = False
        failures = 0
        while True:
            try:
                with trio.fail_after(cfg.dial_timeout_s):
                    addr = await self._resolve(spec.address)
                    network = host.get_network()
                    network.unblock_peer(peer_id)  # type: ignore[attr-defined]
                    host.get_peerstore().clear_addrs(peer_id)
                    host.get_peerstore().add_addrs(peer_id, [addr], 0)
                    await host.connect(PeerInfo(peer_id, [addr]))
                    stream = await host.new_stream(peer_id, [MSG_PROTOCOL])
            except Exception as error:  # any dial failure: back off and retry
                failures += 1
                with stats.lock:
                    stats.dial_failures += 1
                log = self._log.info if failures == 1 else self._log.debug
                log("p2p.dial_failed", peer=peer, address=spec.address, error=repr(error))
                await trio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, cfg.dial_backoff_max_s)
                continue
            failures = 0
            backoff = cfg.dial_backoff_min_s
            with stats.lock:
                stats.connects += 1
                if ever_connected:
                    stats.reconnects += 1
            ever_connected = True
            reason = await self._run_session(peer, stream, str(addr))
            if reason in ("heartbeat_timeout", "write_timeout"):
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await host.get_network().close_peer(peer_id)
            await trio.sleep(cfg.dial_backoff_min_s * random.uniform(0.5, 1.0))

    async def _run_session(self, peer: str, stream: INetStream, address: str) -> str:
        queue = self._queues[peer]
        session = _Session()
        self._set_connected(peer, True)
        self._log.info("p2p.connected", peer=peer, address=address)
        try:
            async with trio.open_nursery() as nursery:

                def start(task: Callable[[], Awaitable[str]]) -> None:
                    async def run() -> None:
                        try:
                            reason = await task()
                        except Exception as error:
                            reason = f"stream_error:{type(error).__name__}"
                        if session.reason is None:
                            session.reason = reason
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(run)

                start(lambda: self._writer(peer, stream, queue))
                start(lambda: self._pong_reader(peer, stream, session))
                start(lambda: self._heartbeat(peer, queue, session))
        finally:
            self._set_connected(peer, False)
            with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
                scope.shield = True
                with contextlib.suppress(Exception):
                    await stream.reset()
            self._log.info("p2p.disconnected", peer=peer, reason=session.reason or "cancelled")
        return session.reason or "cancelled"

    async def _writer(self, peer: str, stream: INetStream, queue: OutQueue) -> str:
        cfg = self.config
        stats = self._stats
        while True:
            batch = queue.take(cfg.write_batch_bytes_max)
            if not isinstance(batch, WriteBatch):  # empty, or (emulation) not due yet
                await batch.wait()
                continue
            frames, channels = batch
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            try:
                stalled = await self._write_pieces(stream, data)
            except Exception as error:
                self._drop(peer, "write_failed", batch.app_frames(), repr(error))
                return f"write_failed:{type(error).__name__}"
            if stalled:
                with stats.lock:
                    stats.write_timeouts += 1
                self._drop(peer, "write_timeout", batch.app_frames())
                return "write_timeout"
            with stats.lock:
                stats.writes += 1
                stats.frames_written += len(frames)
                stats.frames_per_write_max = max(stats.frames_per_write_max, len(frames))
                for channel, frame in zip(channels, frames, strict=True):
                    if channel != CONTROL:
                        stats.msgs_sent[channel] += 1
                        stats.bytes_sent[channel] += len(frame) - MSG_OVERHEAD_BYTES

    async def _write_pieces(self, stream: INetStream, data: bytes) -> bool:
        """Write ``data`` in pieces; True if one made no progress in ``write_timeout_s``."""
        for start in range(0, len(data), WRITE_PIECE_BYTES):
            with trio.move_on_after(self.config.write_timeout_s) as scope:
                await stream.write(data[start : start + WRITE_PIECE_BYTES])
            if scope.cancelled_caught:
                return True
        return False

    async def _pong_reader(self, peer: str, stream: INetStream, session: _Session) -> str:
        decoder = FrameDecoder(PONG_FRAME_BYTES_MAX, MSG_KINDS)
        while True:
            chunk = await stream.read(PONG_READ_BYTES)
            now = trio.current_time()
            session.last_rx = now
            for frame in decoder.feed(chunk):
                sent_at = session.pings.pop(frame.nonce, None)
                if sent_at is not None:
                    self.rtt_ms[peer] = (now - sent_at) * 1000
            if decoder.error is not None:
                self._drop(peer, decoder.error.reason, detail=decoder.error.detail)
                return "protocol_error"

    async def _heartbeat(self, peer: str, queue: OutQueue, session: _Session) -> str:
        cfg = self.config
        nonce = 0
        while True:
            await trio.sleep(cfg.heartbeat_interval_s)
            last_heard = max(session.last_rx, self._heard_at.get(peer, session.last_rx))
            silent_s = trio.current_time() - last_heard
            if silent_s > cfg.heartbeat_timeout_s:
                with self._stats.lock:
                    self._stats.heartbeat_misses += 1
                self._log.warning("p2p.heartbeat_missed", peer=peer, silent_s=round(silent_s, 2))
                return "heartbeat_timeout"
            nonce += 1
            if len(session.pings) > PINGS_PENDING_MAX:  # keep the map bounded
                session.pings.clear()
            session.pings[nonce] = trio.current_time()
            queue.put_control(encode_ping(nonce))

    # ------------------------------------------------------------------ requests

    async def request(
        self, peer: str, data: bytes, timeout: float, future: asyncio.Future[bytes]
    ) -> None:
        """(trio) Ask ``peer`` on a fresh request stream; settle ``future`` on the
        asyncio loop with the answer or a ``RequestFailed``, whatever happens."""
        with self._stats.lock:
            self._stats.requests_sent += 1
        outcome: bytes | RequestFailed = RequestFailed("p2p host stopped", reason="not_running")
        try:
            with trio.fail_after(timeout):
                outcome = await self._exchange(peer, data)
        except trio.TooSlowError:
            outcome = RequestFailed(f"no answer from {peer} in {timeout}s", reason="timeout")
        except Exception as error:
            outcome = RequestFailed(repr(error), reason="stream_error")
        finally:
            # Settle the caller's future even when cancelled by shutdown.
            if isinstance(outcome, RequestFailed):
                with self._stats.lock:
                    self._stats.requests_failed += 1
            self._thread.call_asyncio(settle, future, outcome)

    async def _exchange(self, peer: str, data: bytes) -> bytes | RequestFailed:
        host = self._host
        if host is None:
            return RequestFailed("p2p host stopped", reason="not_running")
        stream = await host.new_stream(ID.from_base58(peer), [REQ_PROTOCOL])
        failed = True
        try:
            if self._shaper is not None:  # userspace network emulation
                await trio.sleep(wait_s(self._shaper.due(len(data))))
            await stream.write(encode_req(data))
            decoder = FrameDecoder(self.config.frame_bytes_max, RESP_KINDS)
            while True:
                frames = decoder.feed(await stream.read(READ_BYTES))
                if decoder.error is not None:
                    self._drop(peer, decoder.error.reason, detail=decoder.error.detail)
                    return RequestFailed(decoder.error.detail, reason="protocol_error")
                if frames:
                    if frames[0].status == RESP_OK:
                        failed = False
                        return frames[0].payload
                    if frames[0].payload == BUSY_ANSWER:
                        return RequestFailed(f"{peer} is busy", reason="busy")
                    message = frames[0].payload.decode(errors="replace")
                    return RequestFailed(message, reason="remote_error")
        finally:
            if failed:
                await reset(stream)
            else:
                await close(stream)


async def reset(stream: INetStream) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(Exception):
        await stream.reset()


async def close(stream: INetStream) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(Exception):
        await stream.close()
