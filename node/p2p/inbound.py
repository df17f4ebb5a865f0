"""Inbound: the streams peers open to us.

* Message streams (``/shardnet/msg/1.0.0``): frames are decoded into typed items for
  the :class:`~node.p2p.bridge.Inbox`; PINGs are answered with PONGs on the same stream.
  When the node's loop falls behind, the reader stops reading for a while
  (back-pressure onto the sender) before it drops anything.
* Request streams (``/shardnet/req/1.0.0``): one request per stream, answered by the
  request handler on the asyncio loop. At most ``requests_in_flight_max`` streams are
  served at once (``requests_in_flight_per_peer_max`` per peer), counted from the
  moment a stream opens: one more is answered ``busy`` at once and closed, counted and
  logged as ``requests_in_flight_full``.

Both refuse a peer the :class:`~node.p2p.gate.PeerGate` does not admit (``unknown_peer``).
What a peer can make us buffer is bounded: per message stream one frame
(``frame_bytes_max``) plus one read, at most ``msg_streams_per_peer_max`` message streams
per peer (one more is reset: ``too_many_streams``), and per request stream one
``request_bytes_max`` frame.

A malformed or oversized frame resets that stream, is counted and logged as
``p2p.dropped``; the node keeps running. A request the handler rejects with a
``ShardnetError`` (say, undecodable bytes) is the peer's fault: it gets the error's
``reason`` back, counted as ``request_rejected``. Any other exception of the handler
is our own failure: the peer gets a generic error, never our internal text, and it is
logged as ``p2p.handler_failed`` and counted as ``handler_error``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import NamedTuple

import trio
from libp2p.abc import INetStream

from consensus.kernel.errors import InvariantViolation, ShardnetError
from node.p2p.api import RequestHandler
from node.p2p.bridge import InboundMessage, Inbox, InboxItem, Part, Shared, wait_concurrent
from node.p2p.framing import (
    BUSY_ANSWER,
    KIND_MSG,
    KIND_PING,
    KIND_REQ,
    MSG_KINDS,
    REQ_KINDS,
    RESP_ERROR,
    RESP_LENGTH_EXTRA,
    RESP_OK,
    FrameDecoder,
    encode_pong,
    encode_resp,
)
from node.p2p.gate import REQUESTS_IN_FLIGHT_FULL, PeerGate, RequestSlots, stream_peer
from node.p2p.sessions import PINGS_PENDING_MAX, READ_BYTES, reset
from node.p2p.shaping import DelayLine, wait_s

TOO_MANY_STREAMS = "too_many_streams"
NO_HANDLER_ANSWER = b"no request handler"
HANDLER_FAILED_ANSWER = b"request failed"
TOO_LARGE_ANSWER = b"response too large"


class Answer(NamedTuple):
    status: int  # RESP_OK or RESP_ERROR
    payload: bytes


class Inbound(Part):
    """Serves the message and request streams peers open to us (trio side), handing
    what they carry to the asyncio loop."""

    def __init__(
        self,
        shared: Shared,
        inbox: Inbox,
        gate: PeerGate,
        heard: Callable[[str], None],
    ) -> None:
        super().__init__(shared)
        config = shared.config
        self._inbox = inbox
        self._gate = gate
        self.slots = RequestSlots(
            config.requests_in_flight_max, config.requests_in_flight_per_peer_max
        )
        self._msg_streams: dict[str, int] = {}  # peer -> its message streams open to us
        self._heard = heard  # tells the heartbeat of our stream to the peer it is alive
        self.request_handler: RequestHandler | None = None
        # Long enough for a busy node to catch up, short of the peer's write timeout and
        # heartbeat (a reader waiting for room answers no PING).
        self._backpressure_s = min(config.write_timeout_s, config.heartbeat_timeout_s) / 2

    async def handle_msg_stream(self, stream: INetStream) -> None:
        peer = stream_peer(stream)
        if not await self._gate.admit_stream(stream, "msg"):
            return
        open_streams = self._msg_streams.get(peer, 0)
        if open_streams >= self.config.msg_streams_per_peer_max:
            self._drop(peer, TOO_MANY_STREAMS, detail=f"{open_streams} open")
            await reset(stream)
            return
        self._msg_streams[peer] = open_streams + 1
        try:
            if self._shaper is None:
                await self._read_msg_stream(peer, stream)
            else:  # userspace network emulation: PONGs leave when due, from their task
                async with trio.open_nursery() as nursery:
                    pongs = DelayLine(self._shaper, PINGS_PENDING_MAX)
                    nursery.start_soon(pongs.run, stream.write, self.config.write_timeout_s)
                    await self._read_msg_stream(peer, stream, pongs)
                    nursery.cancel_scope.cancel()
        finally:
            left = self._msg_streams[peer] - 1
            if left:
                self._msg_streams[peer] = left
            else:
                del self._msg_streams[peer]

    async def _read_msg_stream(self, peer: str, stream: INetStream,
                               pongs: DelayLine | None = None) -> None:
        cfg = self.config
        stats = self._stats
        decoder = FrameDecoder(cfg.frame_bytes_max, MSG_KINDS)
        try:
            while True:
                chunk = await stream.read(READ_BYTES)
                self._heard(peer)
                frames = decoder.feed(chunk)
                items: list[InboundMessage] = []
                pings: list[bytes] = []
                for frame in frames:
                    if frame.kind == KIND_MSG:
                        items.append(InboundMessage(peer, frame.channel, frame.payload))
                    elif frame.kind == KIND_PING:
                        pings.append(encode_pong(frame.nonce))
                if items:
                    with stats.lock:
                        for item in items:
                            stats.msgs_received[item.channel] += 1
                            stats.bytes_received[item.channel] += len(item.data)
                    await self._deliver(peer, items)
                if pings and pongs is not None:
                    pongs.put(b"".join(pings))
                elif pings:
                    with trio.move_on_after(cfg.write_timeout_s) as scope:
                        await stream.write(b"".join(pings))
                    if scope.cancelled_caught:
                        with stats.lock:
                            stats.write_timeouts += 1
                        await reset(stream)
                        return
                if decoder.error is not None:
                    self._drop(peer, decoder.error.reason, detail=decoder.error.detail)
                    await reset(stream)
                    return
        except Exception as error:  # EOF, reset, connection lost: the stream is over
            self._log.debug("p2p.stream_closed", peer=peer, error=repr(error))

    async def _deliver(self, peer: str, items: Sequence[InboxItem]) -> None:
        """Hand items to the asyncio side. When its inbox is full, stop reading (the
        sender's writes stall: back-pressure) while the node catches up, and drop only
        what still does not fit after ``_backpressure_s`` (``inbound_full`` when the
        inbox holds ``inbound_queue_max`` items, ``inbound_bytes_full`` when their
        payloads fill ``inbound_queue_bytes_max``)."""
        inbox = self._inbox
        reason = "inbound_full"
        with trio.move_on_after(self._backpressure_s):
            while True:
                refused, reason = inbox.put_many(items)
                if not refused:
                    return
                items = items[len(items) - refused :]
                await inbox.wait_room(len(items[0].data))
        self._drop(peer, reason, len(items))

    async def handle_req_stream(self, stream: INetStream) -> None:
        peer = stream_peer(stream)
        if not await self._gate.admit_stream(stream, "req"):
            return
        refused_by = self.slots.take(peer)
        if refused_by is not None:
            await self._refuse_busy(peer, stream, refused_by)
            return
        try:
            await self._serve_request(peer, stream)
        finally:
            self.slots.give_back(peer)

    async def _refuse_busy(self, peer: str, stream: INetStream, refused_by: str) -> None:
        """Answer ``busy`` without reading the request, and close the stream."""
        self._drop(peer, REQUESTS_IN_FLIGHT_FULL, detail=refused_by)
        try:
            with trio.fail_after(self.config.write_timeout_s):
                await stream.write(encode_resp(RESP_ERROR, BUSY_ANSWER))
                await stream.close()
        except Exception as error:
            self._log.debug("p2p.request_aborted", peer=peer, error=repr(error))
            await reset(stream)

    async def _serve_request(self, peer: str, stream: INetStream) -> None:
        cfg = self.config
        decoder = FrameDecoder(cfg.request_bytes_max, REQ_KINDS)
        try:
            with trio.fail_after(cfg.request_timeout_s):
                payload: bytes | None = None
                while payload is None:
                    frames = decoder.feed(await stream.read(READ_BYTES))
                    if decoder.error is not None:
                        self._drop(peer, decoder.error.reason, detail=decoder.error.detail)
                        await reset(stream)
                        return
                    if frames and frames[0].kind == KIND_REQ:
                        payload = frames[0].payload
                answer = await self._answer(peer, payload)
                if len(answer.payload) + RESP_LENGTH_EXTRA > cfg.frame_bytes_max:
                    self._log.error("p2p.response_too_large", peer=peer, size=len(answer.payload))
                    answer = Answer(RESP_ERROR, TOO_LARGE_ANSWER)
                if self._shaper is not None:  # userspace network emulation
                    await trio.sleep(wait_s(self._shaper.due(len(answer.payload))))
                await stream.write(encode_resp(answer.status, answer.payload))
                await stream.close()
            with self._stats.lock:
                self._stats.requests_served += 1
        except Exception as error:
            self._log.debug("p2p.request_aborted", peer=peer, error=repr(error))
            await reset(stream)

    async def _answer(self, peer: str, payload: bytes) -> Answer:
        handler = self.request_handler
        loop = self._thread.loop
        if handler is None or loop is None:
            return Answer(RESP_ERROR, NO_HANDLER_ANSWER)
        future = asyncio.run_coroutine_threadsafe(self._call_handler(handler, peer, payload), loop)
        try:
            return await wait_concurrent(future)
        except trio.Cancelled:
            future.cancel()
            raise

    async def _call_handler(self, handler: RequestHandler, peer: str, payload: bytes) -> Answer:
        """(asyncio) The handler's answer; its exceptions become an error answer."""
        try:
            return Answer(RESP_OK, bytes(await handler(peer, payload)))
        except ShardnetError as error:
            if isinstance(error, InvariantViolation):
                return self._handler_failed(peer, error)
            self._drop(peer, "request_rejected", detail=error.reason)
            return Answer(RESP_ERROR, error.reason.encode())
        except Exception as error:
            return self._handler_failed(peer, error)

    def _handler_failed(self, peer: str, error: Exception) -> Answer:
        self._drop.count("handler_error")
        self._log.error("p2p.handler_failed", peer=peer, error=repr(error), exc_info=error)
        return Answer(RESP_ERROR, HANDLER_FAILED_ANSWER)

