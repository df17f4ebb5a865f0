from __future__ import annotations

import pytest

from consensus.kernel.crypto import sha256
from sharding.accounts import first_shard_accounts, parse_address, shard_of


def test_shard_of_follows_protocol_formula() -> None:
    address = bytes(range(32))
    expected = int.from_bytes(sha256(b"shard" + address)[:8], "big") % 3
    assert shard_of(address, 3) == expected


def test_first_shard_accounts_all_live_on_that_shard_and_are_reproducible() -> None:
    accounts = first_shard_accounts("seed", 1, 2, 5)
    assert len(accounts) == 5
    assert all(shard_of(key.public_key, 2) == 1 for key in accounts)
    again = first_shard_accounts("seed", 1, 2, 5)
    assert [a.public_key for a in accounts] == [a.public_key for a in again]


def test_parse_address_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        parse_address("00ff")
