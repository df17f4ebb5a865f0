"""GET /v1/lending/{address} when a market can no longer accrue: 409 with the reason
(the call that would touch it fails ``overflow``), never a 500."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import msgspec
from aiohttp.test_utils import TestClient, TestServer

from node.api import build_app
from node.service import NodeService
from scripts.cli.testnet.generate import TestnetSpec, genesis_document, node_entries
from sharding.genesis import load_genesis
from sharding.ledger import Ledger
from sharding.lending import get_market, put_market
from sharding.state import Overlay
from tests.node.test_api_http import RecordingService

WAD = 10**18


def _ledger_with_a_market_about_to_overflow() -> Ledger:
    spec = TestnetSpec(shards=2, validators=4, accounts=8)
    genesis = load_genesis(genesis_document(spec, node_entries(spec)))
    assert genesis.lending is not None
    ledger = Ledger(genesis, genesis.lending.shard)
    asset = genesis.lending.markets[0].asset
    market = get_market(ledger.state, asset)
    assert market is not None
    huge = msgspec.structs.replace(
        market, borrow_index=(2**255 - 2**200).to_bytes(32, "big"), base_rate=WAD // 100)
    overlay = Overlay(ledger.state)
    put_market(overlay, huge)
    ledger.state.apply_writes(overlay.writes)
    return ledger


class LendingService(RecordingService):
    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger

    def lending(self, address: bytes) -> dict[str, Any]:
        # The production method, over a real ledger.
        return NodeService.lending(cast(NodeService, SimpleNamespace(ledger=self.ledger)),
                                   address)


async def test_a_market_that_can_no_longer_accrue_answers_409_with_the_reason() -> None:
    ledger = _ledger_with_a_market_about_to_overflow()
    app = build_app(cast(Any, LendingService(ledger)), body_bytes_max=1024, batch_txs_max=3)
    async with TestClient(TestServer(app)) as client:
        answer = await client.get(f"/v1/lending/{bytes(32).hex()}")
        body = await answer.json()
    assert answer.status == 409
    assert body["error"] == "overflow"
