"""Hypothesis strategies for the msgpack form of a ``msgspec`` type.

``shape_of(type_)`` reads the type with ``msgspec.inspect`` and draws plain msgpack
values (lists for array-like structs, tagged structs with their tag first) that
mostly satisfy the type's constraints, at their boundaries too, so that most draws
decode and the decoder's checks after the first layer are reached. Now and then
(about one node in 32) a node breaks its type instead: one past a bound, a wrong
kind of value, a field missing or added, an unknown tag.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

I64_MIN = -(2**63)
U64_MAX = 2**64 - 1
ITEMS_MAX = 3  # list items drawn beyond a list's minimum length
BYTES_EXTRA_MAX = 48  # bytes drawn beyond a field's minimum length
BREAK_ONE_IN = 32

_ANY = st.one_of(st.none(), st.booleans(), st.integers(I64_MIN, U64_MAX), st.binary(max_size=8),
                 st.text(max_size=4))


def encode_value(value: Any) -> bytes:
    return msgspec.msgpack.encode(value)


@cache
def shape_of(type_: Any) -> st.SearchStrategy[Any]:
    """Msgpack values shaped like ``type_`` (see the module docstring)."""
    return _strategy(mi.type_info(type_), {})


def encoded(type_: Any) -> st.SearchStrategy[bytes]:
    return shape_of(type_).map(encode_value)


def _clamp(n: int) -> int:
    return max(I64_MIN, min(U64_MAX, n))


def _maybe_broken(valid: st.SearchStrategy[Any], broken: st.SearchStrategy[Any]
                  ) -> st.SearchStrategy[Any]:
    return st.integers(0, BREAK_ONE_IN - 1).flatmap(lambda k: broken if k == 0 else valid)


def _int(info: mi.IntType) -> st.SearchStrategy[Any]:
    low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else I64_MIN)
    high = info.le if info.le is not None else (info.lt - 1 if info.lt is not None else U64_MAX)
    edges = sorted({_clamp(n) for n in (low, low + 1, high - 1, high) if low <= n <= high})
    valid = st.one_of(st.sampled_from(edges), st.integers(low, high))
    outside = [n for n in (low - 1, high + 1, I64_MIN, U64_MAX) if n == _clamp(n)
               and not low <= n <= high]
    broken = st.one_of(st.sampled_from(outside or [0]), st.binary(max_size=2), st.none())
    return _maybe_broken(valid, broken)


def _sized(lo: int | None, hi: int | None, extra: int) -> tuple[int, int]:
    low = lo or 0
    return low, low + extra if hi is None else min(hi, low + extra)


def _bytes(info: mi.BytesType) -> st.SearchStrategy[Any]:
    low, high = _sized(info.min_length, info.max_length, BYTES_EXTRA_MAX)
    valid = st.binary(min_size=low, max_size=high)
    wrong = [n for n in (low - 1, (info.max_length or -2) + 1) if n >= 0]
    broken = st.one_of(
        st.sampled_from(wrong or [0]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
        st.text(max_size=4), st.integers(0, 255))
    return _maybe_broken(valid, broken)


def _str(info: mi.StrType) -> st.SearchStrategy[Any]:
    low, high = _sized(info.min_length, info.max_length, 24)
    broken = st.one_of(st.binary(max_size=4), st.text(min_size=high + 1, max_size=high + 2))
    return _maybe_broken(st.text(min_size=low, max_size=high), broken)


def _list(info: Any, seen: dict[type, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    item = _strategy(info.item_type, seen)
    low, high = _sized(info.min_length, info.max_length, ITEMS_MAX)
    valid = st.lists(item, min_size=low, max_size=high)
    broken: st.SearchStrategy[Any] = st.one_of(st.dictionaries(st.integers(0, 3), item, max_size=2),
                                               item)
    if info.max_length is not None and info.max_length <= 64:
        over = info.max_length + 1
        broken = st.one_of(broken, st.lists(item, min_size=over, max_size=over))
    return _maybe_broken(valid, broken)


Seen = dict[type, st.SearchStrategy[Any]]


def _struct(info: mi.StructType, seen: Seen) -> st.SearchStrategy[Any]:
    if info.cls in seen:
        return seen[info.cls]
    # A recursive type meets itself again through this deferred reference.
    seen[info.cls] = st.deferred(lambda: built)
    head = [] if info.tag is None else [info.tag]
    fields: st.SearchStrategy[Any] = st.tuples(*(_strategy(f.type, seen) for f in info.fields)
                                                ).map(lambda values: [*head, *values])
    if not info.array_like:
        names = [f.encode_name for f in info.fields]
        fields = fields.map(lambda values: dict(zip(names, values[len(head):], strict=True)))
    broken = fields.flatmap(lambda values: st.sampled_from([
        values[:-1], [*values, 0], [99, *values[1:]] if head else [*values, None]]))
    built = _maybe_broken(fields, broken) if info.array_like else fields
    seen[info.cls] = built
    return built


def _strategy(info: Any, seen: dict[type, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    if isinstance(info, mi.IntType):
        return _int(info)
    if isinstance(info, mi.BytesType):
        return _bytes(info)
    if isinstance(info, mi.StrType):
        return _str(info)
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, (mi.ListType, mi.VarTupleType)):
        return _list(info, seen)
    if isinstance(info, mi.TupleType):
        return st.tuples(*(_strategy(t, seen) for t in info.item_types)).map(list)
    if isinstance(info, mi.StructType):
        return _struct(info, seen)
    if isinstance(info, mi.UnionType):
        return st.one_of(*(_strategy(t, seen) for t in info.types))
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(list(info.values))
    if isinstance(info, mi.DictType):
        return st.dictionaries(_strategy(info.key_type, seen), _strategy(info.value_type, seen),
                               max_size=ITEMS_MAX)
    return _ANY
