"""Canonical encoding and the cryptographic primitives (PROTOCOL.md section 1)."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.kernel.codec import WireStruct, decode, encode
from consensus.kernel.crypto import (
    TAG_BLOCK_HEADER,
    TAG_TX,
    KeyPair,
    tagged_hash,
    verify_signature,
)
from consensus.kernel.errors import DecodeError, OversizedError


class Sample(WireStruct):
    a: int
    b: bytes
    c: list[int]


def test_round_trip_is_positional() -> None:
    sample = Sample(a=1, b=b"x", c=[2, 3])
    data = encode(sample)
    assert msgspec.msgpack.decode(data) == [1, b"x", [2, 3]]
    assert decode(data, Sample, 1024) == sample


def test_decode_rejects_oversized_before_decoding() -> None:
    with pytest.raises(OversizedError):
        decode(b"\x00" * 100, Sample, 10)


def test_decode_rejects_non_canonical_int_width() -> None:
    # 1 encoded as uint32 (0xce) instead of a positive fixint.
    data = b"\x93\xce\x00\x00\x00\x01\xc4\x01x\x90"
    with pytest.raises(DecodeError) as info:
        decode(data, Sample, 1024)
    assert info.value.reason == "non_canonical"


def test_decode_rejects_wrong_type() -> None:
    with pytest.raises(DecodeError):
        decode(encode(["not-int", b"", []]), Sample, 1024)


@given(st.binary(max_size=256))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data, Sample, 1024)


def test_tags_separate_hash_domains() -> None:
    assert tagged_hash(TAG_TX, b"abc") != tagged_hash(TAG_BLOCK_HEADER, b"abc")


def test_derived_keys_are_deterministic_and_distinct() -> None:
    assert KeyPair.derive("s", 1).public_key == KeyPair.derive("s", 1).public_key
    assert KeyPair.derive("s", 1).public_key != KeyPair.derive("s", 2).public_key
    assert KeyPair.derive("s", 1).public_key != KeyPair.derive("t", 1).public_key


def test_signature_verifies_and_forgery_fails() -> None:
    key = KeyPair.derive("s", 0)
    sig = key.sign(b"msg")
    assert verify_signature(key.public_key, b"msg", sig)
    assert not verify_signature(key.public_key, b"msh", sig)
    assert not verify_signature(KeyPair.derive("s", 1).public_key, b"msg", sig)
    assert not verify_signature(key.public_key, b"msg", sig[:-1])
    assert not verify_signature(b"\x00" * 31, b"msg", sig)


def test_decoders_are_built_one_at_a_time_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """msgspec publishes a Struct's type information before it is complete: two
    threads building decoders at once once segfaulted a node. ``decode`` builds each
    decoder under a lock; a decoder factory that notices an overlap proves it."""
    import threading
    import time

    import msgspec

    from consensus.kernel import codec

    real = msgspec.msgpack.Decoder
    inside = 0
    overlaps = 0
    guard = threading.Lock()

    def slow_decoder(type_: object) -> object:
        nonlocal inside, overlaps
        with guard:
            inside += 1
            overlaps += inside > 1
        time.sleep(0.002)  # widen the window a race would need
        with guard:
            inside -= 1
        return real(type_)

    class Fresh(codec.WireStruct, frozen=True):
        value: int

    types = [Fresh, list[Fresh], tuple[Fresh, int], dict[str, Fresh]]
    monkeypatch.setattr(codec, "_decoders", {})
    monkeypatch.setattr(msgspec.msgpack, "Decoder", slow_decoder)
    samples = [codec.encode(v) for v in (Fresh(1), [Fresh(1)], (Fresh(1), 2), {"a": Fresh(1)})]
    barrier = threading.Barrier(len(types))
    errors: list[BaseException] = []

    def first_use(index: int) -> None:
        barrier.wait()
        try:
            codec.decode(samples[index], types[index], 1024)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(len(types))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert overlaps == 0
    assert len(codec._decoders) == len(types)
