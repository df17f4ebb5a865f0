"""Small-order and non-canonical Ed25519 keys (issue 14, finding 5: keys anyone can spend from).

The blacklist in ``consensus.kernel.crypto`` is checked here against the curve itself,
with a small pure-Python Edwards arithmetic (tests/support/edwards25519.py).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consensus.kernel.crypto import (
    SMALL_ORDER_Y,
    KeyPair,
    is_acceptable_public_key,
    verify_signature,
)
from tests.support.edwards25519 import IDENTITY, D, P, Point, add

SQRT_M1 = pow(2, (P - 1) // 4, P)

# The encodings of libsodium's ge25519_has_small_order blacklist (its y values,
# the last two non-canonical: p and p + 1).
LIBSODIUM_Y = (
    0,
    1,
    2707385501144840649318225287225658788936804267575313519463743609750303402022,
    55188659117513257062467267217118295137698188065244968500265048394206261417927,
    P - 1,
    P,
    P + 1,
)


def times(k: int, point: Point) -> Point:
    result = IDENTITY
    for _ in range(k):
        result = add(result, point)
    return result


def decode_point(y: int, sign: int) -> Point | None:
    """The point with this y (reduced mod p) and x parity ``sign``; None if off the curve."""
    y %= P
    u = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(u, (P + 3) // 8, P)
    if x * x % P != u:
        x = x * SQRT_M1 % P
    if x * x % P != u:
        return None
    if x & 1 != sign:
        x = (P - x) % P
    return x, y


def encode_y(y: int, sign: int = 0) -> bytes:
    return (y | sign << 255).to_bytes(32, "little")


def test_every_blacklisted_encoding_has_order_dividing_8() -> None:
    for y in LIBSODIUM_Y:
        for sign in (0, 1):
            point = decode_point(y, sign)
            assert point is not None
            assert times(8, point) == IDENTITY
            assert not is_acceptable_public_key(encode_y(y, sign))


def test_blacklist_covers_the_whole_8_torsion_subgroup() -> None:
    # The torsion of edwards25519 is cyclic of order 8: the multiples of a point of
    # order 8 are all 8 small-order points, and their y values are exactly the list.
    generator = decode_point(LIBSODIUM_Y[2], 0)
    assert generator is not None and times(4, generator) != IDENTITY
    multiples = [times(k, generator) for k in range(8)]
    assert len(set(multiples)) == 8
    assert {y for _, y in multiples} == SMALL_ORDER_Y
    assert {y % P for y in LIBSODIUM_Y} == SMALL_ORDER_Y


def test_non_canonical_y_is_refused() -> None:
    for y in (P, P + 1, P + 2, P + 5, 2**255 - 1):
        for sign in (0, 1):
            assert not is_acceptable_public_key(encode_y(y, sign))


def test_ordinary_keys_are_acceptable() -> None:
    for index in range(64):
        key = KeyPair.derive("load", index)
        assert is_acceptable_public_key(key.public_key)
        assert verify_signature(key.public_key, b"m", key.sign(b"m"))


@given(st.binary(min_size=32, max_size=32))
def test_acceptable_means_canonical_and_not_small_order(key: bytes) -> None:
    y = int.from_bytes(key, "little") & (2**255 - 1)
    assert is_acceptable_public_key(key) == (y < P and y not in SMALL_ORDER_Y)


def test_identity_key_forgery_is_refused() -> None:
    # Nothing is signed: with A = R = identity and S = 0, [S]B = R + [k]A for any message.
    identity = encode_y(1)
    forged = identity + bytes(32)
    for message in (b"", b"pay the attacker", bytes(range(256))):
        assert not verify_signature(identity, message, forged)
    assert not is_acceptable_public_key(identity)
    assert not is_acceptable_public_key(bytes(32))
