"""The store's typed errors, one ``reason`` each, under ``ShardnetError``."""

from __future__ import annotations

from consensus.kernel.errors import ShardnetError


class StoreError(ShardnetError):
    reason = "store"


class StoreClosed(StoreError):
    reason = "store_closed"


class SchemaMismatch(StoreError):
    """The file was written by another schema version (or is not a shardnet store)."""

    reason = "schema_mismatch"


class GenesisMismatch(StoreError):
    """The store was initialised from another genesis than the one given."""

    reason = "genesis_mismatch"


class StoreLocked(StoreError):
    """Another process (or another ``Store`` here) has the file open."""

    reason = "store_locked"


class NotInitialized(StoreError):
    reason = "not_initialized"


class OutOfOrderCommit(StoreError):
    """A block that does not extend the stored chain by exactly one height."""

    reason = "out_of_order"


class DuplicateEntry(StoreError):
    """A block hash, tx hash or (dst shard, seq) receipt that is already stored."""

    reason = "duplicate"


class LimitExceeded(StoreError):
    reason = "limit_exceeded"
