"""Accounts and the shard map (PROTOCOL.md section 2).

An address is a 32-byte Ed25519 public key. Program accounts (pools) have
addresses too, derived from a name, and live on their own shard.
"""

from __future__ import annotations

from collections.abc import Iterator

from consensus.kernel.crypto import KeyPair, sha256

ADDRESS_BYTES = 32


def shard_of(address: bytes, num_shards: int) -> int:
    return int.from_bytes(sha256(b"shard" + address)[:8], "big") % num_shards


def derive_account(seed: str, index: int) -> KeyPair:
    """The reproducible account ``index`` of ``seed`` (test and load accounts)."""
    return KeyPair.derive(seed, index)


def iter_shard_accounts(seed: str, shard: int, num_shards: int) -> Iterator[tuple[int, KeyPair]]:
    """Yield (index, key pair) of the accounts of ``seed`` that live on ``shard``."""
    index = 0
    while True:
        key = derive_account(seed, index)
        if shard_of(key.public_key, num_shards) == shard:
            yield index, key
        index += 1


def first_shard_accounts(seed: str, shard: int, num_shards: int, count: int) -> list[KeyPair]:
    """The first ``count`` accounts of ``seed`` on ``shard``, in index order."""
    accounts: list[KeyPair] = []
    if count <= 0:
        return accounts
    for _, key in iter_shard_accounts(seed, shard, num_shards):
        accounts.append(key)
        if len(accounts) == count:
            break
    return accounts


def program_address(name: str) -> bytes:
    """Address of a program account (a pool), derived from its name."""
    return sha256(b"shardnet-program:" + name.encode())


def parse_address(text: str) -> bytes:
    """Parse a hex address from JSON or the CLI; raises ValueError with the reason."""
    raw = bytes.fromhex(text.removeprefix("0x"))
    if len(raw) != ADDRESS_BYTES:
        raise ValueError(f"address must be {ADDRESS_BYTES} bytes, got {len(raw)}")
    return raw
