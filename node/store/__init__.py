"""Node storage: committed blocks, their certificates, state, receipts and metadata.

The store speaks bytes: blocks, certificates, receipts, outcomes and state values
arrive encoded, so it does not depend on ledger types, only on what the node
indexes them by (height, hash, destination shard and sequence, tx hash).
``node/ledger_store.py`` knows which ledger objects those bytes are.

``StoreAPI`` (``api``) is what the node depends on; ``Store`` (``sqlite``) is the
SQLite implementation and ``MemoryStore`` (``memory``) the in-memory one.
The modules, one job each, are listed in docs/STORAGE.md.
"""

from node.store.api import StoreAPI
from node.store.checks import (
    ORIGIN_RECORDS_MAX,
    StoreLimits,
    check_commit,
    check_limit,
    check_metadata,
)
from node.store.errors import (
    DuplicateEntry,
    GenesisMismatch,
    LimitExceeded,
    NotInitialized,
    OutOfOrderCommit,
    SchemaMismatch,
    StoreClosed,
    StoreError,
    StoreLocked,
)
from node.store.records import (
    META_GENESIS_HASH,
    AccountTxRecord,
    BlockCommit,
    InboundRecord,
    ReceiptRecord,
    Snapshot,
    StateWrite,
    StoredBlock,
    TxRecord,
)
from node.store.schema import SCHEMA_VERSION
from node.store.sqlite import Store, Synchronous

__all__ = [
    "META_GENESIS_HASH",
    "ORIGIN_RECORDS_MAX",
    "SCHEMA_VERSION",
    "AccountTxRecord",
    "BlockCommit",
    "DuplicateEntry",
    "GenesisMismatch",
    "InboundRecord",
    "LimitExceeded",
    "NotInitialized",
    "OutOfOrderCommit",
    "ReceiptRecord",
    "SchemaMismatch",
    "Snapshot",
    "StateWrite",
    "Store",
    "StoreAPI",
    "StoreClosed",
    "StoreError",
    "StoreLimits",
    "StoreLocked",
    "StoredBlock",
    "Synchronous",
    "TxRecord",
    "check_commit",
    "check_limit",
    "check_metadata",
]
