"""The node's HTTP API under ``/v1`` (aiohttp), plus ``GET /metrics``.

This module owns HTTP only: parsing, body limits, status codes and JSON error
bodies ``{"error": reason, "detail": text}``. What the answers mean comes from
a ``NodeService`` (the node wiring implements it); nothing here knows PBFT.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from aiohttp import web

from consensus.kernel.errors import ShardnetError

MSGPACK = "application/msgpack"
RETRY_AFTER_S = "1"
SHARD_ID_MAX = 2**16 - 1
SEQ_MAX = 2**63 - 1  # SQLite integers are signed 64-bit


@dataclass(frozen=True, slots=True)
class SubmitResult:
    tx_hash: bytes | None
    accepted: bool
    error: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "hash": self.tx_hash.hex() if self.tx_hash else None,
            "accepted": self.accepted,
        }
        if not self.accepted:
            body["error"] = self.error
            body["detail"] = self.detail
        return body


class ApiError(ShardnetError):
    """An error the API reports with an HTTP status."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason, reason=reason)
        self.status = status


class NodeService(Protocol):
    """What the API needs from the node. Values returned are JSON-ready."""

    async def submit_txs(self, raw_txs: list[bytes]) -> list[SubmitResult]: ...
    async def tx_status(self, tx_hash: bytes) -> dict[str, Any] | None: ...
    def account(self, address: bytes) -> dict[str, Any]: ...
    async def block(self, height: int | None) -> dict[str, Any] | None: ...
    def status(self) -> dict[str, Any]: ...
    def network(self) -> dict[str, Any]: ...
    def subscribe_blocks(self) -> AsyncIterator[dict[str, Any]]: ...
    def metrics_text(self) -> bytes: ...
    async def audit(self) -> dict[str, Any]: ...
    async def receipts(self, dst_shard: int, first_seq: int, last_seq: int
                       ) -> dict[str, Any]: ...


def _error(status: int, reason: str, detail: str, headers: dict[str, str] | None = None
           ) -> web.Response:
    return web.json_response({"error": reason, "detail": detail}, status=status,
                             headers=headers)


@web.middleware
async def _errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.reason, exc.detail)
    except web.HTTPRequestEntityTooLarge as exc:
        return _error(413, "oversized", exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.reason.lower().replace(" ", "_")
        return _error(exc.status, reason, exc.text or exc.reason)


def _parse_hex(text: str, what: str, length: int | None = None) -> bytes:
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise ApiError(400, "malformed", f"{what} is not hex") from None
    if length is not None and len(raw) != length:
        raise ApiError(400, "malformed", f"{what} must be {length} bytes, got {len(raw)}")
    return raw


async def _read_raw_txs(request: web.Request, batch_max: int) -> list[bytes]:
    body = await request.read()
    if not body:
        raise ApiError(400, "malformed", "empty body")
    if request.content_type == MSGPACK:
        # One encoded transaction, or an array of encoded transactions (bin items).
        try:
            outer = msgspec.msgpack.decode(body)
        except msgspec.DecodeError as exc:
            raise ApiError(400, "malformed", f"body is not msgpack: {exc}") from None
        if isinstance(outer, list) and outer and all(isinstance(x, bytes) for x in outer):
            raw_txs: list[bytes] = outer
        else:
            raw_txs = [body]
    else:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "malformed", f"body is not JSON: {exc}") from None
        if isinstance(doc, dict) and isinstance(doc.get("tx"), str):
            items = [doc["tx"]]
        elif isinstance(doc, dict) and isinstance(doc.get("txs"), list):
            items = doc["txs"]
        else:
            raise ApiError(400, "malformed", 'expected {"tx": hex} or {"txs": [hex, ...]}')
        if not all(isinstance(item, str) for item in items):
            raise ApiError(400, "malformed", "every transaction must be a hex string")
        raw_txs = [_parse_hex(item, "transaction") for item in items]
    if len(raw_txs) > batch_max:
        raise ApiError(413, "oversized", f"{len(raw_txs)} transactions > batch limit {batch_max}")
    return raw_txs


RequestCounter = Callable[[str, int], None]  # (route template, status)


def _counting(count: RequestCounter) -> Any:
    @web.middleware
    async def count_requests(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        route = request.match_info.route.resource
        count(route.canonical if route is not None else "unmatched", response.status)
        return response

    return count_requests


def build_app(service: NodeService, *, body_bytes_max: int, batch_txs_max: int,
              count_request: RequestCounter | None = None) -> web.Application:
    # The counter sits outside the error middleware, so it sees the final status.
    middlewares = [_errors_as_json] if count_request is None else [
        _counting(count_request), _errors_as_json]
    app = web.Application(client_max_size=body_bytes_max, middlewares=middlewares)
    routes = web.RouteTableDef()

    @routes.post("/v1/txs")
    async def submit(request: web.Request) -> web.Response:
        raw_txs = await _read_raw_txs(request, batch_txs_max)
        results = await service.submit_txs(raw_txs)
        payload = [result.to_json() for result in results]
        full = any(r.error in ("mempool_full", "sender_full") for r in results)
        headers = {"Retry-After": RETRY_AFTER_S} if full else None
        if len(results) == 1:
            (result,) = results
            if result.accepted:
                return web.json_response(payload[0], status=202)
            status = 503 if full else 400
            return web.json_response({**payload[0]}, status=status, headers=headers)
        accepted = sum(r.accepted for r in results)
        body = {"accepted": accepted, "rejected": len(results) - accepted, "results": payload}
        return web.json_response(body, status=503 if full else 200, headers=headers)

    @routes.get("/v1/txs/{tx_hash}")
    async def tx(request: web.Request) -> web.Response:
        tx_hash = _parse_hex(request.match_info["tx_hash"], "transaction hash", 32)
        found = await service.tx_status(tx_hash)
        if found is None:
            raise ApiError(404, "not_found", "unknown transaction")
        return web.json_response(found)

    @routes.get("/v1/accounts/{address}")
    async def account(request: web.Request) -> web.Response:
        address = _parse_hex(request.match_info["address"], "address", 32)
        return web.json_response(service.account(address))

    @routes.get("/v1/blocks/latest")
    async def latest(request: web.Request) -> web.Response:
        found = await service.block(None)
        if found is None:
            raise ApiError(404, "not_found", "no block committed yet")
        return web.json_response(found)

    @routes.get("/v1/blocks/{height}")
    async def block(request: web.Request) -> web.Response:
        text = request.match_info["height"]
        if not text.isdigit():
            raise ApiError(400, "malformed", "height must be a non-negative integer")
        found = await service.block(int(text))
        if found is None:
            raise ApiError(404, "not_found", f"no block at height {text}")
        return web.json_response(found)

    @routes.get("/v1/status")
    async def status(request: web.Request) -> web.Response:
        return web.json_response(service.status())

    @routes.get("/v1/network")
    async def network(request: web.Request) -> web.Response:
        return web.json_response(service.network())

    @routes.get("/v1/events")
    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            async for event in service.subscribe_blocks():
                data = json.dumps(event, separators=(",", ":"))
                await response.write(f"event: block\ndata: {data}\n\n".encode())
        except ConnectionResetError:
            pass
        return response

    @routes.get("/v1/audit")
    async def audit(request: web.Request) -> web.Response:
        return web.json_response(await service.audit())

    @routes.get("/v1/receipts")
    async def receipts(request: web.Request) -> web.Response:
        try:
            dst = int(request.query["dst"])
            first = int(request.query.get("from", "1"))
            last = int(request.query.get("to", str(first + 999)))
        except (KeyError, ValueError):
            raise ApiError(400, "malformed", "expected ?dst=SHARD&from=SEQ&to=SEQ") from None
        if not 0 <= dst <= SHARD_ID_MAX or first < 1 or last < first or last > SEQ_MAX:
            raise ApiError(400, "malformed",
                           f"need 0 <= dst <= {SHARD_ID_MAX} and 1 <= from <= to <= {SEQ_MAX}")
        return web.json_response(await service.receipts(dst, first, last))

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=service.metrics_text(),
                            headers={"Content-Type": "text/plain; version=0.0.4"})

    app.add_routes(routes)
    return app
