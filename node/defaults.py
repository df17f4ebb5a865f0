"""The node's defaults that more than one layer reads, each written once, unit last.

Three layers describe a running node: ``config.toml`` (decoded into
:class:`node.config.NodeConfig`, whose defaults the testnet generator writes out in
full), the p2p layer's :class:`node.p2p.config.P2PConfig` (seconds, where the TOML has
milliseconds) and the replica's :class:`consensus.state.ReplicaConfig`. They used to
repeat these values and disagree; now the first two read them from here, and the node
passes the consensus values to the replica explicitly. Each value is the one a default
testnet already ran with (the generated ``config.toml``), so nothing changes for it.
A default that only one layer knows stays beside its field. docs/NODE.md section 2
lists every key and records these decisions.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# [p2p]: the p2p layer converts the milliseconds to its seconds.
P2P_LISTEN_HOST = "127.0.0.1"  # was 0.0.0.0 in P2PConfig: listen on loopback unless told
P2P_WRITE_TIMEOUT_MS = 5_000
P2P_HEARTBEAT_INTERVAL_MS = 1_000
P2P_HEARTBEAT_TIMEOUT_MS = 5 * P2P_HEARTBEAT_INTERVAL_MS  # the node derives 5 x interval
P2P_DIAL_BACKOFF_MIN_MS = 200  # was 100 ms in P2PConfig
P2P_DIAL_BACKOFF_MAX_MS = 10_000  # was 5,000 ms in P2PConfig
P2P_FRAME_BYTES_MAX = 8 * MIB  # was 4 MiB in P2PConfig: a 4 MiB block + 64 KiB must fit

# [api]
API_BATCH_TXS_MAX = 5_000  # also the bound of ``shardnet load --batch``

# [consensus]: the node's values, given to ReplicaConfig whose own defaults (checkpoint
# every 10 blocks, 2,000 ms timeouts) serve the pure core's tests and simulator only.
CONSENSUS_BLOCK_TXS_MAX = 2_000
CONSENSUS_CHECKPOINT_INTERVAL_BLOCKS = 16
CONSENSUS_REQUEST_TIMEOUT_MS = 4_000
CONSENSUS_VIEW_CHANGE_TIMEOUT_MS = 4_000
