"""Canonical msgpack encoding (PROTOCOL.md section 1).

Every wire and hashed object is a ``msgspec.Struct`` with ``array_like=True``:
field order is the encoding. ``decode`` bounds the size before decoding, accepts
only the canonical byte form (decode then re-encode must give the same bytes),
and lets nothing but ``DecodeError`` escape.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

import msgspec

from consensus.kernel.errors import DecodeError, OversizedError

T = TypeVar("T")

U64_MAX = 2**64 - 1

_encoder = msgspec.msgpack.Encoder()
_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}
# msgspec builds a Struct's type information on first use and publishes it on the class
# before it is complete; two threads building decoders over a shared Struct at once
# can decode with the half-built one (a node segfaulted in ``mpack_decode`` with a NULL
# field type). Building every decoder under one lock closes that window; decoding
# itself needs no lock.
_decoders_lock = threading.Lock()


class WireStruct(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """Base for every encoded object: positional, immutable, closed.

    Subclasses repeat ``frozen=True`` (``class Tx(WireStruct, frozen=True)``): msgspec
    inherits it at run time, but mypy's dataclass transform needs it spelled out.
    """


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def _decoder(type_: Any) -> msgspec.msgpack.Decoder[Any]:
    decoder = _decoders.get(type_)
    if decoder is None:
        with _decoders_lock:
            decoder = _decoders.get(type_)
            if decoder is None:
                decoder = msgspec.msgpack.Decoder(type_)
                _decoders[type_] = decoder
    return decoder


def decode(data: bytes, type_: type[T], max_bytes: int, *, canonical: bool = True) -> T:
    """Decode untrusted ``data`` as ``type_``; raise only ``DecodeError``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise OversizedError(f"{len(data)} bytes > limit {max_bytes}")
    try:
        obj: T = _decoder(type_).decode(data)
    except (msgspec.MsgspecError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"{_name(type_)}: {exc}") from None
    if canonical and _encoder.encode(obj) != bytes(data):
        raise DecodeError(f"{_name(type_)}: non-canonical encoding", reason="non_canonical")
    return obj


def _name(type_: Any) -> str:
    """A type's name for error details; a union (a tagged message family) has none."""
    return getattr(type_, "__name__", None) or str(type_)
