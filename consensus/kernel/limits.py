"""The byte limits of every decoded type: nothing is decoded from bytes longer than
its limit here (``codec.decode`` raises ``OversizedError`` first).

    limit                        bytes   decoded type              decoded in
    MESSAGE_BYTES_MAX            4 MiB   PBFT message (default)    consensus/replica.py
    OBSERVED_MESSAGE_BYTES_MAX  16 MiB   PBFT message, as observed consensus/sim/, tests
    TEST_BLOCK_BYTES_MAX         1 MiB   the simulator's TestBlock consensus/sim/testing.py
    SIGNATURE_BYTES_MAX            128   a signature field         consensus/certificate.py
    TX_BYTES_MAX                 4 KiB   SignedTx                  sharding/tx.py
    BLOCK_BYTES_MAX             16 MiB   Block (default)           sharding/block.py
    CERTIFICATE_BYTES_MAX       64 KiB   CommitCertificate         sharding/, node/
    RECORD_BYTES_MAX             1 MiB   Account, Pool state rows  sharding/records.py
    BUNDLE_BYTES_MAX            16 MiB   ReceiptBundle             sharding/crossshard.py
    REQUEST_BYTES_MAX            4 KiB   node Request              node/node.py

A node configures some of them lower or higher (``consensus.block_bytes_max``, the
replica's ``message_bytes_max``, the API's body limit for tx batches); these are the
defaults and the bounds of the types themselves.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

MESSAGE_BYTES_MAX = 4 * MIB
OBSERVED_MESSAGE_BYTES_MAX = 16 * MIB
TEST_BLOCK_BYTES_MAX = 1 * MIB
SIGNATURE_BYTES_MAX = 128
TX_BYTES_MAX = 4 * KIB
BLOCK_BYTES_MAX = 16 * MIB
CERTIFICATE_BYTES_MAX = 64 * KIB
RECORD_BYTES_MAX = 1 * MIB
BUNDLE_BYTES_MAX = 16 * MIB
REQUEST_BYTES_MAX = 4 * KIB
