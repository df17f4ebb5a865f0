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
# Memory bounds of the p2p queues (issue 14 finding 7): bytes, beside their frame counts.
P2P_INBOUND_QUEUE_BYTES_MAX = 128 * MIB  # received payloads waiting for the node's loop
P2P_SEND_QUEUE_BYTES_MAX = 32 * MIB  # frames waiting for one peer (was 64 MiB, unshared)
P2P_SEND_QUEUES_BYTES_MAX = 256 * MIB  # frames waiting for all peers together

# [api]
API_BATCH_TXS_MAX = 5_000  # also the bound of ``shardnet load --batch``
# Requests in progress at once, and open /v1/events streams (a dashboard, the load
# generator and a chaos runner subscribing to every node fit); beyond: 503 (issue 14).
API_CONNECTIONS_MAX = 1_024
API_EVENTS_SUBSCRIBERS_MAX = 64
# An idle keep-alive connection is closed after this (aiohttp's own default is an hour,
# which let idle sockets pile up; the load generator's pool keeps connections 15 s).
API_KEEPALIVE_IDLE_S = 75

# [consensus]: the node's values, given to ReplicaConfig whose own defaults (checkpoint
# every 10 blocks, 2,000 ms timeouts) serve the pure core's tests and simulator only.
CONSENSUS_BLOCK_TXS_MAX = 2_000
CONSENSUS_CHECKPOINT_INTERVAL_BLOCKS = 16
CONSENSUS_REQUEST_TIMEOUT_MS = 4_000
CONSENSUS_VIEW_CHANGE_TIMEOUT_MS = 4_000
# [consensus]: heights in flight at once (issue 16; docs/CONSENSUS.md "Pipelining"): 1
# runs one height at a time; D > 1 pre-prepares and prepares up to D heights past the
# committed one, each executed on the block in flight below. 1..checkpoint_interval.
CONSENSUS_PIPELINE_DEPTH = 1
# [consensus]: write a committed block to the store while the next height proceeds
# (issue 16, part A). Off: no gain measured on the 2-core machine, medians lower with it
# on (not resolved by the runs; docs/BENCHMARKS.md "Pipelining in the node").
CONSENSUS_OVERLAP_STORAGE = False

# [consensus]: a fresh proposal's header time may be at most this far past a replica's
# wall clock (docs/PROTOCOL.md section 3, "Header rules"; geth allows 15 s too).
CONSENSUS_PROPOSAL_TIME_AHEAD_MAX_MS = 15_000
# [consensus]: bytes of peer messages waiting in the driver's inbox (besides its count
# bound); a message past it is dropped as inbox_over_budget. At least one p2p frame.
CONSENSUS_INBOX_BYTES_MAX = 64 * MIB

# [mempool]: transactions with a nonce ahead of their sender's next one (gapped) may hold
# only a small share of the pool, per sender and in all (issue 14 finding 2); a full pool
# evicts them before it refuses a runnable transaction.
MEMPOOL_GAPPED_TXS_MAX = 5_000  # a tenth of the default txs_max (50,000)
MEMPOOL_GAPPED_SENDER_TXS_MAX = 64
# [mempool]: a client's transaction still pending this long after it arrived is forwarded
# to the shard's other validators again, then after twice as long, ... at most
# MEMPOOL_REFORWARD_INTERVAL_MAX_MS apart (issue 15: a forward lost to a partition or a
# restarting peer was never repeated). 5 block intervals of 200 ms.
MEMPOOL_REFORWARD_AFTER_MS = 1_000
MEMPOOL_REFORWARD_INTERVAL_MAX_MS = 16_000

# [log] (issue 17): the node's log file, when it writes one (``[log] file`` or
# ``shardnet node --log-file``; a local testnet does), and its transaction trace file
# rotate at this size, keeping this many backups (``.1`` the newest): at most
# (1 + backups) x size each. Docker's json-file driver gets the same bounds.
LOG_FILE_BYTES_MAX = 64 * MIB
LOG_FILE_BACKUPS = 4
LOG_TRACE_FILE_BYTES_MAX = 64 * MIB
LOG_TRACE_FILE_BACKUPS = 4
