"""``GET /v1/accounts/{address}/txs`` (issue 17 explorer): the account history index of
node/store/accounts.py as the node serves it, over both stores. The index rows come from
``ledger_store.account_entries`` on a real block: sender, recipient, cross-shard credit."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from consensus.kernel.codec import encode
from node.api import build_app
from node.ledger_store import account_entries
from node.service import NodeService
from node.store import BlockCommit, Store, StoreAPI
from node.store.accounts import ACCOUNT_TXS_PAGE_MAX, cursor_of
from node.store.memory import MemoryStore
from sharding.accounts import derive_account, shard_of
from sharding.block import Block, BlockHeader
from sharding.executor import TxOutcome
from sharding.receipts import Receipt
from sharding.tx import Transfer, TxBody, sign_tx, tx_hash
from tests.node.test_api_http import RecordingService

SHARDS = 2
HERE = 0
KEYS = [derive_account("shardnet", i) for i in range(40)]
MINE = [k.public_key for k in KEYS if shard_of(k.public_key, SHARDS) == HERE]
THEIRS = [k.public_key for k in KEYS if shard_of(k.public_key, SHARDS) != HERE]
SENDER = next(k for k in KEYS if k.public_key == MINE[0])
RECIPIENT, STRANGER = MINE[1], MINE[2]
TRANSFERS = 7


def _header(height: int) -> BlockHeader:
    z = b"\0" * 32
    return BlockHeader(shard=HERE, height=height, view=0, prev_hash=z, time_ms=1, proposer=0,
                       tx_root=z, inbound_root=z, receipts_root=z, state_root=z,
                       evidence_root=z)


def _blocks() -> tuple[list[BlockCommit], list[str], str]:
    """Heights 1..7: a transfer SENDER -> RECIPIENT each; height 8 credits RECIPIENT
    with an inbound receipt of a transfer made on the other shard."""
    commits, hashes = [], []
    for height in range(1, TRANSFERS + 1):
        tx = sign_tx(SENDER, TxBody("c", SENDER.public_key, height - 1,
                                    Transfer(RECIPIENT, 0, 5)))
        block = Block(_header(height), [tx], [])
        result = types.SimpleNamespace(outcomes=[TxOutcome(tx_hash(tx), True, "", 0)])
        commits.append(BlockCommit(height, bytes([height]) * 32, encode(block), b"",
                                   account_txs=account_entries(block, result)))  # type: ignore[arg-type]
        hashes.append(tx_hash(tx).hex())
    origin = b"\x77" * 32
    receipt = Receipt(src_shard=1, dst_shard=HERE, seq=1, kind=0, origin=origin,
                      sender=THEIRS[0], recipient=RECIPIENT, asset=0, amount=9)
    block = Block(_header(TRANSFERS + 1), [], [receipt])
    result = types.SimpleNamespace(outcomes=[])
    commits.append(BlockCommit(TRANSFERS + 1, b"\x99" * 32, encode(block), b"",
                               account_txs=account_entries(block, result)))  # type: ignore[arg-type]
    return commits, hashes, origin.hex()


class Service(RecordingService):
    """The real ``NodeService.account_txs`` over a real store, on shard ``HERE``."""

    def __init__(self, store: StoreAPI) -> None:
        super().__init__()
        self.store = store
        self.ledger = types.SimpleNamespace(shard=HERE,
                                            genesis=types.SimpleNamespace(num_shards=SHARDS))

    account_txs = NodeService.account_txs  # type: ignore[assignment]


@pytest.fixture(params=["sqlite", "memory"])
async def client(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[TestClient[Any, Any]]:
    store: Any = (await Store.open(tmp_path / "s.db") if request.param == "sqlite"
                  else MemoryStore())
    await store.initialize(b"g" * 32, [])
    commits, _, _ = _blocks()
    for commit in commits:
        await store.commit_block(commit)
    app = build_app(Service(store), body_bytes_max=1024, batch_txs_max=3)
    try:
        async with TestClient(TestServer(app)) as test_client:
            yield test_client
    finally:
        await store.close()


async def _page(client: TestClient[Any, Any], address: bytes, query: str = "") -> Any:
    response = await client.get(f"/v1/accounts/{address.hex()}/txs{query}")
    assert response.status == 200, await response.text()
    return await response.json()


async def test_sender_and_recipient_both_see_the_transfer_newest_first(
        client: TestClient[Any, Any]) -> None:
    _, hashes, origin = _blocks()
    sent = await _page(client, SENDER.public_key)
    assert [e["hash"] for e in sent["txs"]] == hashes[::-1]
    assert {e["role"] for e in sent["txs"]} == {"sender"}
    assert sent["next_before"] is None and sent["shard"] == HERE
    received = await _page(client, RECIPIENT)
    assert [e["hash"] for e in received["txs"]] == [origin, *hashes[::-1]]
    assert received["txs"][0] == {"hash": origin, "height": TRANSFERS + 1, "ordinal": 0,
                                  "role": "credit",
                                  "cursor": cursor_of(TRANSFERS + 1, 0)}
    assert {e["role"] for e in received["txs"][1:]} == {"recipient"}


async def test_pages_follow_the_before_cursor_without_gaps_or_repeats(
        client: TestClient[Any, Any]) -> None:
    _, hashes, _ = _blocks()
    seen: list[str] = []
    query = "?limit=3"
    pages = 0
    while True:
        page = await _page(client, SENDER.public_key, query)
        pages += 1
        assert len(page["txs"]) <= 3
        seen += [e["hash"] for e in page["txs"]]
        if page["next_before"] is None:
            break
        query = f"?limit=3&before={page['next_before']}"
    assert seen == hashes[::-1] and pages == 3
    older = await _page(client, SENDER.public_key, f"?before={cursor_of(3, 0)}")
    assert [e["height"] for e in older["txs"]] == [2, 1]


async def test_an_address_never_seen_has_an_empty_history(client: TestClient[Any, Any]) -> None:
    page = await _page(client, STRANGER)
    assert page == {"address": STRANGER.hex(), "shard": HERE, "txs": [], "next_before": None}


@pytest.mark.parametrize("query", [
    "?limit=0", f"?limit={ACCOUNT_TXS_PAGE_MAX + 1}", "?limit=99999999999999999999999",
    "?limit=-1", "?limit=1e3", "?before=-5", f"?before={2**63}", "?before=abc"])
async def test_unbounded_or_malformed_page_requests_are_refused(
        client: TestClient[Any, Any], query: str) -> None:
    response = await client.get(f"/v1/accounts/{RECIPIENT.hex()}/txs{query}")
    assert response.status == 400
    assert (await response.json())["error"] in ("out_of_range", "malformed")


async def test_an_address_of_another_shard_is_refused_wrong_shard(
        client: TestClient[Any, Any]) -> None:
    response = await client.get(f"/v1/accounts/{THEIRS[0].hex()}/txs")
    assert response.status == 400
    assert (await response.json())["error"] == "wrong_shard"
    response = await client.get("/v1/accounts/abcd/txs")
    assert response.status == 400
    assert (await response.json())["error"] == "malformed"
