"""Configuration, identities and counters of the p2p layer (no trio, no asyncio).

Peer ids are the standard libp2p ids (``12D3KooW...``) of the validators' Ed25519 keys,
so they can be computed from genesis: :func:`peer_id_from_seed` for our own key,
:func:`peer_id_from_public_key` for a peer's.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.peer.id import ID

from consensus.kernel.errors import ShardnetError
from node import defaults


class P2PError(ShardnetError):
    """A p2p operation failed for a reason outside our control (peer, network)."""

    reason = "p2p"


class P2PConfigError(P2PError):
    """A p2p configuration value is invalid; ``reason`` names the offending key."""

    reason = "config"


class RequestFailed(P2PError):
    """A request got no usable answer: ``timeout``, ``remote_error``, ``stream_error``,
    ``protocol_error``, ``not_running``, or ``busy`` (the peer serves as many requests
    as it allows, ``requests_in_flight_max``: ask again later)."""

    reason = "request_failed"


def peer_id_from_seed(seed: bytes) -> str:
    """Peer id of the Ed25519 key derived from a 32-byte seed."""
    if len(seed) != 32:
        raise P2PConfigError("private key seed must be 32 bytes", reason="private_key_seed")
    return ID.from_pubkey(create_new_key_pair(seed).public_key).to_base58()


def peer_id_from_public_key(public_key: bytes) -> str:
    """Peer id of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise P2PConfigError("public key must be 32 bytes", reason="public_key")
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(public_key)).to_base58()


def split_host_port(address: str) -> tuple[str, int]:
    """``"10.0.0.2:9000"`` or ``"shard0-node1:9000"`` -> (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise P2PConfigError(f"address {address!r} is not host:port", reason="peers.address")
    return host, int(port_text)


def is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """A peer we keep connected: its address (``ip:port`` or ``dns-name:port``) and
    either its peer id or its raw Ed25519 public key."""

    address: str
    peer_id: str | None = None
    public_key: bytes | None = None

    def __post_init__(self) -> None:
        split_host_port(self.address)
        if (self.peer_id is None) == (self.public_key is None):
            raise P2PConfigError(
                f"peer {self.address}: give exactly one of peer_id, public_key",
                reason="peers.peer_id",
            )
        if self.peer_id is not None:
            try:
                ID.from_base58(self.peer_id)
            except Exception as error:
                raise P2PConfigError(
                    f"peer {self.address}: bad peer id {self.peer_id!r}", reason="peers.peer_id"
                ) from error

    @property
    def id(self) -> str:
        if self.peer_id is not None:
            return self.peer_id
        if self.public_key is None:  # excluded by __post_init__
            raise P2PConfigError("peer without id", reason="peers.peer_id")
        return peer_id_from_public_key(self.public_key)


@dataclass(frozen=True, slots=True)
class P2PConfig:
    """Everything the p2p layer needs. Times are seconds, sizes bytes. The defaults
    the node's ``[p2p]`` section also has come from :mod:`node.defaults`."""

    private_key_seed: bytes
    listen_host: str = defaults.P2P_LISTEN_HOST
    listen_port: int = 0
    announce_host: str | None = None
    announce_port: int | None = None
    peers: tuple[PeerSpec, ...] = ()
    gossip_topics: tuple[str, ...] = ()
    # Only the configured peers (the node's: every other genesis validator, of every
    # shard) may connect and open streams; a stranger is refused on every protocol
    # (``unknown_peer``). True serves anyone: for tools that are meant to be open.
    accept_unknown_peers: bool = False
    # Timeouts and supervision.
    write_timeout_s: float = defaults.P2P_WRITE_TIMEOUT_MS / 1000
    heartbeat_interval_s: float = defaults.P2P_HEARTBEAT_INTERVAL_MS / 1000
    heartbeat_timeout_s: float = defaults.P2P_HEARTBEAT_TIMEOUT_MS / 1000
    dial_timeout_s: float = 5.0
    dial_backoff_min_s: float = defaults.P2P_DIAL_BACKOFF_MIN_MS / 1000
    dial_backoff_max_s: float = defaults.P2P_DIAL_BACKOFF_MAX_MS / 1000
    request_timeout_s: float = 10.0
    startup_timeout_s: float = 20.0
    # Bounds.
    frame_bytes_max: int = defaults.P2P_FRAME_BYTES_MAX
    send_queue_frames_max: int = 100_000
    send_queue_bytes_max: int = defaults.P2P_SEND_QUEUE_BYTES_MAX  # per peer
    send_queues_bytes_max: int = defaults.P2P_SEND_QUEUES_BYTES_MAX  # all peers together
    write_batch_bytes_max: int = 1024 * 1024
    inbound_queue_max: int = 200_000  # items (messages and gossip) waiting for the node
    inbound_queue_bytes_max: int = defaults.P2P_INBOUND_QUEUE_BYTES_MAX  # their payloads
    requests_in_flight_max: int = 64  # requests we serve at once, from all peers
    # ... from one peer: 8 byzantine validators are needed to take all 64 slots.
    requests_in_flight_per_peer_max: int = 8
    # A request frame (the node's are <= 4 KiB): what a served request may buffer.
    request_bytes_max: int = 1024 * 1024
    msg_streams_per_peer_max: int = 4  # message streams one peer may have open to us
    # Gossipsub (see shared/docs/P2P-NOTES.md: the defaults drop silently).
    gossip_heartbeat_interval_s: int = 1
    gossip_queue_max: int = 4096
    gossip_message_bytes_max: int = 512 * 1024
    # Mesh degree D: libp2p's usual 6/4/12 cost a third more gossip CPU on an 8-node
    # testnet for no delivery gain (docs/BENCHMARKS.md "P2P").
    gossip_degree: int = 3
    gossip_degree_low: int = 2
    gossip_degree_high: int = 6
    # py-yamux sends a window update after every read unless this is off (P2P-NOTES).
    yamux_release_on_read: bool = False
    # Userspace network emulation (node.p2p.shaping): a one-way delay added to, and a
    # rate cap (bits/s) on, what we send to peers. 0: off (the default: nothing built).
    emulated_latency_s: float = 0.0
    emulated_rate_bit: int = 0

    def __post_init__(self) -> None:
        if len(self.private_key_seed) != 32:
            raise P2PConfigError("must be 32 bytes", reason="private_key_seed")
        if not is_ipv4(self.listen_host):
            raise P2PConfigError(f"{self.listen_host!r} is not IPv4", reason="listen_host")
        if not 0 <= self.listen_port < 65536:
            raise P2PConfigError(f"{self.listen_port}", reason="listen_port")
        if self.announce_port is not None and not 0 < self.announce_port < 65536:
            raise P2PConfigError(f"{self.announce_port}", reason="announce_port")
        positive = (
            "write_timeout_s",
            "heartbeat_interval_s",
            "heartbeat_timeout_s",
            "dial_timeout_s",
            "dial_backoff_min_s",
            "dial_backoff_max_s",
            "request_timeout_s",
            "startup_timeout_s",
            "send_queue_frames_max",
            "send_queue_bytes_max",
            "send_queues_bytes_max",
            "write_batch_bytes_max",
            "inbound_queue_max",
            "inbound_queue_bytes_max",
            "requests_in_flight_max",
            "requests_in_flight_per_peer_max",
            "msg_streams_per_peer_max",
            "gossip_heartbeat_interval_s",
            "gossip_queue_max",
            "gossip_message_bytes_max",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise P2PConfigError(f"{name} must be > 0", reason=name)
        if self.dial_backoff_max_s < self.dial_backoff_min_s:
            raise P2PConfigError("below dial_backoff_min_s", reason="dial_backoff_max_s")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise P2PConfigError("must exceed heartbeat_interval_s", reason="heartbeat_timeout_s")
        if not 64 <= self.frame_bytes_max <= 256 * 1024 * 1024:
            raise P2PConfigError("must be in 64..256 MiB", reason="frame_bytes_max")
        if not 64 <= self.request_bytes_max <= self.frame_bytes_max:
            raise P2PConfigError("must be in 64..frame_bytes_max", reason="request_bytes_max")
        if self.gossip_message_bytes_max >= 1024 * 1024:
            # py-libp2p 0.8.1 silently loses gossip messages of about 1 MiB or more.
            raise P2PConfigError("must be < 1 MiB", reason="gossip_message_bytes_max")
        if not self.gossip_degree_low <= self.gossip_degree <= self.gossip_degree_high:
            raise P2PConfigError("need low <= degree <= high", reason="gossip_degree")
        if not 0 <= self.emulated_latency_s <= 10.0:
            raise P2PConfigError("must be in 0..10 s", reason="emulated_latency_s")
        if self.emulated_rate_bit and not 8_000 <= self.emulated_rate_bit <= 100 * 10**9:
            raise P2PConfigError("must be 0 or 8 kbit/s..100 gbit/s", reason="emulated_rate_bit")
        own = peer_id_from_seed(self.private_key_seed)
        seen: set[str] = set()
        for spec in self.peers:
            if spec.id in seen:
                raise P2PConfigError(f"peer {spec.id} listed twice", reason="peers")
            seen.add(spec.id)
        if own in seen:
            raise P2PConfigError("our own peer id is in peers", reason="peers")

    @property
    def peer_id(self) -> str:
        return peer_id_from_seed(self.private_key_seed)


@dataclass
class P2PStats:
    """Counters for metrics. Written mostly by the p2p thread; read with
    :meth:`snapshot`, which copies under a lock."""

    msgs_sent: Counter[int] = field(default_factory=Counter)
    bytes_sent: Counter[int] = field(default_factory=Counter)
    msgs_received: Counter[int] = field(default_factory=Counter)
    bytes_received: Counter[int] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    writes: int = 0
    frames_written: int = 0
    frames_per_write_max: int = 0
    connects: int = 0
    reconnects: int = 0
    dial_failures: int = 0
    heartbeat_misses: int = 0
    write_timeouts: int = 0
    requests_sent: int = 0
    requests_failed: int = 0
    requests_served: int = 0
    gossip_published: int = 0
    gossip_received: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "msgs_sent": dict(self.msgs_sent),
                "bytes_sent": dict(self.bytes_sent),
                "msgs_received": dict(self.msgs_received),
                "bytes_received": dict(self.bytes_received),
                "drops": dict(self.drops),
                "writes": self.writes,
                "frames_written": self.frames_written,
                "frames_per_write_avg": self.frames_written / self.writes if self.writes else 0.0,
                "frames_per_write_max": self.frames_per_write_max,
                "connects": self.connects,
                "reconnects": self.reconnects,
                "dial_failures": self.dial_failures,
                "heartbeat_misses": self.heartbeat_misses,
                "write_timeouts": self.write_timeouts,
                "requests_sent": self.requests_sent,
                "requests_failed": self.requests_failed,
                "requests_served": self.requests_served,
                "gossip_published": self.gossip_published,
                "gossip_received": self.gossip_received,
            }
