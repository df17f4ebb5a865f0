"""Issue 14 finding 4 against a real node process: every request that used to
answer 500 now gets a 4xx JSON refusal, and the node keeps serving."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scripts.cli.testnet.processes import wait_healthy
from tests.support.node import local_testnet

pytestmark = pytest.mark.integration

DEPTH = 50_000
U63 = 2**63
FINDING_4 = [  # (what, method, path, body, content type)
    ("superscript height", "GET", "/v1/blocks/%C2%B2", None, None),  # "²".isdigit()
    ("20-digit height", "GET", "/v1/blocks/99999999999999999999", None, None),
    ("dst 2^63", "GET", f"/v1/receipts?dst={U63}", None, None),
    ("to 2^63", "GET", f"/v1/receipts?dst=0&to={U63}", None, None),
    ("to 2^64", "GET", f"/v1/receipts?dst=0&from=1&to={2**64}", None, None),
    ("deep json", "POST", "/v1/txs", b"[" * DEPTH + b"]" * DEPTH, "application/json"),
    ("deep msgpack", "POST", "/v1/txs", b"\x91" * DEPTH + b"\xc0", "application/msgpack"),
]


def ask(api_url: str, method: str, path: str, body: bytes | None,
        content_type: str | None) -> tuple[int, str, dict[str, object]]:
    address = urlsplit(api_url)
    assert address.hostname is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return (response.status, response.getheader("Content-Type", ""),
                json.loads(response.read()))
    finally:
        connection.close()


def test_live_node_answers_4xx_to_every_finding_4_request(tmp_path: Path) -> None:
    with local_testnet(tmp_path, start_shards=()) as net:  # stops every node after
        node = net.shard_nodes(0)[0]
        net.start(node.name)
        assert wait_healthy([node], 60) == [], net.log_text(node.name)[-3000:]
        answers = {what: ask(node.api_url, method, path, body, content_type)
                   for what, method, path, body, content_type in FINDING_4}
        for what, (status, content_type, doc) in answers.items():
            assert 400 <= status < 500, (what, status, doc)
            assert content_type.startswith("application/json"), what
            assert doc["error"] in ("malformed", "out_of_range", "too_deep"), (what, doc)
        assert answers["deep json"][2]["error"] == "too_deep"
        assert answers["deep msgpack"][2]["error"] == "too_deep"
        assert net.status(node.name)["node"] == node.name  # still serving
        assert "api.internal_error" not in net.log_text(node.name)
