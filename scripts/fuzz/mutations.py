"""Byte-level mutations of valid encodings: a plain seeded mutator.

``mutants(data, other, seed, count)`` bends ``data`` ``count`` times, each with one to
four operations drawn from ``random.Random(seed)``: a bit flip, an interesting byte,
truncation, a deleted or inserted run, a splice with ``other``, a length lie (a
msgpack array/map/str/bin header made smaller, larger or huge), a u32 frame length
lie, deep nesting (up to 100,000 one-element arrays around it), a huge declared
size (bin32/array32/map32 headers claiming 4 GiB), or a tree mutation (the msgpack
decoded, one value changed: an integer to a bound, bytes shortened, lengthened or
swapped, a list element dropped or repeated, a value of another type, a nested
encoding mutated inside; then encoded again). Hypothesis draws the sources and
the seed (``targets.mixed``); deriving a batch of mutants from one draw keeps
hypothesis's per-example cost off every input, so a soak of a million inputs takes
minutes, and the same seed gives the same mutants.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import msgspec

INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0x90, 0x9F, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6,
               0xCC, 0xCF, 0xD3, 0xD9, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xFF)
DEPTHS = (33, 64, 256, 1024, 10_000, 100_000)
NESTING = (b"\x91", b"\x81\x00", b"\xdc\x00\x01")  # one-element array, map, array16
# Headers that declare a size far beyond any input: bin32, str32, array32, map32, ext32,
# bin16, array16, and fix headers with their largest counts; last a u32 frame length.
HUGE_HEADERS = (b"\xc6\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
                b"\xdf\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01", b"\xc5\xff\xff",
                b"\xdc\xff\xff", b"\x9f", b"\xbf", b"\x8f", b"\xff\xff\xff\xff")
LENGTH_DELTAS = (-2, -1, 1, 2, 2**15, 2**31)
FRAME_LENGTHS = (0, 1, 8, 2**16, 2**31, 2**32 - 1)
RUN_BYTES_MAX = 16
# msgpack headers with an explicit size: (first byte, bytes of the size field).
_SIZED = {0xC4: 1, 0xD9: 1, 0xC5: 2, 0xDA: 2, 0xDC: 2, 0xDE: 2, 0xC6: 4, 0xDB: 4, 0xDD: 4,
          0xDF: 4}

Op = Callable[[bytes, bytes, random.Random], bytes]  # (data, another source, rng) -> data


def _pos(data: bytes, rng: random.Random) -> int:
    return rng.randrange(len(data)) if data else 0


def flip(data: bytes, _: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    i = _pos(data, rng)
    return data[:i] + bytes((data[i] ^ (1 << rng.randrange(8)),)) + data[i + 1:]


def set_byte(data: bytes, _: bytes, rng: random.Random) -> bytes:
    i = _pos(data, rng)
    return data[:i] + bytes((rng.choice(INTERESTING),)) + data[i + 1:]


def truncate(data: bytes, _: bytes, rng: random.Random) -> bytes:
    return data[:_pos(data, rng)]


def delete(data: bytes, _: bytes, rng: random.Random) -> bytes:
    i = _pos(data, rng)
    return data[:i] + data[i + rng.randint(1, RUN_BYTES_MAX):]


def insert(data: bytes, _: bytes, rng: random.Random) -> bytes:
    i = _pos(data, rng)
    return data[:i] + rng.randbytes(rng.randint(1, RUN_BYTES_MAX)) + data[i:]


def splice(data: bytes, other: bytes, rng: random.Random) -> bytes:
    """Our prefix, then the other source's suffix."""
    return data[:_pos(data, rng)] + other[_pos(other, rng):]


def length_lie(data: bytes, _: bytes, rng: random.Random) -> bytes:
    """A byte that may be a msgpack length header declares another length."""
    positions = [i for i, b in enumerate(data) if 0x80 <= b <= 0xBF or b in _SIZED]
    if not positions:
        return data
    i = rng.choice(positions)
    delta = rng.choice(LENGTH_DELTAS)
    b = data[i]
    if b <= 0xBF:  # fixmap 0x80-0x8f, fixarray 0x90-0x9f, fixstr 0xa0-0xbf
        base, width = (0x80, 16) if b < 0x90 else (0x90, 16) if b < 0xA0 else (0xA0, 32)
        return data[:i] + bytes((base + (b - base + delta) % width,)) + data[i + 1:]
    size = _SIZED[b]
    field = data[i + 1:i + 1 + size].ljust(size, b"\0")
    value = (int.from_bytes(field, "big") + delta) % (1 << (8 * size))
    return data[:i + 1] + value.to_bytes(size, "big") + data[i + 1 + size:]


def frame_length_lie(data: bytes, _: bytes, rng: random.Random) -> bytes:
    """A u32 big-endian length (a p2p frame's prefix) written over four bytes."""
    i = _pos(data, rng)
    return data[:i] + struct.pack(">I", rng.choice(FRAME_LENGTHS)) + data[i + 4:]


def nest(data: bytes, _: bytes, rng: random.Random) -> bytes:
    return rng.choice(NESTING) * rng.choice(DEPTHS) + data


def huge(data: bytes, _: bytes, rng: random.Random) -> bytes:
    i = _pos(data, rng)
    return data[:i] + rng.choice(HUGE_HEADERS) + data[i:]


# ---------------------------------------------------------------------------
# Tree mutations: decode the msgpack, change one value, encode again. The result is
# well-formed msgpack that lies about meaning (a bound, a length, a type, an element
# too many), so it gets past the first layer more often than a byte mutation does.

INTS = (0, 1, 2, 3, 4, 31, 32, 33, 255, 256, 1023, 1024, 2**16 - 1, 2**16, 2**32 - 1, 2**32,
        2**63 - 1, 2**63, 2**64 - 1, -1, -(2**63))
TREE_NODES_MAX = 256  # values considered for one mutation (the first ones, breadth first)
NESTED_ONE_IN = 3  # a bin value that is msgpack itself is mutated inside, one time in 3


def _nodes(tree: Any) -> list[tuple[Any, Any]]:
    """(container, key) of the tree's first values, breadth first."""
    found: list[tuple[Any, Any]] = []
    queue = [tree]
    while queue and len(found) < TREE_NODES_MAX:
        node = queue.pop(0)
        items = enumerate(node) if isinstance(node, list) else list(node.items())
        for key, value in items:
            found.append((node, key))
            if isinstance(value, (list, dict)):
                queue.append(value)
    return found


def _new_value(value: Any, donor: Any, rng: random.Random) -> Any:
    if isinstance(value, bool) or value is None:
        return rng.choice((None, True, False, 0, b""))
    if isinstance(value, int):
        return rng.choice((*INTS, value + 1, value - 1) if -(2**63) < value < 2**64 - 1 else INTS)
    if isinstance(value, bytes):
        if len(value) > 1 and rng.randrange(NESTED_ONE_IN) == 0:
            return tree_mutate(value, b"", rng)
        return rng.choice((value[:-1], value + b"\0", b"", bytes(32), rng.randbytes(64),
                           flip(value, b"", rng), value * 2))
    if isinstance(value, str):
        return rng.choice(("", value + "\u00e9", value * 40, "x"))
    if isinstance(value, list):
        if not value:
            return rng.choice(([None], [donor], [[]]))
        i = rng.randrange(len(value))
        return rng.choice((value[:i] + value[i + 1:], [*value, value[i]], [value], [],
                           [*value[:i], donor, *value[i + 1:]], value * 8))
    return donor


def tree_mutate(data: bytes, other: bytes, rng: random.Random) -> bytes:
    try:
        tree = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError):
        return flip(data, other, rng)
    if not isinstance(tree, (list, dict)) or not tree:
        return flip(data, other, rng)
    nodes = _nodes(tree)
    container, key = rng.choice(nodes)
    donor_container, donor_key = rng.choice(nodes)
    donor = donor_container[donor_key]
    try:
        container[key] = _new_value(container[key], donor, rng)
        return msgspec.msgpack.encode(tree)
    except (TypeError, ValueError, OverflowError, RecursionError):  # too deep to encode, say
        return flip(data, other, rng)


OPS: tuple[Op, ...] = (flip, flip, set_byte, set_byte, truncate, delete, insert, splice,
                       length_lie, length_lie, frame_length_lie, nest, huge, huge,
                       tree_mutate, tree_mutate, tree_mutate, tree_mutate, tree_mutate,
                       tree_mutate)


def mutate(data: bytes, other: bytes, rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 4)):
        data = rng.choice(OPS)(data, other, rng)
    return data


def mutants(data: bytes, other: bytes, seed: int, count: int) -> list[bytes]:
    """``data`` itself, then ``count - 1`` mutations of it (see the module docstring)."""
    rng = random.Random(seed)
    return [data, *(mutate(data, other, rng) for _ in range(count - 1))]


def random_inputs(seed: int, count: int, size_max: int) -> list[bytes]:
    """``count`` random byte strings of up to ``size_max`` bytes (short ones as often)."""
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(rng.choice((8, 64, size_max)) + 1)) for _ in range(count)]
