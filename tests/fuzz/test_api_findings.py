"""Regression tests for what ``shardnet fuzz --target api`` found in the node's API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from node.api import MSGPACK, build_app
from tests.node.test_api_http import RecordingService


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(cast(Any, RecordingService()), body_bytes_max=4096, batch_txs_max=3)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@pytest.mark.parametrize("body", [
    bytes.fromhex("a3000080"),  # the soak's finding: a fixstr of 3 bytes, not UTF-8
    b"\x92\xc4\x01\x01\xa1\xff",  # an array: a bin, then a str that is not UTF-8
    b"\x81\xa1\xfe\x01",  # a map keyed by a str that is not UTF-8
])
async def test_msgpack_body_with_a_string_not_utf8_is_malformed_not_500(
        client: TestClient[Any, Any], body: bytes) -> None:
    """msgspec raises UnicodeDecodeError (not its DecodeError) for a msgpack str that
    is not UTF-8: it escaped the body parser and was answered 500 internal, logged as
    api.internal_error (found by the API soak, request 12,996)."""
    with capture_logs() as logs:
        response = await client.post("/v1/txs", data=body, headers={"Content-Type": MSGPACK})
    assert response.status == 400
    answer = await response.json()
    assert answer["error"] == "malformed"
    assert answer["detail"].startswith("body is not msgpack: ")
    assert not [e for e in logs if e["event"] == "api.internal_error"]
