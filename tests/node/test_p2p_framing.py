"""The p2p frame codec: bounds checked before buffering, garbage rejected with a reason."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p.framing import (
    KIND_MSG,
    KIND_PING,
    KIND_PONG,
    KIND_RESP,
    MSG_KINDS,
    RESP_ERROR,
    RESP_KINDS,
    FrameDecoder,
    encode_msg,
    encode_ping,
    encode_pong,
    encode_resp,
)


def test_frames_decode_in_order_across_arbitrary_chunking() -> None:
    stream = b"".join(
        [encode_msg(7, b"a" * 10), encode_ping(5), encode_msg(65535, b""), encode_pong(9)]
    )
    for cut in range(1, len(stream)):
        decoder = FrameDecoder(1024, MSG_KINDS)
        frames = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert decoder.error is None
        assert [(f.kind, f.channel, f.payload, f.nonce) for f in frames] == [
            (KIND_MSG, 7, b"a" * 10, 0),
            (KIND_PING, 0, b"", 5),
            (KIND_MSG, 65535, b"", 0),
            (KIND_PONG, 0, b"", 9),
        ]
        assert decoder.buffered_bytes == 0


@given(st.lists(st.tuples(st.integers(0, 65535), st.binary(max_size=300)), max_size=20))
def test_msg_round_trip(messages: list[tuple[int, bytes]]) -> None:
    decoder = FrameDecoder(1024, MSG_KINDS)
    frames = decoder.feed(b"".join(encode_msg(ch, data) for ch, data in messages))
    assert [(f.channel, f.payload) for f in frames] == messages


def test_oversized_frame_is_rejected_from_its_header_alone() -> None:
    decoder = FrameDecoder(1024, MSG_KINDS)
    good = encode_msg(1, b"ok")
    frames = decoder.feed(good + struct.pack(">IBH", 1025, KIND_MSG, 1))
    assert [f.payload for f in frames] == [b"ok"]  # frames before the fault survive
    assert decoder.error is not None and decoder.error.reason == "frame_oversized"
    assert decoder.buffered_bytes == 0


def test_unknown_kind_is_malformed() -> None:
    decoder = FrameDecoder(1024, MSG_KINDS)
    decoder.feed(struct.pack(">IB", 3, 99) + b"xyz")
    assert decoder.error is not None and decoder.error.reason == "frame_malformed"


def test_kind_not_allowed_on_this_stream_is_malformed() -> None:
    decoder = FrameDecoder(1024, MSG_KINDS)
    decoder.feed(encode_resp(0, b"x"))
    assert decoder.error is not None and decoder.error.reason == "frame_malformed"


def test_short_and_misfit_lengths_are_malformed() -> None:
    for data in (struct.pack(">IB", 1, KIND_MSG), struct.pack(">IBQ", 10, KIND_PING, 1)):
        decoder = FrameDecoder(1024, MSG_KINDS)
        decoder.feed(data + b"\x00")
        assert decoder.error is not None and decoder.error.reason == "frame_malformed"


def test_unknown_response_status_is_malformed() -> None:
    decoder = FrameDecoder(1024, RESP_KINDS)
    assert decoder.feed(encode_resp(RESP_ERROR, b"boom"))[0].kind == KIND_RESP
    decoder.feed(struct.pack(">IBB", 2, KIND_RESP, 7))
    assert decoder.error is not None and decoder.error.reason == "frame_malformed"


def test_failed_decoder_refuses_further_input() -> None:
    decoder = FrameDecoder(64, MSG_KINDS)
    decoder.feed(b"\xff" * 8)
    assert decoder.error is not None
    with pytest.raises(ValueError):
        decoder.feed(b"")


@given(st.binary(min_size=5, max_size=200))
def test_random_bytes_never_raise_and_never_buffer_beyond_bound(data: bytes) -> None:
    decoder = FrameDecoder(64, MSG_KINDS)
    decoder.feed(data)
    assert decoder.buffered_bytes <= 64 + 4 or decoder.error is not None


def test_bad_channel_is_our_bug() -> None:
    with pytest.raises(ValueError):
        encode_msg(70000, b"")
