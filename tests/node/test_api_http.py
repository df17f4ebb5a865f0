"""HTTP behaviour of the API layer: limits, status codes, JSON error bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.api import MSGPACK, build_app
from node.errors import SubmitResult


class RecordingService:
    """Accepts transactions that start with 0x01, refuses 0x02 as full, rejects the rest."""

    def __init__(self) -> None:
        self.submitted: list[bytes] = []

    async def submit_txs(self, raw_txs: list[bytes]) -> list[SubmitResult]:
        self.submitted.extend(raw_txs)
        results = []
        for raw in raw_txs:
            if raw[:1] == b"\x01":
                results.append(SubmitResult(b"\x11" * 32, True))
            elif raw[:1] == b"\x02":
                results.append(SubmitResult(b"\x22" * 32, False, "mempool_full", "full"))
            else:
                results.append(SubmitResult(None, False, "malformed", "bad tx"))
        return results

    async def tx_status(self, tx_hash: bytes) -> dict[str, Any] | None:
        return {"hash": tx_hash.hex(), "status": "pending"} if tx_hash[0] == 0x11 else None

    def account(self, address: bytes) -> dict[str, Any]:
        return {"address": address.hex(), "nonce": 0, "balances": {}}

    async def account_txs(self, address: bytes, before: int, limit: int) -> dict[str, Any]:
        return {"address": address.hex(), "shard": 0, "txs": [], "next_before": None}

    def lending(self, address: bytes) -> dict[str, Any]:
        return {"address": address.hex(), "positions": []}

    async def block(self, height: int | None) -> dict[str, Any] | None:
        return {"height": 3} if height in (None, 3) else None

    def status(self) -> dict[str, Any]:
        return {"height": 3}

    def network(self) -> dict[str, Any]:
        return {"nodes": []}

    def health(self) -> dict[str, Any]:
        return {"ready": True, "reasons": [], "node": "shard0-node0", "shard": 0,
                "height": 3, "shard_peers": 3, "shard_peers_needed": 2,
                "pending_ready_ms": None, "since_commit_ms": 10}

    async def subscribe_blocks(self) -> AsyncIterator[dict[str, Any]]:
        for height in (1, 2):
            yield {"height": height}

    async def audit(self) -> dict[str, Any]:
        return {"shard": 0}

    async def receipts(self, dst_shard: int, first_seq: int, last_seq: int
                       ) -> dict[str, Any]:
        return {"receipts": [{"seq": seq} for seq in range(first_seq, last_seq + 1)]}

    def metrics_text(self) -> bytes:
        return b"shardnet_height 3.0\n"


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(RecordingService(), body_bytes_max=1024, batch_txs_max=3)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_single_json_tx_accepted_with_202(client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/txs", json={"tx": "01ab"})
    assert response.status == 202
    assert (await response.json())["accepted"] is True


async def test_msgpack_batch_returns_per_tx_results(client: TestClient[Any, Any]) -> None:
    body = msgspec.msgpack.encode([b"\x01a", b"\x03b"])
    response = await client.post("/v1/txs", data=body, headers={"Content-Type": MSGPACK})
    assert response.status == 200
    doc = await response.json()
    assert (doc["accepted"], doc["rejected"]) == (1, 1)
    assert doc["results"][1]["error"] == "malformed"


async def test_full_mempool_answers_503_with_retry_after(client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/txs", json={"tx": "02"})
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"] == "mempool_full"


async def test_rejects_malformed_json_body(client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/txs", data=b"{not json")
    assert response.status == 400
    assert (await response.json())["error"] == "malformed"


async def test_rejects_non_hex_tx(client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/txs", json={"tx": "zz"})
    assert response.status == 400
    assert "not hex" in (await response.json())["detail"]


async def test_rejects_oversized_body_with_413_json(client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/txs", json={"tx": "01" * 2000})
    assert response.status == 413
    assert (await response.json())["error"] == "oversized"


async def test_rejects_batch_over_limit(client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/txs", json={"txs": ["01"] * 4})
    assert response.status == 413


async def test_unknown_tx_is_404_json(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/txs/" + "00" * 32)
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


async def test_bad_address_length_is_400(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/accounts/abcd")
    assert response.status == 400


async def test_unknown_route_is_json_404(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/nothing")
    assert response.status == 404
    assert json.loads(await response.text())["error"] == "not_found"


async def test_block_height_must_be_integer(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/v1/blocks/x")).status == 400
    assert (await client.get("/v1/blocks/3")).status == 200
    assert (await client.get("/v1/blocks/9")).status == 404


async def test_events_stream_committed_blocks(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/events")
    text = await response.text()
    assert text.count("event: block") == 2 and '"height":2' in text


async def test_metrics_served_as_prometheus_text(client: TestClient[Any, Any]) -> None:
    response = await client.get("/metrics")
    assert response.status == 200 and "shardnet_height" in await response.text()


async def test_receipts_range_is_validated(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/v1/receipts?dst=1&from=0")).status == 400
    assert (await client.get("/v1/receipts?dst=x")).status == 400
    answer = await client.get("/v1/receipts?dst=1&from=2&to=3")
    assert [r["seq"] for r in (await answer.json())["receipts"]] == [2, 3]
    assert (await client.get(f"/v1/receipts?dst=1&from=1&to={2**63}")).status == 400
    assert (await client.get("/v1/receipts?dst=70000")).status == 400


async def test_every_request_is_counted_by_route_template_and_final_status() -> None:
    counted: list[tuple[str, int]] = []
    app = build_app(RecordingService(), body_bytes_max=1024, batch_txs_max=3,
                    count_request=lambda route, status: counted.append((route, status)))
    async with TestClient(TestServer(app)) as test_client:
        assert (await test_client.post("/v1/txs", json={"tx": "01ab"})).status == 202
        assert (await test_client.post("/v1/txs", data=b"{")).status == 400
        assert (await test_client.get("/v1/txs/zz")).status == 400
        assert (await test_client.get("/nowhere")).status == 404
    assert counted == [("/v1/txs", 202), ("/v1/txs", 400), ("/v1/txs/{tx_hash}", 400),
                       ("unmatched", 404)]


async def refusal(response: Any) -> dict[str, Any]:
    """The JSON body of a 400 (never a 500, never a non-JSON body)."""
    assert response.status == 400
    assert response.content_type == "application/json"
    doc: dict[str, Any] = await response.json()
    return doc


@pytest.mark.parametrize("height", ["²", "١٢", "1_0", "+1", "-1", " 1", "0x10"])
async def test_superscript_digit_height_is_400(client: TestClient[Any, Any],
                                               height: str) -> None:
    doc = await refusal(await client.get(f"/v1/blocks/{height}"))
    assert doc["error"] == "malformed" and "height" in doc["detail"]


@pytest.mark.parametrize("height", [str(2**63), "99999999999999999999", "9" * 5000])
async def test_height_beyond_u63_is_400(client: TestClient[Any, Any], height: str) -> None:
    doc = await refusal(await client.get(f"/v1/blocks/{height}"))
    assert doc["error"] == "out_of_range" and "height" in doc["detail"]
    assert (await client.get(f"/v1/blocks/{2**63 - 1}")).status == 404


@pytest.mark.parametrize(("query", "name"), [
    (f"dst={2**63}", "dst"), (f"dst=1&to={2**63}", "to"), (f"dst=1&from={2**64}", "from"),
    ("dst=99999999999999999999", "dst"), ("dst=1&from=3&to=2", "to"),
])
async def test_receipts_range_beyond_u63_is_400(client: TestClient[Any, Any], query: str,
                                                name: str) -> None:
    doc = await refusal(await client.get(f"/v1/receipts?{query}"))
    assert doc["error"] == "out_of_range" and doc["detail"].startswith(f"{name} ")


@pytest.mark.parametrize("query", ["dst=²", "dst=1&from=¹", "dst=1&to=1_0", "dst=1&to= 2"])
async def test_receipts_non_ascii_number_is_400(client: TestClient[Any, Any],
                                                query: str) -> None:
    doc = await refusal(await client.get(f"/v1/receipts?{query}"))
    assert doc["error"] == "malformed"


async def test_receipts_from_at_the_top_stays_in_range(client: TestClient[Any, Any]) -> None:
    answer = await client.get(f"/v1/receipts?dst=1&from={2**63 - 1}")
    assert [r["seq"] for r in (await answer.json())["receipts"]] == [2**63 - 1]


DEPTH = 50_000


@pytest.fixture
async def roomy_client() -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(RecordingService(), body_bytes_max=1 << 20, batch_txs_max=3)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_deeply_nested_json_body_is_400(roomy_client: TestClient[Any, Any]) -> None:
    body = b"[" * DEPTH + b"]" * DEPTH
    doc = await refusal(await roomy_client.post("/v1/txs", data=body))
    assert doc["error"] == "too_deep" and "nested" in doc["detail"]


async def test_deeply_nested_msgpack_body_is_400(roomy_client: TestClient[Any, Any]) -> None:
    body = b"\x91" * DEPTH + b"\xc0"  # [[[...[nil]...]]]
    response = await roomy_client.post("/v1/txs", data=body, headers={"Content-Type": MSGPACK})
    doc = await refusal(response)
    assert doc["error"] == "too_deep" and "nested" in doc["detail"]
