"""Byte-level mutations of valid encodings, drawn with hypothesis.

``mutated(sources)`` draws a source encoding and bends it with one to four
operations: a bit flip, an interesting byte, truncation, a deleted or inserted run,
a splice with another source, a length lie (a msgpack array/map/str/bin header or a
u32 frame length made smaller, larger or huge), deep nesting (thousands of
one-element arrays around it), or a huge declared size. Every operation takes its
positions from hypothesis, so a draw shrinks and replays from its seed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

Mutation = Callable[[bytes, bytes], bytes]  # (data, another source) -> data

INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0x90, 0x9F, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6,
               0xCC, 0xCF, 0xD3, 0xD9, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xFF)
DEPTHS = (33, 64, 256, 1024, 10_000, 100_000)
# Headers that declare a size far beyond any input: bin32, str32, array32, map32, ext32.
HUGE_HEADERS = (b"\xc6\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
                b"\xdf\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01", b"\xc5\xff\xff",
                b"\xdc\xff\xff", b"\x9f", b"\xbf", b"\x8f", b"\xff\xff\xff\xff")
LENGTH_DELTAS = (-2, -1, 1, 2, 2**15, 2**31)


def _at(data: bytes, pos: int) -> int:
    return pos % len(data) if data else 0


def _flip(pos: int, bit: int) -> Mutation:
    def op(data: bytes, _: bytes) -> bytes:
        if not data:
            return data
        i = _at(data, pos)
        return data[:i] + bytes((data[i] ^ (1 << bit),)) + data[i + 1:]
    return op


def _set_byte(pos: int, value: int) -> Mutation:
    def op(data: bytes, _: bytes) -> bytes:
        if not data:
            return bytes((value,))
        i = _at(data, pos)
        return data[:i] + bytes((value,)) + data[i + 1:]
    return op


def _truncate(pos: int) -> Mutation:
    return lambda data, _: data[:_at(data, pos)]


def _delete(pos: int, size: int) -> Mutation:
    def op(data: bytes, _: bytes) -> bytes:
        i = _at(data, pos)
        return data[:i] + data[i + size:]
    return op


def _insert(pos: int, run: bytes) -> Mutation:
    def op(data: bytes, _: bytes) -> bytes:
        i = _at(data, pos)
        return data[:i] + run + data[i:]
    return op


def _splice(pos: int, other_pos: int) -> Mutation:
    """Our prefix, then the other source's suffix."""
    return lambda data, other: data[:_at(data, pos)] + other[_at(other, other_pos):]


def _header_positions(data: bytes) -> list[int]:
    """Bytes that may be msgpack length headers (fix array/map/str, 8/16/32-bit sizes)."""
    return [i for i, b in enumerate(data) if 0x80 <= b <= 0xBF or b in (0xC4, 0xC5, 0xC6, 0xD9,
                                                                       0xDA, 0xDB, 0xDC, 0xDD)]


def _length_lie(index: int, delta_index: int) -> Mutation:
    def op(data: bytes, _: bytes) -> bytes:
        positions = _header_positions(data)
        if not positions:
            return data
        i = positions[index % len(positions)]
        delta = LENGTH_DELTAS[delta_index % len(LENGTH_DELTAS)]
        b = data[i]
        if b <= 0xBF:  # fixmap 0x80-0x8f, fixarray 0x90-0x9f, fixstr 0xa0-0xbf
            base, width = (0x80, 16) if b < 0x90 else (0x90, 16) if b < 0xA0 else (0xA0, 32)
            return data[:i] + bytes((base + (b - base + delta) % width,)) + data[i + 1:]
        size = {0xC4: 1, 0xD9: 1, 0xC5: 2, 0xDA: 2, 0xDC: 2, 0xC6: 4, 0xDB: 4, 0xDD: 4}[b]
        field = data[i + 1:i + 1 + size].ljust(size, b"\0")
        value = (int.from_bytes(field, "big") + delta) % (1 << (8 * size))
        return data[:i + 1] + value.to_bytes(size, "big") + data[i + 1 + size:]
    return op


def _frame_length_lie(pos: int, value: int) -> Mutation:
    """A u32 big-endian length (a p2p frame's prefix) written at a position."""
    def op(data: bytes, _: bytes) -> bytes:
        i = _at(data, pos)
        return data[:i] + struct.pack(">I", value) + data[i + 4:]
    return op


def _nest(depth: int, kind: int) -> Mutation:
    opener = (b"\x91", b"\x81\x00", b"\xdc\x00\x01")[kind % 3]
    return lambda data, _: opener * depth + data


def _huge(pos: int, header: bytes) -> Mutation:
    return _insert(pos, header)


_POS = st.integers(0, 2**16)

MUTATIONS: st.SearchStrategy[Mutation] = st.one_of(
    st.builds(_flip, _POS, st.integers(0, 7)),
    st.builds(_set_byte, _POS, st.sampled_from(INTERESTING)),
    st.builds(_truncate, _POS),
    st.builds(_delete, _POS, st.integers(1, 16)),
    st.builds(_insert, _POS, st.binary(min_size=1, max_size=16)),
    st.builds(_splice, _POS, _POS),
    st.builds(_length_lie, st.integers(0, 255), st.integers(0, len(LENGTH_DELTAS) - 1)),
    st.builds(_frame_length_lie, _POS, st.sampled_from((0, 1, 8, 2**16, 2**31, 2**32 - 1))),
    st.builds(_nest, st.sampled_from(DEPTHS), st.integers(0, 2)),
    st.builds(_huge, _POS, st.sampled_from(HUGE_HEADERS)),
)


def mutated(sources: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A source encoding bent by one to four mutations (see the module docstring)."""
    return st.builds(_apply, sources, sources, st.lists(MUTATIONS, min_size=1, max_size=4))


def _apply(data: bytes, other: bytes, ops: list[Any]) -> bytes:
    for op in ops:
        data = op(data, other)
    return data
