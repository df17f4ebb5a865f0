"""Hashing with domain tags and Ed25519 keys (PROTOCOL.md sections 1-2).

One-byte tags keep the hash spaces of different objects apart. 0x00 and 0x01
are RFC 6962's Merkle leaf and node prefixes; every other tag is above them.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

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


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature; never raises on bad input."""
    if len(public_key) != PUBKEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        _public_key(bytes(public_key)).verify(bytes(signature), bytes(message))
    except (_CryptoInvalidSignature, ValueError):
        return False
    return True
