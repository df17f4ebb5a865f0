"""The OpenAPI document (node/openapi.py, served at GET /v1/openapi.json) stays true:
every route of the app is in it and nothing else, its parameters are the names the
handlers read (required where the handler requires them), its bounds are the parsers'
bounds, and it validates as OpenAPI 3."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import jsonschema_rs
import msgspec
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from node import openapi
from node.api import MSGPACK, SEQ_MAX, SHARD_ID_MAX, build_app
from tests.node.test_api_http import RecordingService

BODY_BYTES_MAX = 4096
BATCH_TXS_MAX = 3
PLACEHOLDER = re.compile(r"\{(\w+)\}")
HASH = "11" * 32


class Service(RecordingService):
    async def receipts(self, dst_shard: int, first_seq: int, last_seq: int
                       ) -> dict[str, Any]:
        return {"dst_shard": dst_shard, "receipts": []}  # whatever the range's length


def _app() -> web.Application:
    return build_app(cast(Any, Service()), body_bytes_max=BODY_BYTES_MAX,
                     batch_txs_max=BATCH_TXS_MAX)


def _document() -> dict[str, Any]:
    return openapi.document(body_bytes_max=BODY_BYTES_MAX, batch_txs_max=BATCH_TXS_MAX,
                            seq_max=SEQ_MAX, shard_id_max=SHARD_ID_MAX, connections_max=1024,
                            events_subscribers_max=64)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def _params(operation: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in operation.get("parameters", []) if p["in"] == where}


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(_app())) as test_client:
        yield test_client


def test_every_route_is_documented_and_every_operation_is_a_route() -> None:
    routes = {(r.method, r.resource.canonical) for r in _app().router.routes()
              if r.resource is not None}
    documented = {(method, path) for method, path, _ in _operations(_document())}
    assert routes == documented
    assert ("GET", "/v1/openapi.json") in routes and ("POST", "/v1/txs") in routes


def test_path_parameters_are_the_route_placeholders_and_required() -> None:
    for method, path, operation in _operations(_document()):
        params = _params(operation, "path")
        assert set(params) == set(PLACEHOLDER.findall(path)), (method, path)
        assert all(p["required"] is True for p in params.values())


class RecordingQuery(dict[str, str]):
    """A request's query that notes each name a handler looks up."""

    read: set[str] = set()

    def __contains__(self, name: object) -> bool:
        RecordingQuery.read.add(str(name))
        return super().__contains__(name)

    def __getitem__(self, name: str) -> str:
        RecordingQuery.read.add(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        RecordingQuery.read.add(name)
        return super().get(name, default)


def _valid_path(path: str, operation: dict[str, Any]) -> str:
    values = {"tx_hash": HASH, "address": HASH, "height": "3"}
    for name in _params(operation, "path"):
        path = path.replace("{" + name + "}", values[name])
    return path


async def test_query_parameters_are_the_names_the_handlers_read(
        client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web.Request, "query",
                        property(lambda request: RecordingQuery(request.rel_url.query)))
    for method, path, operation in _operations(_document()):
        if method != "GET" or path == "/v1/events":
            continue
        documented = _params(operation, "query")
        RecordingQuery.read = set()
        query = {name: "1" for name in documented}
        response = await client.get(_valid_path(path, operation), params=query)
        assert response.status == 200, (path, await response.text())
        assert RecordingQuery.read == set(documented), path
        for name, param in documented.items():  # each required one, left out: refused
            without = {k: v for k, v in query.items() if k != name}
            response = await client.get(_valid_path(path, operation), params=without)
            if param["required"]:
                assert response.status == 400, (path, name)
                assert (await response.json())["error"] == "malformed"
            else:
                assert response.status == 200, (path, name, await response.text())


def _integer_params() -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    for method, path, operation in _operations(_document()):
        if method != "GET":
            continue
        for param in operation.get("parameters", []):
            if param["schema"].get("type") == "integer":
                yield path, param["in"], param, operation


def _request_with(path: str, where: str, param: dict[str, Any], operation: dict[str, Any],
                  value: str) -> tuple[str, dict[str, str]]:
    query = {name: "1" for name, p in _params(operation, "query").items() if p["required"]}
    values = {"tx_hash": HASH, "address": HASH, "height": "3"}
    if where == "path":
        values[param["name"]] = value
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], path), query
    path = PLACEHOLDER.sub(lambda m: values[m.group(1)], path)
    return path, {**query, param["name"]: value}


async def test_integer_bounds_are_the_parsers_bounds(client: TestClient[Any, Any]) -> None:
    checked = set()
    for path, where, param, operation in _integer_params():
        schema = param["schema"]
        for value, refused in ((schema["maximum"], False), (schema["maximum"] + 1, True),
                               (schema["minimum"], False), (schema["minimum"] - 1, True)):
            url, query = _request_with(path, where, param, operation, str(value))
            response = await client.get(url, params=query)
            if refused:
                assert response.status == 400, (path, param["name"], value)
                body = await response.json()
                assert body["error"] in ("out_of_range", "malformed"), body
            else:
                assert response.status in (200, 404), (path, param["name"], value)
        checked.add(param["name"])
    assert checked == {"height", "dst", "from", "to", "limit", "before"}
    assert _document()["paths"]["/v1/blocks/{height}"]["get"]["parameters"][0]["schema"][
        "maximum"] == 2**63 - 1


async def test_hex_parameters_follow_their_pattern(client: TestClient[Any, Any]) -> None:
    for method, path, operation in _operations(_document()):
        for name, param in _params(operation, "path").items():
            pattern = param["schema"].get("pattern")
            if method != "GET" or pattern is None:
                continue
            for value in (HASH, "0x" + HASH, "00 " * 32, "0X" + HASH, HASH[:-2], HASH + "1"):
                matches = re.search(pattern, value) is not None
                response = await client.get(path.replace("{" + name + "}", value))
                assert (response.status != 400) == matches, (path, value, response.status)


async def test_hash_with_whitespace_between_bytes_is_malformed(
        client: TestClient[Any, Any]) -> None:
    """bytes.fromhex skips whitespace: "00 11 ..." was read as a 32-byte hash, and a
    transaction "01 ab" as hex, against the documented pattern (found by the check
    of the OpenAPI patterns against the parsers)."""
    for url in ("/v1/txs/" + "11%20" * 32, "/v1/accounts/" + "11%09" * 32):
        response = await client.get(URL(url, encoded=True))
        assert response.status == 400
        assert await response.json() == {"error": "malformed",
                                         "detail": response_detail(url)}
    response = await client.post("/v1/txs", json={"tx": "01 ab"})
    assert response.status == 400
    assert (await response.json())["detail"] == "transaction is not hex"


def response_detail(url: str) -> str:
    return ("transaction hash" if url.startswith("/v1/txs/") else "address") + " is not hex"


async def test_wrong_method_answers_405_with_allow(client: TestClient[Any, Any]) -> None:
    """RFC 9110: a 405 names the methods the resource has; the JSON error middleware
    used to drop aiohttp's Allow header."""
    response = await client.delete("/v1/status")
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert (await response.json())["error"] == "method_not_allowed"
    response = await client.get("/v1/txs")
    assert (response.status, response.headers["Allow"]) == (405, "POST")


async def test_submit_takes_the_documented_media_types(client: TestClient[Any, Any]) -> None:
    body = _document()["paths"]["/v1/txs"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/json", MSGPACK}
    response = await client.post("/v1/txs", json={"tx": "01ab"})
    assert response.status == 202
    response = await client.post("/v1/txs", data=msgspec.msgpack.encode([b"\x01a", b"\x01b"]),
                                 headers={"Content-Type": MSGPACK})
    assert response.status == 200
    too_many = {"txs": ["01"] * (BATCH_TXS_MAX + 1)}
    txs_schema = body["content"]["application/json"]["schema"]["anyOf"][1]
    assert txs_schema["properties"]["txs"]["maxItems"] == BATCH_TXS_MAX
    assert (await client.post("/v1/txs", json=too_many)).status == 413


async def test_the_document_is_served(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == _document()


def test_the_document_validates_as_openapi_3() -> None:
    document = _document()
    assert document["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(document).validate()
    broken = _document()
    broken["paths"]["/v1/receipts"]["get"]["parameters"][0]["in"] = "body"  # not in 3.x
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_operation_documents_the_typed_error_and_the_503() -> None:
    for method, path, operation in _operations(_document()):
        responses = operation["responses"]
        assert "Retry-After" in responses["503"]["headers"], (method, path)
        for status, response in responses.items():
            if method != "HEAD" and status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                refs = [schema.get("$ref")] + [s["$ref"] for s in schema.get("anyOf", [])]
                assert "#/components/schemas/Error" in refs, (method, path, status)
