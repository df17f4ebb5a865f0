"""Gossipsub adjustments for py-libp2p 0.8.1 (see shared/docs/P2P-NOTES.md).

* Each peer's outbound RPC queue holds 32 RPCs and drops silently while ``publish``
  reports success. :func:`install` replaces the queue class used by ``Pubsub`` with one
  of configurable depth that counts what it refuses. This is process-wide (the class
  is a module global of py-libp2p); one node runs one host per process.
* Subscription channels hold 32 messages and drop when full. :class:`BridgedPubsub`
  bypasses them: accepted messages go straight to a callback (the asyncio bridge).
* Every gossip RPC carries the sender's signed peer record, and the receiver verifies
  its Ed25519 signature and rewrites the peerstore for every RPC, twice for RPCs with
  control messages. The record's bytes only change when the sender's addresses do, so
  :func:`install` remembers the (peer, record bytes) pairs already accepted; the
  result of verifying identical bytes cannot differ.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize, RpcQueue

_lock = threading.Lock()
_drops = 0


class CountingRpcQueue(RpcQueue):
    """An ``RpcQueue`` whose depth is set by :func:`install` and which counts
    refused RPCs (py-libp2p only logs them at DEBUG)."""

    depth = 32

    def __init__(
        self, max_size: int | None = None, max_message_size: int = DefaultMaxMessageSize
    ) -> None:
        super().__init__(max_size or CountingRpcQueue.depth, max_message_size)

    def push(self, rpc: rpc_pb2.RPC, priority: bool = False) -> bool:
        ok = super().push(rpc, priority)
        if not ok and not self.closed:
            global _drops
            with _lock:
                _drops += 1
        return ok


_RECORDS_MAX = 4096
_accepted_records: OrderedDict[tuple[ID, bytes], None] = OrderedDict()
_verify_record = pubsub_module.maybe_consume_signed_record


def consume_signed_record_once(msg: rpc_pb2.RPC, host: IHost, peer_id: ID) -> bool:
    """``maybe_consume_signed_record`` that skips records it already accepted."""
    if not msg.HasField("senderRecord"):
        return True
    key = (peer_id, msg.senderRecord)
    with _lock:
        if key in _accepted_records:
            _accepted_records.move_to_end(key)
            return True
    if not _verify_record(msg, host, peer_id):
        return False
    with _lock:
        _accepted_records[key] = None
        if len(_accepted_records) > _RECORDS_MAX:
            _accepted_records.popitem(last=False)
    return True


def install(queue_depth: int) -> None:
    """Make every Pubsub created from now on use deep, counting peer queues, and
    verify each distinct signed peer record once."""
    CountingRpcQueue.depth = max(CountingRpcQueue.depth, queue_depth)
    pubsub_module.RpcQueue = CountingRpcQueue  # type: ignore[attr-defined]
    pubsub_module.maybe_consume_signed_record = consume_signed_record_once  # type: ignore[attr-defined,unused-ignore]
    gossipsub_module.maybe_consume_signed_record = consume_signed_record_once  # type: ignore[attr-defined]


def rpc_queue_drops() -> int:
    """Gossip RPCs refused by full per-peer queues, in this process."""
    with _lock:
        return _drops


class BridgedPubsub(Pubsub):
    """``Pubsub`` that hands accepted messages to ``deliver`` instead of bounded
    per-topic channels. ``deliver`` runs in the trio thread and must not block."""

    def __init__(
        self, *args: Any, deliver: Callable[[rpc_pb2.Message], None], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._deliver = deliver

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        if any(topic in self.topic_ids for topic in publish_message.topicIDs):
            self._deliver(publish_message)
