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
    RESP  u8 status | payload         status 0 = ok, 1 = error (payload: a short reason;
                                      ``busy``: too many requests in flight, ask later)

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
# The error answer of a peer that serves as many requests at once as it allows.
BUSY_ANSWER = b"busy"

CHANNEL_MAX = 0xFFFF

# Frame layout. The u32 length prefix counts everything after it: the kind byte, the
# kind's fixed fields, and the payload.
LENGTH_BYTES = 4  # u32 length prefix
KIND_BYTES = 1  # u8 kind
HEADER_BYTES = LENGTH_BYTES + KIND_BYTES
CHANNEL_BYTES = 2  # MSG: u16 channel
NONCE_BYTES = 8  # PING/PONG: u64 nonce
STATUS_BYTES = 1  # RESP: u8 status

# The length field of each kind, beyond its payload.
MSG_LENGTH_EXTRA = KIND_BYTES + CHANNEL_BYTES
REQ_LENGTH_EXTRA = KIND_BYTES
RESP_LENGTH_EXTRA = KIND_BYTES + STATUS_BYTES
NONCE_LENGTH = KIND_BYTES + NONCE_BYTES  # PING/PONG have no payload
# Bytes a MSG frame adds around its payload on the wire.
MSG_OVERHEAD_BYTES = LENGTH_BYTES + MSG_LENGTH_EXTRA
# The smallest length bound a decoder accepts (every fixed-size frame fits).
FRAME_BYTES_MIN = 16

_LEN = struct.Struct(">I")
_MSG_HEADER = struct.Struct(">IBH")  # length, kind, channel
_NONCE_FRAME = struct.Struct(">IBQ")  # length, kind, nonce
_REQ_HEADER = struct.Struct(">IB")  # length, kind
_RESP_HEADER = struct.Struct(">IBB")  # length, kind, status
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")

# Length fields that each kind must have at least / exactly.
_MIN_LENGTH = {
    KIND_MSG: MSG_LENGTH_EXTRA,
    KIND_PING: NONCE_LENGTH,
    KIND_PONG: NONCE_LENGTH,
    KIND_REQ: REQ_LENGTH_EXTRA,
    KIND_RESP: RESP_LENGTH_EXTRA,
}
_EXACT_LENGTH = {KIND_PING: NONCE_LENGTH, KIND_PONG: NONCE_LENGTH}


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
    return _MSG_HEADER.pack(len(payload) + MSG_LENGTH_EXTRA, KIND_MSG, channel) + payload


def encode_ping(nonce: int) -> bytes:
    return _NONCE_FRAME.pack(NONCE_LENGTH, KIND_PING, nonce)


def encode_pong(nonce: int) -> bytes:
    return _NONCE_FRAME.pack(NONCE_LENGTH, KIND_PONG, nonce)


def encode_req(payload: bytes) -> bytes:
    return _REQ_HEADER.pack(len(payload) + REQ_LENGTH_EXTRA, KIND_REQ) + payload


def encode_resp(status: int, payload: bytes) -> bytes:
    return _RESP_HEADER.pack(len(payload) + RESP_LENGTH_EXTRA, KIND_RESP, status) + payload


class FrameDecoder:
    """Incremental decoder: ``feed(chunk)`` returns every frame the chunk completes.

    At the first invalid byte ``feed`` returns the frames decoded before it and sets
    ``error``; the decoder is then unusable and the stream it reads must be reset.
    """

    __slots__ = ("_allowed", "_buf", "_frame_bytes_max", "error")

    def __init__(self, frame_bytes_max: int, allowed_kinds: frozenset[int]) -> None:
        if frame_bytes_max < FRAME_BYTES_MIN:
            raise ValueError(f"frame_bytes_max must be at least {FRAME_BYTES_MIN}")
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
                kind = buf[offset + LENGTH_BYTES]
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
                if end - offset < LENGTH_BYTES + length:
                    break
                body = offset + HEADER_BYTES
                stop = offset + LENGTH_BYTES + length
                if kind == KIND_MSG:
                    (channel,) = _U16.unpack_from(buf, body)
                    payload = bytes(buf[body + CHANNEL_BYTES : stop])
                    frames.append(Frame(KIND_MSG, payload, channel=channel))
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
                    payload = bytes(buf[body + STATUS_BYTES : stop])
                    frames.append(Frame(KIND_RESP, payload, status=status))
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
