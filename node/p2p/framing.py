"""Length-prefixed frames for shardnet's libp2p streams.

Every frame is ``u32 length (big-endian) | u8 kind | body``; ``length`` counts the kind
byte and the body. The decoder checks the length against a bound before it buffers a
single byte of the body, so a peer cannot make us allocate more than ``frame_bytes_max``
plus one read. Anything that is not a well-formed frame raises :class:`FrameError` with a
stable ``reason`` (``frame_oversized``, ``frame_malformed``): the caller drops the
stream, counts the reason and keeps running.

Kinds on the message stream (``/shardnet/msg/1.0.0``)::

    MSG   u16 channel | payload       application message
    PING  u64 nonce                   heartbeat, answered with PONG on the same stream
    PONG  u64 nonce

Kinds on the request stream (``/shardnet/req/1.0.0``)::

    REQ   payload
    RESP  u8 status | payload         status 0 = ok, 1 = handler error

This module is pure: no I/O, no trio, no asyncio.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from consensus.kernel.errors import ShardnetError

KIND_MSG = 1
KIND_PING = 2
KIND_PONG = 3
KIND_REQ = 4
KIND_RESP = 5

RESP_OK = 0
RESP_ERROR = 1

CHANNEL_MAX = 0xFFFF
HEADER_BYTES = 5  # u32 length + u8 kind

_LEN = struct.Struct(">I")
_MSG_HEADER = struct.Struct(">IBH")  # length, kind, channel
_NONCE_FRAME = struct.Struct(">IBQ")  # length, kind, nonce
_RESP_HEADER = struct.Struct(">IBB")  # length, kind, status
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")

# Body sizes (after the u32 length) that each kind must have at least / exactly.
_MIN_LENGTH = {KIND_MSG: 3, KIND_PING: 9, KIND_PONG: 9, KIND_REQ: 1, KIND_RESP: 2}
_EXACT_LENGTH = {KIND_PING: 9, KIND_PONG: 9}


class FrameError(ShardnetError):
    """Bytes on a stream that are not a valid frame (peer fault, not our bug)."""

    reason = "frame_malformed"


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``channel`` is set for MSG, ``nonce`` for PING/PONG,
    ``status`` for RESP; ``payload`` holds the application bytes (MSG, REQ, RESP)."""

    kind: int
    payload: bytes = b""
    channel: int = 0
    nonce: int = 0
    status: int = 0


def encode_msg(channel: int, payload: bytes) -> bytes:
    """One MSG frame. Callers check size bounds; a bad channel is our own bug."""
    if not 0 <= channel <= CHANNEL_MAX:
        raise ValueError(f"channel {channel} out of range 0..{CHANNEL_MAX}")
    return _MSG_HEADER.pack(len(payload) + 3, KIND_MSG, channel) + payload


def encode_ping(nonce: int) -> bytes:
    return _NONCE_FRAME.pack(9, KIND_PING, nonce)


def encode_pong(nonce: int) -> bytes:
    return _NONCE_FRAME.pack(9, KIND_PONG, nonce)


def encode_req(payload: bytes) -> bytes:
    return _LEN.pack(len(payload) + 1) + bytes((KIND_REQ,)) + payload


def encode_resp(status: int, payload: bytes) -> bytes:
    return _RESP_HEADER.pack(len(payload) + 2, KIND_RESP, status) + payload


def frame_overhead(kind: int) -> int:
    """Bytes a frame of ``kind`` adds around its payload."""
    return {KIND_MSG: 7, KIND_REQ: 5, KIND_RESP: 6}.get(kind, 13)


class FrameDecoder:
    """Incremental decoder: ``feed(chunk)`` returns every frame the chunk completes.

    At the first invalid byte ``feed`` returns the frames decoded before it and sets
    ``error``; the decoder is then unusable and the stream it reads must be reset.
    """

    __slots__ = ("_allowed", "_buf", "_frame_bytes_max", "error")

    def __init__(self, frame_bytes_max: int, allowed_kinds: frozenset[int]) -> None:
        if frame_bytes_max < 16:
            raise ValueError("frame_bytes_max must be at least 16")
        self._frame_bytes_max = frame_bytes_max
        self._allowed = allowed_kinds
        self._buf = bytearray()
        self.error: FrameError | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Frame]:
        if self.error is not None:
            raise ValueError("decoder already failed")  # our bug: stream must be reset
        buf = self._buf
        buf += chunk
        frames: list[Frame] = []
        offset = 0
        end = len(buf)
        try:
            while end - offset >= HEADER_BYTES:
                (length,) = _LEN.unpack_from(buf, offset)
                kind = buf[offset + 4]
                # Verify the header before buffering the body.
                if length > self._frame_bytes_max:
                    raise FrameError(
                        f"frame of {length} bytes > {self._frame_bytes_max}",
                        reason="frame_oversized",
                    )
                if kind not in self._allowed:
                    raise FrameError(f"unknown frame kind {kind}", reason="frame_malformed")
                if length < _MIN_LENGTH[kind] or (
                    kind in _EXACT_LENGTH and length != _EXACT_LENGTH[kind]
                ):
                    raise FrameError(
                        f"frame kind {kind} has bad length {length}", reason="frame_malformed"
                    )
                if end - offset < 4 + length:
                    break
                body = offset + 5
                stop = offset + 4 + length
                if kind == KIND_MSG:
                    (channel,) = _U16.unpack_from(buf, body)
                    frames.append(Frame(KIND_MSG, bytes(buf[body + 2 : stop]), channel=channel))
                elif kind in (KIND_PING, KIND_PONG):
                    (nonce,) = _U64.unpack_from(buf, body)
                    frames.append(Frame(kind, nonce=nonce))
                elif kind == KIND_REQ:
                    frames.append(Frame(KIND_REQ, bytes(buf[body:stop])))
                else:
                    status = buf[body]
                    if status not in (RESP_OK, RESP_ERROR):
                        raise FrameError(
                            f"unknown response status {status}", reason="frame_malformed"
                        )
                    frames.append(Frame(KIND_RESP, bytes(buf[body + 1 : stop]), status=status))
                offset = stop
        except FrameError as error:
            self.error = error
            buf.clear()
            return frames
        if offset:
            del buf[:offset]
        return frames


MSG_KINDS = frozenset({KIND_MSG, KIND_PING, KIND_PONG})
REQ_KINDS = frozenset({KIND_REQ})
RESP_KINDS = frozenset({KIND_RESP})
