"""A transaction's finality across shards (docs/PROTOCOL.md section 5, "Relay and finality").

A transaction is ``committed`` when its block commits on its own shard, and
``finalized`` once every receipt it caused, transitively, has been applied: a
cross-shard transfer when the destination applies its CREDIT; a cross-shard swap
when the pool's shard has applied the SWAP and the sender's shard the SWAP_OUTPUT
or REFUND that came back. A transaction that caused no receipt is final when it
commits. The node of the transaction's shard follows the chain hop by hop: its own
store knows which receipts the transaction emitted (by origin), and each
destination shard answers a ``ReceiptStatusRequest`` from its store (where each
receipt was applied and what applying it emitted). Every hop reports its shard,
height and block time, so per-hop latency can be computed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from consensus.kernel.codec import decode, encode
from consensus.kernel.errors import ShardnetError
from node.store import StoreAPI
from node.wire import (
    STATUS_SEQS_MAX,
    ReceiptRef,
    ReceiptStatus,
    ReceiptStatusRequest,
    ReceiptStatusResponse,
)
from sharding.block import decode_block

HOPS_MAX = 4  # a swap is two hops; a chain never grows past this
STATUS_RESPONSE_BYTES_MAX = 1024 * 1024
BLOCK_TIMES_REMEMBERED = 4096

Request = Callable[[int, int, bytes, float], Awaitable[bytes]]  # (shard, index, data, timeout)


class Finality:
    def __init__(self, *, shard: int, index: int, validators_per_shard: list[int],
                 store: StoreAPI, request: Request, timeout_s: float = 2.0) -> None:
        self.shard = shard
        self.index = index
        self._sizes = validators_per_shard
        self.store = store
        self._request = request
        self.timeout_s = timeout_s
        self._block_times: OrderedDict[int, int] = OrderedDict()

    async def block_time_ms(self, height: int) -> int:
        cached = self._block_times.get(height)
        if cached is not None:
            return cached
        stored = await self.store.get_block(height)
        time_ms = decode_block(stored.block).header.time_ms if stored is not None else 0
        self._block_times[height] = time_ms
        if len(self._block_times) > BLOCK_TIMES_REMEMBERED:
            self._block_times.popitem(last=False)
        return time_ms

    # -- answering other shards ------------------------------------------------------

    async def serve(self, request: ReceiptStatusRequest) -> bytes:
        items = await self.local_status(request.origin, request.src_shard, request.seqs)
        return encode(ReceiptStatusResponse(self.shard, items))

    async def local_status(self, origin: bytes, src: int, seqs: list[int]
                           ) -> list[ReceiptStatus]:
        applied = {(r.src_shard, r.seq): r.height
                   for r in await self.store.get_inbound_by_origin(origin)}
        emitted = await self.store.get_receipts_by_origin(origin)
        items = []
        for seq in seqs[:STATUS_SEQS_MAX]:
            height = applied.get((src, seq))
            if height is None:
                items.append(ReceiptStatus(seq, False, 0, 0, []))
                continue
            follow = [ReceiptRef(r.dst_shard, r.seq) for r in emitted if r.height == height]
            items.append(ReceiptStatus(seq, True, height, await self.block_time_ms(height),
                                       follow))
        return items

    # -- following one transaction -------------------------------------------------------

    async def follow(self, origin: bytes, height: int) -> dict[str, Any]:
        """The hops of a committed transaction's receipts: ``finalized`` (bool), the
        hops seen so far, and the receipts still pending or unreachable."""
        hops: list[dict[str, Any]] = [{"shard": self.shard, "height": height,
                                       "time_ms": await self.block_time_ms(height)}]
        own = [r for r in await self.store.get_receipts_by_origin(origin) if r.height == height]
        frontier = [(self.shard, r.dst_shard, r.seq) for r in own]
        pending: list[dict[str, Any]] = []
        for _ in range(HOPS_MAX):
            if not frontier:
                break
            next_frontier: list[tuple[int, int, int]] = []
            for (src, dst), seqs in _group(frontier).items():
                items = await self._ask(dst, origin, src, seqs)
                if items is None:
                    pending.extend({"src_shard": src, "dst_shard": dst, "seq": seq,
                                    "reason": "unreachable"} for seq in seqs)
                    continue
                for item in items:
                    if not item.applied:
                        pending.append({"src_shard": src, "dst_shard": dst, "seq": item.seq,
                                        "reason": "in_flight"})
                        continue
                    hops.append({"shard": dst, "height": item.height, "time_ms": item.time_ms,
                                 "src_shard": src, "seq": item.seq})
                    next_frontier.extend((dst, ref.dst_shard, ref.seq) for ref in item.emitted)
            frontier = next_frontier
        return {"finalized": not pending and not frontier, "hops": hops, "pending": pending}

    async def _ask(self, dst: int, origin: bytes, src: int, seqs: list[int]
                   ) -> list[ReceiptStatus] | None:
        if dst == self.shard:
            return await self.local_status(origin, src, seqs)
        if not 0 <= dst < len(self._sizes):
            return None
        request = encode(ReceiptStatusRequest(origin, src, seqs[:STATUS_SEQS_MAX]))
        size = self._sizes[dst]
        for attempt in range(size):
            peer = (self.index + attempt) % size
            try:
                answer = await self._request(dst, peer, request, self.timeout_s)
                response = decode(answer, ReceiptStatusResponse, STATUS_RESPONSE_BYTES_MAX)
            except (ShardnetError, ValueError):
                continue
            if response.shard == dst:
                return [item for item in response.items if item.seq in seqs]
        return None


def _group(frontier: list[tuple[int, int, int]]) -> dict[tuple[int, int], list[int]]:
    grouped: dict[tuple[int, int], list[int]] = {}
    for src, dst, seq in frontier:
        grouped.setdefault((src, dst), []).append(seq)
    return grouped
