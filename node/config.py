"""A node's configuration: ``config.toml`` in the node home, decoded into typed structs.

Every field has a default except the node's identity. Errors name the offending
key (``$.api.port``) so a user can fix the file without reading code.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from consensus.kernel.errors import ShardnetError
from node import defaults

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class ConfigError(ShardnetError):
    reason = "bad_config"


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class NodeSection(_Section):
    shard: NonNegative
    index: NonNegative
    name: str = ""
    data_dir: str = "data"
    genesis: str = "genesis.json"
    key_file: str = "node_key.json"


class P2PSection(_Section):
    listen_host: str = defaults.P2P_LISTEN_HOST
    listen_port: Port = 0
    announce_host: str = ""
    write_timeout_ms: Positive = defaults.P2P_WRITE_TIMEOUT_MS
    heartbeat_interval_ms: Positive = defaults.P2P_HEARTBEAT_INTERVAL_MS
    dial_backoff_min_ms: Positive = defaults.P2P_DIAL_BACKOFF_MIN_MS
    dial_backoff_max_ms: Positive = defaults.P2P_DIAL_BACKOFF_MAX_MS
    frame_bytes_max: Annotated[int, msgspec.Meta(ge=64 * 1024, le=256 * 1024 * 1024)] = (
        defaults.P2P_FRAME_BYTES_MAX)
    # Serve keys outside the genesis validator set (off: the p2p gate refuses them on
    # every stream; issue 14). For experiments with external observers only.
    accept_unknown_peers: bool = False


class ApiSection(_Section):
    host: str = "127.0.0.1"
    port: Port = 0
    body_bytes_max: Positive = 4 * 1024 * 1024
    batch_txs_max: Positive = defaults.API_BATCH_TXS_MAX
    connections_max: Positive = defaults.API_CONNECTIONS_MAX  # requests in progress
    events_subscribers_max: Positive = defaults.API_EVENTS_SUBSCRIBERS_MAX  # /v1/events
    # Every validator's API URL as its users reach it, [shard][index] like the genesis
    # validators (GET /v1/network); missing entries: http://<genesis api_address>.
    advertise_urls: list[list[str]] = msgspec.field(default_factory=list)


class MempoolSection(_Section):
    txs_max: Positive = 50_000
    bytes_max: Positive = 64 * 1024 * 1024
    nonce_window: Positive = 1_000
    sender_txs_max: Positive = 1_000
    gapped_ttl_ms: Positive = 60_000
    gapped_txs_max: Positive = defaults.MEMPOOL_GAPPED_TXS_MAX  # nonce ahead: in all
    gapped_sender_txs_max: Positive = defaults.MEMPOOL_GAPPED_SENDER_TXS_MAX  # per sender
    reforward_after_ms: Positive = defaults.MEMPOOL_REFORWARD_AFTER_MS  # then doubling


class ConsensusSection(_Section):
    block_interval_ms: Positive = 200
    block_txs_max: Positive = defaults.CONSENSUS_BLOCK_TXS_MAX
    block_inbound_max: Positive = 1_000  # inbound receipts per block, beside the txs
    block_bytes_max: Positive = 4 * 1024 * 1024
    checkpoint_interval: Positive = defaults.CONSENSUS_CHECKPOINT_INTERVAL_BLOCKS  # blocks
    request_timeout_ms: Positive = defaults.CONSENSUS_REQUEST_TIMEOUT_MS
    view_change_timeout_ms: Positive = defaults.CONSENSUS_VIEW_CHANGE_TIMEOUT_MS
    sync_batch_blocks_max: Positive = 64
    proposal_time_ahead_max_ms: Positive = defaults.CONSENSUS_PROPOSAL_TIME_AHEAD_MAX_MS
    inbox_bytes_max: Positive = defaults.CONSENSUS_INBOX_BYTES_MAX
    pipeline_depth: Positive = defaults.CONSENSUS_PIPELINE_DEPTH  # heights in flight
    overlap_storage: bool = defaults.CONSENSUS_OVERLAP_STORAGE  # commit writes in background


class RelaySection(_Section):
    """The cross-shard relay (docs/PROTOCOL.md section 5, "Relay and finality")."""

    poll_interval_ms: Positive = 500  # how often a node checks whether to pull receipts
    idle_poll_ms: Positive = 3_000  # pull anyway after this long without a pull
    request_timeout_ms: Positive = 3_000
    bundle_receipts_max: Positive = 2_000  # receipts per pushed message
    serve_receipts_max: Positive = 2_000  # receipts per pull answer


class ExecutorSection(_Section):
    workers: NonNegative = 0  # 0: the cores available to the process
    # Threads verifying a batch's signatures at admission (node/verify_pool.py); 0: the
    # cores available to the process (affinity, cgroup quota), as for workers.
    verify_threads: NonNegative = 0


class LogSection(_Section):
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"
    # "" : stdout. Else a file (relative to the home) rotating at file_bytes_max.
    file: str = ""
    file_bytes_max: Annotated[int, msgspec.Meta(ge=64 * 1024)] = defaults.LOG_FILE_BYTES_MAX
    file_backups: Positive = defaults.LOG_FILE_BACKUPS  # rotated files kept
    # What `shardnet logs --trace` reads (docs/LOGS.md); "" : no trace.
    trace_file: str = "logs/trace.jsonl"
    trace_file_bytes_max: Annotated[int, msgspec.Meta(ge=64 * 1024)] = (
        defaults.LOG_TRACE_FILE_BYTES_MAX)
    trace_file_backups: Positive = defaults.LOG_TRACE_FILE_BACKUPS


class FaultsSection(_Section):
    """Fault injection for tests (docs/NODE.md, "Faults and byzantine modes"): off by
    default; when on, a control endpoint on 127.0.0.1 only (``port`` 0: a free one,
    written to ``<home>/faults.port``) guarded by a token in ``<home>/faults.token``."""

    enabled: bool = False
    port: Port = 0


class NetEmulationSection(_Section):
    """Emulating separate machines on one (docs/NODE.md, "Network emulation"): a one-way
    delay added to, and a rate cap on, what this node sends its peers (messages,
    heartbeats, requests and their answers, gossip; not the HTTP API). ``mode``:
    ``off`` (the default: nothing built), ``userspace`` (the node's p2p layer holds
    each message until due, node/p2p/shaping.py), ``netem`` (the kernel does it, a
    container's qdisc: the node adds nothing). ``testnet init --latency --bandwidth``
    writes it; in a container the entry point decides between netem and userspace."""

    mode: Literal["off", "userspace", "netem"] = "off"
    latency_ms: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0
    bandwidth_bits_per_s: Annotated[int, msgspec.Meta(ge=0, le=100_000_000_000)] = 0


class NodeConfig(_Section):
    node: NodeSection
    p2p: P2PSection = msgspec.field(default_factory=P2PSection)
    api: ApiSection = msgspec.field(default_factory=ApiSection)
    mempool: MempoolSection = msgspec.field(default_factory=MempoolSection)
    consensus: ConsensusSection = msgspec.field(default_factory=ConsensusSection)
    relay: RelaySection = msgspec.field(default_factory=RelaySection)
    executor: ExecutorSection = msgspec.field(default_factory=ExecutorSection)
    log: LogSection = msgspec.field(default_factory=LogSection)
    faults: FaultsSection = msgspec.field(default_factory=FaultsSection)
    net_emulation: NetEmulationSection = msgspec.field(default_factory=NetEmulationSection)
    home: str = ""

    def path(self, relative: str) -> Path:
        """Resolve a path from the config against the node home."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else Path(self.home) / candidate


CONFIG_FILE = "config.toml"


def parse_config(text: bytes | str, home: str | Path = ".") -> NodeConfig:
    data = text.encode() if isinstance(text, str) else text
    try:
        config = msgspec.toml.decode(data, type=NodeConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config.toml: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"config.toml is not valid TOML: {exc}") from None
    if config.home:
        raise ConfigError("$.home: not a config.toml key (the node home is `--home DIR`)")
    _check_together(config)
    return msgspec.structs.replace(config, home=str(Path(home)))


# A PRE-PREPARE carries the block plus the previous certificate and its own fields.
PRE_PREPARE_OVERHEAD_BYTES = 64 * 1024


def _check_together(config: NodeConfig) -> None:
    """What one key's type cannot say: rules between keys, and the p2p layer's."""
    p2p, consensus = config.p2p, config.consensus
    try:
        ipaddress.IPv4Address(p2p.listen_host)
    except ValueError:
        raise ConfigError(f"$.p2p.listen_host: {p2p.listen_host!r} is not an IPv4 address "
                          "(use 0.0.0.0 or 127.0.0.1)") from None
    if p2p.dial_backoff_max_ms < p2p.dial_backoff_min_ms:
        raise ConfigError("$.p2p.dial_backoff_max_ms: below dial_backoff_min_ms")
    if consensus.block_bytes_max + PRE_PREPARE_OVERHEAD_BYTES > p2p.frame_bytes_max:
        raise ConfigError(
            f"$.consensus.block_bytes_max: {consensus.block_bytes_max} does not fit a p2p frame "
            f"(p2p.frame_bytes_max {p2p.frame_bytes_max} - {PRE_PREPARE_OVERHEAD_BYTES})")
    if consensus.inbox_bytes_max < p2p.frame_bytes_max:
        raise ConfigError(
            f"$.consensus.inbox_bytes_max: {consensus.inbox_bytes_max} is below one p2p frame "
            f"(p2p.frame_bytes_max {p2p.frame_bytes_max})")
    emulation = config.net_emulation
    if 0 < emulation.bandwidth_bits_per_s < 8_000:
        raise ConfigError(f"$.net_emulation.bandwidth_bits_per_s: "
                          f"{emulation.bandwidth_bits_per_s} is below 8000 (0: no cap)")
    if 2 * emulation.latency_ms >= 5 * p2p.heartbeat_interval_ms:
        raise ConfigError(
            f"$.net_emulation.latency_ms: a round trip of 2 x {emulation.latency_ms} ms "
            f"reaches the heartbeat timeout (5 x p2p.heartbeat_interval_ms)")
    if consensus.pipeline_depth > consensus.checkpoint_interval:
        raise ConfigError(
            f"$.consensus.pipeline_depth: {consensus.pipeline_depth} is above "
            f"checkpoint_interval ({consensus.checkpoint_interval})")


def load_config(home: str | Path) -> NodeConfig:
    path = Path(home) / CONFIG_FILE
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, home)


def render_config(config: NodeConfig) -> str:
    """TOML text of ``config`` (without the derived ``home``), for the testnet generator."""
    lines: list[str] = []
    for section in msgspec.structs.fields(NodeConfig):
        if section.name == "home":
            continue
        lines.append(f"[{section.name}]")
        value = getattr(config, section.name)
        for field in msgspec.structs.fields(type(value)):
            item = getattr(value, field.name)
            lines.append(f"{field.name} = {_toml_value(item)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (str, list)):
        return msgspec.json.encode(value).decode()  # JSON strings and arrays are TOML too
    raise TypeError(f"no TOML rendering for {type(value).__name__}")
