"""Block sync, both sides: a replica that is behind asks its shard's peers for
committed blocks (``SyncClient``); every node answers such requests from its store
(``serve_sync``). The replica verifies each block's commit certificate before it
executes it; nothing here trusts the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from consensus.actions import RequestSync
from consensus.certificate import CommitCertificate
from consensus.events import SyncedBlock, SyncResult
from consensus.kernel.codec import decode, encode
from consensus.kernel.errors import DecodeError, ShardnetError
from consensus.kernel.limits import CERTIFICATE_BYTES_MAX
from node.config import PRE_PREPARE_OVERHEAD_BYTES
from node.drops import DropLog
from node.metrics import NodeMetrics
from node.store import StoreAPI
from node.wire import SyncedBlockWire, SyncRequest, SyncResponse

SYNC_RESPONSE_BYTES_MAX = 64 * 1024 * 1024
SYNC_BLOCK_OVERHEAD_BYTES = 64  # height, block hash and msgpack framing of one synced block
SYNC_REQUEST_TIMEOUT_S = 10.0

Request = Callable[[int, bytes, float], Awaitable[bytes]]  # (index, data, timeout_s)


@dataclass(frozen=True, slots=True)
class SyncLimits:
    batch_blocks_max: int  # [consensus] sync_batch_blocks_max
    frame_bytes_max: int  # [p2p] frame_bytes_max


async def serve_sync(store: StoreAPI, shard: int, limits: SyncLimits,
                     request: SyncRequest) -> bytes:
    """At most ``batch_blocks_max`` blocks from ``request.first``, and no more bytes
    than fit a frame (64 full blocks are ~20 MB): the asker asks again from where
    the answer stops. One block always fits (config check)."""
    if request.shard != shard or request.last < request.first:
        return encode(SyncResponse([]))
    last = min(request.last, request.first + limits.batch_blocks_max - 1)
    blocks = await store.get_blocks(request.first, last)
    budget = limits.frame_bytes_max - PRE_PREPARE_OVERHEAD_BYTES
    answer: list[SyncedBlockWire] = []
    for b in blocks:
        budget -= len(b.block) + len(b.certificate) + SYNC_BLOCK_OVERHEAD_BYTES
        if answer and budget < 0:
            break
        answer.append(SyncedBlockWire(b.height, b.block_hash, b.block, b.certificate))
    return encode(SyncResponse(answer))


class SyncClient:
    """Asks the peers a ``RequestSync`` names (else every other validator of the
    shard) in turn, each for up to ``batch_blocks_max`` blocks, until one answers."""

    def __init__(self, *, shard: int, me: int, validators: int, request: Request,
                 limits: SyncLimits, height: Callable[[], int], metrics: NodeMetrics,
                 log: Any, drop: DropLog) -> None:
        self.shard = shard
        self.me = me
        self.validators = validators
        self._request = request
        self.limits = limits
        self._height = height  # our committed height, for the logs
        self.metrics = metrics
        self.log = log
        self.drop = drop

    async def fetch(self, action: RequestSync) -> SyncResult | None:
        """The blocks of the first peer that has some, or None."""
        last = min(action.to_height, action.from_height + self.limits.batch_blocks_max - 1)
        request = encode(SyncRequest(self.shard, action.from_height, last))
        self.log.info("sync.requested", first=action.from_height, last=last,
                      peers=list(action.peers), height=self._height())
        peers = list(action.peers) or [i for i in range(self.validators) if i != self.me]
        for peer in peers:
            try:
                answer = await self._request(peer, request, SYNC_REQUEST_TIMEOUT_S)
                response = decode(answer, SyncResponse, SYNC_RESPONSE_BYTES_MAX)
                blocks = tuple(
                    SyncedBlock(b.height, b.payload, b.block_hash,
                                decode(b.certificate, CommitCertificate, CERTIFICATE_BYTES_MAX))
                    for b in response.blocks
                )
            except (ShardnetError, DecodeError) as exc:
                self.drop("sync", exc.reason, peer=peer)
                continue
            if blocks:
                self.metrics.sync_blocks.inc(len(blocks))
                self.log.info("sync.applied", blocks=len(blocks), first=blocks[0].height,
                              height=self._height())
                return SyncResult(blocks)
        return None
