"""A transaction's hops, for the page's search box.

The dashboard does not know a transaction's shard: one node of every shard is asked
``GET /v1/txs/{hash}`` (another node of the shard when one does not answer); only the
sender's shard knows it. Its answer lists the hops (the source block, then each block
that applied a receipt it caused, up to four); each hop's block is read from a node of
that hop's shard (``/v1/blocks/{height}``) for its hash, proposer and size.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp

from scripts.dashboard.aggregator import Aggregator, NodeView, describe

TX_HASH = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")


class TxSearchError(Exception):
    """An answer other than the transaction: HTTP status, reason, detail."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail

    def as_json(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


def parse_tx_hash(text: str) -> str:
    match = TX_HASH.fullmatch(text.strip())
    if match is None:
        raise TxSearchError(400, "malformed", "a transaction hash is 64 hex digits")
    return match.group(1).lower()


def _shard_nodes(aggregator: Aggregator, shard: int) -> list[NodeView]:
    """The shard's nodes, those that answered the last poll first."""
    nodes = [n for n in aggregator.nodes if n.target.shard == shard]
    return sorted(nodes, key=lambda n: not n.up)


async def _ask_shard(aggregator: Aggregator, shard: int, path: str
                     ) -> tuple[dict[str, Any] | None, str | None]:
    """(answer, None), (None, None) when the shard's node says 404, or (None, reason)
    when no node of the shard answered."""
    reasons = []
    for node in _shard_nodes(aggregator, shard):
        try:
            answer = await aggregator.get_json(f"{node.target.url}{path}")
        except aiohttp.ClientResponseError as exc:
            if exc.status == 404:
                return None, None
            reasons.append(f"{node.target.name}: {describe(exc)}")
            continue
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
            reasons.append(f"{node.target.name}: {describe(exc)}")
            continue
        if isinstance(answer, dict):
            return answer, None
        reasons.append(f"{node.target.name}: not a JSON object")
    return None, "; ".join(reasons) or "no node"


async def find_tx(aggregator: Aggregator, text: str) -> dict[str, Any]:
    """The transaction's status and hops, each hop with its block; TxSearchError 400 for
    a malformed hash, 404 when no shard knows it (502 when none could be asked)."""
    digest = parse_tx_hash(text)
    shards = range(aggregator.network.num_shards)
    answers = await asyncio.gather(*(_ask_shard(aggregator, s, f"/v1/txs/{digest}")
                                     for s in shards))
    unreachable = {str(s): reason for s, (_, reason) in zip(shards, answers, strict=True)
                   if reason is not None}
    found = [answer for answer, _ in answers if answer is not None]
    if not found:
        if len(unreachable) == len(shards):
            raise TxSearchError(502, "unreachable",
                                "no shard answered: " + "; ".join(unreachable.values()))
        detail = f"no shard knows transaction {digest}"
        if unreachable:
            detail += f" (shards not asked: {', '.join(unreachable)})"
        raise TxSearchError(404, "not_found", detail)
    tx = found[0]
    listed = tx.get("hops")
    hops = [h for h in listed if isinstance(h, dict)] if isinstance(listed, list) else []
    blocks = await asyncio.gather(*(_hop_block(aggregator, hop) for hop in hops))
    first_ms = hops[0].get("time_ms") if hops else None
    shown = []
    for number, (hop, block) in enumerate(zip(hops, blocks, strict=True)):
        time_ms = hop.get("time_ms")
        shown.append({**hop, "hop": number,
                      "after_ms": time_ms - first_ms if isinstance(time_ms, int)
                      and isinstance(first_ms, int) else None,
                      "block": block})
    return {"hash": digest, "status": tx.get("status"), "shard": tx.get("shard"),
            "height": tx.get("height"), "outcome": tx.get("outcome"),
            "error": tx.get("error"), "detail": tx.get("detail"),
            "pending_receipts": tx.get("pending_receipts"), "hops": shown,
            "unreachable_shards": unreachable}


async def _hop_block(aggregator: Aggregator, hop: dict[str, Any]) -> dict[str, Any] | None:
    shard, height = hop.get("shard"), hop.get("height")
    if not isinstance(shard, int) or not isinstance(height, int) or not (
            0 <= shard < aggregator.network.num_shards) or height < 0:
        return None
    block, _ = await _ask_shard(aggregator, shard, f"/v1/blocks/{height}")
    if block is None:
        return None
    txs = block.get("txs")
    return {"hash": block.get("hash"), "proposer": block.get("proposer"),
            "view": block.get("view"), "txs": len(txs) if isinstance(txs, list) else None,
            "inbound": block.get("inbound_receipts")}
