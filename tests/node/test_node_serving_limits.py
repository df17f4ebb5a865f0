"""What a node sends its peers stays within a p2p frame: block-sync answers and
forwarded transaction batches are bounded by bytes, not only by count."""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace
from typing import Any

import structlog
from structlog.testing import capture_logs

from consensus.kernel.codec import decode
from node.admission import Admission
from node.config import PRE_PREPARE_OVERHEAD_BYTES
from node.store import StoredBlock
from node.sync import SyncLimits, serve_sync
from node.wire import SyncRequest, SyncResponse, decode_tx_batch

FRAME = 1024 * 1024
CONFIG = (f"[node]\nshard = 0\nindex = 1\n[p2p]\nframe_bytes_max = {FRAME}\n"
          f"[consensus]\nblock_bytes_max = {FRAME - PRE_PREPARE_OVERHEAD_BYTES}\n"
          "sync_batch_blocks_max = 64\n")


class Blocks:
    """A store holding blocks of ``size`` bytes each at every height."""

    def __init__(self, size: int) -> None:
        self.size = size

    async def get_blocks(self, first: int, last: int) -> list[StoredBlock]:
        return [StoredBlock(h, bytes(32), b"b" * self.size, b"c" * 200)
                for h in range(first, last + 1)]


def serve(block_size: int, first: int, last: int) -> list[int]:
    store: Any = Blocks(block_size)
    limits = SyncLimits(batch_blocks_max=64, frame_bytes_max=FRAME)
    answer = asyncio.run(serve_sync(store, 0, limits, SyncRequest(0, first, last)))
    assert len(answer) <= FRAME - PRE_PREPARE_OVERHEAD_BYTES + 64
    return [b.height for b in decode(answer, SyncResponse, 64 * FRAME).blocks]


def test_sync_answer_stops_before_the_frame_is_full() -> None:
    heights = serve(300_000, 5, 60)  # 56 blocks of 300 KB would be ~17 MB
    assert heights == [5, 6, 7]


def test_sync_answer_carries_small_blocks_up_to_the_count_limit() -> None:
    assert serve(1_000, 1, 500) == list(range(1, 65))


def test_sync_answer_always_carries_one_block() -> None:
    assert serve(FRAME - PRE_PREPARE_OVERHEAD_BYTES - 300, 9, 12) == [9]


def test_sync_answer_for_another_shard_is_empty() -> None:
    store: Any = Blocks(1_000)
    limits = SyncLimits(batch_blocks_max=64, frame_bytes_max=FRAME)
    answer = asyncio.run(serve_sync(store, 0, limits, SyncRequest(1, 1, 5)))
    assert decode(answer, SyncResponse, FRAME).blocks == []


def test_forwarded_batches_are_bounded_by_bytes_and_logged() -> None:
    sent: list[bytes] = []
    admission: Any = SimpleNamespace(
        forward_bytes_max=min(65536, FRAME) // 2,  # API body limit 64 KiB, 1 MiB frames
        _forward=lambda channel, data: sent.append(data),
        _to_forward=[(bytes([i % 256]) * 1000, bytes([i]) * 32) for i in range(100)])
    admission._batch_length = functools.partial(Admission._batch_length, admission)
    with capture_logs() as logs:
        admission.log = structlog.get_logger()
        asyncio.run(Admission._flush_forward(admission))
    batches = [decode_tx_batch(data, 65536).txs for data in sent]
    assert all(len(data) <= 65536 // 2 for data in sent)
    assert sum(len(b) for b in batches) == 100 and len(batches) == 4  # 32 KB each: 31 txs
    forwarded = [e for e in logs if e["event"] == "tx.forwarded"]
    assert [e["count"] for e in forwarded] == [len(b) for b in batches]
    assert forwarded[0]["txs"][0] == (bytes([0]) * 32).hex()
