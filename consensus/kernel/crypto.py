"""Hashing with domain tags and Ed25519 keys (PROTOCOL.md sections 1-2).

One-byte tags keep the hash spaces of different objects apart. 0x00 and 0x01
are RFC 6962's Merkle leaf and node prefixes; every other tag is above them.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Protocol, cast

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

TAG_MERKLE_LEAF = 0x00
TAG_MERKLE_NODE = 0x01
TAG_TX = 0x10
TAG_BLOCK_HEADER = 0x11
TAG_RECEIPT = 0x12
TAG_VOTE = 0x13
TAG_STATE = 0x14
TAG_CONSENSUS_MSG = 0x15
TAG_KEY_DERIVATION = 0x16
TAG_EVIDENCE = 0x17

HASH_BYTES = 32
PUBKEY_BYTES = 32
SIGNATURE_BYTES = 64

# The field prime of Curve25519 / edwards25519.
_FIELD_P = 2**255 - 19
_SIGN_BIT = 1 << 255

# The y coordinates of the 8 points of small order (order dividing 8), as in
# libsodium's ``ge25519_has_small_order`` blacklist (crypto_core/ed25519/ref10/ed25519_ref10.c),
# which compares with the sign bit (x's parity) cleared. Canonical y only: its
# non-canonical entries p and p + 1 (y >= p) are refused by the canonical check.
# With the identity as a public key, (R = identity, S = 0) verifies any message.
SMALL_ORDER_Y = frozenset(
    {
        0,  # (+-1, 0), order 4
        1,  # the identity (0, 1), order 1
        _FIELD_P - 1,  # (0, -1), order 2
        # the four points of order 8 (x of either sign)
        2707385501144840649318225287225658788936804267575313519463743609750303402022,
        55188659117513257062467267217118295137698188065244968500265048394206261417927,
    }
)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def tagged_hash(tag: int, *parts: bytes) -> bytes:
    h = hashlib.sha256(bytes((tag,)))
    for part in parts:
        h.update(part)
    return h.digest()


class KeyPair:
    """An Ed25519 key pair; the 32-byte public key is the account address."""

    __slots__ = ("_private", "private_bytes", "public_key")

    def __init__(self, private_bytes: bytes) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(private_bytes)
        self.private_bytes = private_bytes
        self.public_key = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> KeyPair:
        key = Ed25519PrivateKey.generate()
        return cls(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @classmethod
    def derive(cls, seed: str, index: int) -> KeyPair:
        """Deterministic key from (seed, index): reproducible test and load accounts."""
        material = tagged_hash(
            TAG_KEY_DERIVATION, seed.encode(), index.to_bytes(8, "big", signed=False)
        )
        return cls(material)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


@lru_cache(maxsize=65536)
def _public_key(public_key: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public_key)


def is_acceptable_public_key(key: bytes) -> bool:
    """False for a key anyone can sign for: a non-canonical y or a point of small order.

    Pure: decodes only the y coordinate, never the point; keys off the curve pass
    here and fail in ``verify_signature``.
    """
    if len(key) != PUBKEY_BYTES:
        return False
    y = int.from_bytes(key, "little") & ~_SIGN_BIT
    return y < _FIELD_P and y not in SMALL_ORDER_Y


def verify_signature_cryptography(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """``verify_signature`` through OpenSSL (the ``cryptography`` package): the pure path."""
    if len(public_key) != PUBKEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    if not is_acceptable_public_key(bytes(public_key)):
        return False
    try:
        _public_key(bytes(public_key)).verify(bytes(signature), bytes(message))
    except (_CryptoInvalidSignature, ValueError):
        return False
    return True


SignatureCheck = tuple[bytes, bytes, bytes]
"""(public key, message, signature): one ``verify_signature`` call."""

VerifyMany = Callable[[Sequence[SignatureCheck]], list[bool]]
"""Verifies many signatures: one verdict per check, in the order given, each equal to
``verify_signature`` on it (the node's thread pool is one: node/verify_pool.py)."""


class NativeVerifier(Protocol):
    """The compiled extension ``shardnet_ed25519`` (native/ed25519/src/lib.rs)."""

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool: ...
    def verify_many(self, checks: Iterable[SignatureCheck]) -> list[bool]: ...
    def is_acceptable_public_key(self, public_key: bytes) -> bool: ...


VERIFY_BACKEND_ENV = "SHARDNET_VERIFY_BACKEND"
"""``cryptography`` forces the pure path; ``native`` requires the extension (an import
error otherwise); unset or ``auto``: the extension when it imports."""
BACKEND_NATIVE = "ed25519-dalek"
BACKEND_CRYPTOGRAPHY = "cryptography"


def load_native(choice: str | None = None) -> NativeVerifier | None:
    """The extension, or None for the pure path (``choice``: the env var's values)."""
    choice = (os.environ.get(VERIFY_BACKEND_ENV, "auto") if choice is None else choice).lower()
    if choice not in ("auto", "", "native", BACKEND_NATIVE, BACKEND_CRYPTOGRAPHY):
        raise ValueError(f"{VERIFY_BACKEND_ENV}={choice!r}: use auto, native or cryptography")
    if choice == BACKEND_CRYPTOGRAPHY:
        return None
    try:
        return cast(NativeVerifier, importlib.import_module("shardnet_ed25519"))
    except ImportError as error:
        if choice in ("native", BACKEND_NATIVE):
            raise ImportError(f"{VERIFY_BACKEND_ENV}={choice} but shardnet_ed25519 does not "
                              f"import ({error}); make venv builds it with cargo") from error
        return None


_native = load_native()
VERIFY_BACKEND = BACKEND_NATIVE if _native is not None else BACKEND_CRYPTOGRAPHY
"""Which path ``verify_signature`` takes in this process, chosen once at import."""


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature; never raises on bad input.

    The rule is docs/PROTOCOL.md section 1, "Signature validity": OpenSSL's RFC 8032
    check (cofactorless ``[S]B == R + [k]A``, S < L, R compared as encoded), and small-order
    and non-canonical keys (``is_acceptable_public_key``) never verify. Two paths follow
    it (``VERIFY_BACKEND``): the compiled extension (ed25519-dalek's cofactorless
    ``verify``) when it imports, ``verify_signature_cryptography`` (OpenSSL) otherwise.
    tests/consensus/test_signature_vectors.py and test_signature_backends.py hold both to
    the published vectors and to each other.
    """
    if _native is not None:
        try:
            return _native.verify(public_key, message, signature)
        except TypeError:  # a bytes-like the extension does not take (memoryview)
            return _native.verify(bytes(public_key), bytes(message), bytes(signature))
    return verify_signature_cryptography(public_key, message, signature)


def verify_signatures(checks: Iterable[SignatureCheck]) -> list[bool]:
    """``verify_signature`` on each check, in order: the single-threaded ``VerifyMany``.

    With the extension, one call that releases the GIL for the whole list (so the
    verify pool's threads run in parallel on it, as they do in OpenSSL).
    """
    if _native is not None:
        checks = list(checks)
        try:
            return _native.verify_many(checks)
        except TypeError:
            return [verify_signature(key, message, signature)
                    for key, message, signature in checks]
    return verify_signatures_cryptography(checks)


def verify_signatures_cryptography(checks: Iterable[SignatureCheck]) -> list[bool]:
    """``verify_signatures`` through OpenSSL whatever ``VERIFY_BACKEND`` is (the bench
    compares the two paths with it)."""
    return [verify_signature_cryptography(key, message, signature)
            for key, message, signature in checks]
