"""The node's HTTP API under ``/v1`` (aiohttp), plus ``GET /metrics``.

This module owns HTTP only: parsing, body limits, status codes and JSON error
bodies ``{"error": reason, "detail": text}``. What the answers mean comes from
a ``NodeServiceAPI`` (``node.service.NodeService`` implements it); nothing here knows PBFT.

Limits (issue 14 findings 4 and 7): requests in progress at once (``connections_max``)
and open ``/v1/events`` streams (``events_subscribers_max``) beyond their cap are
answered 503 ``too_many_connections`` / ``too_many_subscribers`` with ``Retry-After``,
and the connection is closed. Anything a handler raises that is not a refusal is a
bug: the last-resort middleware logs ``api.internal_error`` with an error id and the
traceback and answers 500 ``{"error": "internal", "error_id": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import msgspec
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from node import defaults, openapi
from node.errors import ApiError, SubmitResult
from node.store.accounts import ACCOUNT_TXS_PAGE_MAX, CURSOR_MAX

MSGPACK = "application/msgpack"
RETRY_AFTER_S = "1"
EVENTS_HEARTBEAT_S = 15.0  # an SSE comment on a quiet stream: finds closed connections
EVENTS_WRITE_TIMEOUT_S = 30.0  # a subscriber whose socket takes nothing for this long is cut
LOGGED_PATH_CHARS_MAX = 300
SHARD_ID_MAX = 2**16 - 1
SEQ_MAX = 2**63 - 1  # SQLite integers are signed 64-bit
ACCOUNT_TXS_LIMIT_DEFAULT = 100  # entries of /v1/accounts/{address}/txs without ?limit
_ASCII_DECIMAL = re.compile(r"[0-9]+")  # isdigit/int() also take other scripts, "1_0", " 1"
_HEX = re.compile(r"(?:0x)?[0-9a-fA-F]*")  # bytes.fromhex also skips whitespace: "00 01"


class BlockEvents(Protocol):
    """A subscription to committed-block events (``node.events.Subscription``)."""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...
    async def aclose(self) -> None: ...


class NodeServiceAPI(Protocol):
    """What the API needs from the node (``node.service.NodeService``). Values
    returned are JSON-ready."""

    async def submit_txs(self, raw_txs: list[bytes]) -> list[SubmitResult]: ...
    async def tx_status(self, tx_hash: bytes) -> dict[str, Any] | None: ...
    def account(self, address: bytes) -> dict[str, Any]: ...
    def lending(self, address: bytes) -> dict[str, Any]: ...
    async def account_txs(self, address: bytes, before: int, limit: int
                          ) -> dict[str, Any]: ...
    async def block(self, height: int | None) -> dict[str, Any] | None: ...
    def status(self) -> dict[str, Any]: ...
    def health(self) -> dict[str, Any]: ...
    def network(self) -> dict[str, Any]: ...
    def subscribe_blocks(self) -> BlockEvents: ...
    def metrics_text(self) -> bytes: ...
    async def audit(self) -> dict[str, Any]: ...
    async def receipts(self, dst_shard: int, first_seq: int, last_seq: int
                       ) -> dict[str, Any]: ...


def _error(status: int, reason: str, detail: str, headers: dict[str, str] | None = None
           ) -> web.Response:
    return web.json_response({"error": reason, "detail": detail}, status=status,
                             headers=headers)


def _busy(reason: str, detail: str) -> web.Response:
    """503 for a full server-side cap: retry later, on a new connection."""
    response = _error(503, reason, detail, {"Retry-After": RETRY_AFTER_S})
    response.force_close()  # the point of the cap is to free this socket
    return response


def _internal_error(log: Any, request: web.Request) -> str:
    """Log the exception being handled as ``api.internal_error``; return its id."""
    error_id = secrets.token_hex(8)
    route = request.match_info.route.resource
    log.error("api.internal_error", error_id=error_id, method=request.method,
              route=route.canonical if route is not None else "unmatched",
              path=request.path[:LOGGED_PATH_CHARS_MAX], exc_info=True)
    return error_id


def _errors_as_json(log: Any) -> Middleware:
    @web.middleware
    async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
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
            allow = exc.headers.get("Allow")  # a 405 must say which methods are (RFC 9110)
            return _error(exc.status, reason, exc.text or exc.reason,
                          {"Allow": allow} if allow is not None else None)
        except web.RequestPayloadError as exc:  # e.g. a gzip Content-Encoding that is not
            return _error(400, "malformed", "request body: " + " ".join(str(exc).split()))
        except HttpProcessingError as exc:  # the body broke its framing
            return _error(400, "malformed", f"request body: {exc.message}")
        except ConnectionError:  # the client left mid-request: nothing of ours broke
            return _error(400, "disconnected", "the client closed the connection")
        except Exception:
            # Last resort: a bug of ours, never the client's doing. The id joins the
            # answer to the logged traceback; the answer itself says nothing more.
            error_id = _internal_error(log, request)
            return web.json_response({"error": "internal", "error_id": error_id,
                                      "detail": "internal error; the node logged it"},
                                     status=500)

    return errors_as_json


def _capping(connections_max: int) -> Middleware:
    """At most ``connections_max`` requests in progress (each open event stream, each
    body still uploading is one): a client cannot hold an unbounded number of sockets
    and handlers. Idle keep-alive connections hold no slot."""
    in_progress = 0

    @web.middleware
    async def cap_connections(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_progress
        if in_progress >= connections_max:
            return _busy("too_many_connections",
                         f"{connections_max} requests in progress (the limit); retry later")
        in_progress += 1
        try:
            return await handler(request)
        finally:
            in_progress -= 1

    return cap_connections


def _parse_hex(text: str, what: str, length: int | None = None) -> bytes:
    if _HEX.fullmatch(text) is None:
        raise ApiError(400, "malformed", f"{what} is not hex")
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:  # an odd number of digits
        raise ApiError(400, "malformed", f"{what} is not hex") from None
    if length is not None and len(raw) != length:
        raise ApiError(400, "malformed", f"{what} must be {length} bytes, got {len(raw)}")
    return raw


def _parse_uint(text: str, what: str, lowest: int, highest: int) -> int:
    """``text`` as a strict ASCII decimal in ``lowest..highest``; a 400 naming ``what``
    otherwise (``malformed`` if not digits, ``out_of_range`` if outside the bounds)."""
    if _ASCII_DECIMAL.fullmatch(text) is None:
        raise ApiError(400, "malformed", f"{what} must be a decimal integer (ASCII digits)")
    # Compare lengths first: no int() of a huge digit string.
    if len(text.lstrip("0")) > len(str(highest)) or not lowest <= int(text) <= highest:
        raise ApiError(400, "out_of_range", f"{what} must be in {lowest}..{highest}")
    return int(text)


def _too_deep() -> ApiError:
    return ApiError(400, "too_deep", "body is nested too deeply")


async def _read_raw_txs(request: web.Request, batch_max: int) -> list[bytes]:
    body = await request.read()
    if not body:
        raise ApiError(400, "malformed", "empty body")
    if request.content_type == MSGPACK:
        # One encoded transaction, or an array of encoded transactions (bin items).
        try:
            outer = msgspec.msgpack.decode(body)
        except (msgspec.DecodeError, ValueError) as exc:  # a str not UTF-8: UnicodeDecodeError
            raise ApiError(400, "malformed", f"body is not msgpack: {exc}") from None
        except RecursionError:
            raise _too_deep() from None
        if isinstance(outer, list) and outer and all(isinstance(x, bytes) for x in outer):
            raw_txs: list[bytes] = outer
        else:
            raw_txs = [body]
    else:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "malformed", f"body is not JSON: {exc}") from None
        except RecursionError:
            raise _too_deep() from None
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


def _counting(count: RequestCounter) -> Middleware:
    @web.middleware
    async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        route = request.match_info.route.resource
        count(route.canonical if route is not None else "unmatched", response.status)
        return response

    return count_requests


def _submit_response(results: list[SubmitResult]) -> web.Response:
    """202/400 for one transaction, 200 with every result for several; 503 with
    ``Retry-After`` as soon as one was refused for a full pool."""
    payload = [result.to_json() for result in results]
    full = any(r.error in ("mempool_full", "sender_full") for r in results)
    headers = {"Retry-After": RETRY_AFTER_S} if full else None
    if len(results) == 1:
        (result,) = results
        if result.accepted:
            return web.json_response(payload[0], status=202)
        return web.json_response(payload[0], status=503 if full else 400, headers=headers)
    accepted = sum(r.accepted for r in results)
    body = {"accepted": accepted, "rejected": len(results) - accepted, "results": payload}
    return web.json_response(body, status=503 if full else 200, headers=headers)


def _receipts_query(request: web.Request) -> tuple[int, int, int]:
    """``?dst=SHARD&from=SEQ&to=SEQ`` (from defaults to 1, to to from + 999)."""
    query = request.query
    if "dst" not in query:
        raise ApiError(400, "malformed", "expected ?dst=SHARD&from=SEQ&to=SEQ")
    dst = _parse_uint(query["dst"], "dst", 0, SHARD_ID_MAX)
    first = _parse_uint(query.get("from", "1"), "from", 1, SEQ_MAX)
    if "to" not in query:
        return dst, first, min(first + 999, SEQ_MAX)
    return dst, first, _parse_uint(query["to"], "to", first, SEQ_MAX)


def _found(answer: dict[str, Any] | None, detail: str) -> web.Response:
    if answer is None:
        raise ApiError(404, "not_found", detail)
    return web.json_response(answer)


class _Routes:
    """One handler per route: HTTP in, the service's JSON-ready answer out."""

    def __init__(self, service: NodeServiceAPI, batch_txs_max: int, *,
                 events_subscribers_max: int, events_heartbeat_s: float,
                 events_write_timeout_s: float, log: Any) -> None:
        self.service = service
        self.batch_txs_max = batch_txs_max
        self.events_subscribers_max = events_subscribers_max
        self.events_heartbeat_s = events_heartbeat_s
        self.events_write_timeout_s = events_write_timeout_s
        self.log = log
        self.event_streams = 0  # open /v1/events responses

    def table(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/txs", self.submit),
            web.get("/v1/txs/{tx_hash}", self.tx),
            web.get("/v1/accounts/{address}", self.account),
            web.get("/v1/accounts/{address}/txs", self.account_txs),
            web.get("/v1/lending/{address}", self.lending),
            web.get("/v1/blocks/latest", self.latest),
            web.get("/v1/blocks/{height}", self.block),
            web.get("/v1/status", self.status),
            web.get("/v1/health", self.health),
            web.get("/v1/network", self.network),
            web.get("/v1/events", self.events),
            web.get("/v1/audit", self.audit),
            web.get("/v1/receipts", self.receipts),
            web.get("/metrics", self.metrics),
        ]

    async def submit(self, request: web.Request) -> web.Response:
        raw_txs = await _read_raw_txs(request, self.batch_txs_max)
        return _submit_response(await self.service.submit_txs(raw_txs))

    async def tx(self, request: web.Request) -> web.Response:
        tx_hash = _parse_hex(request.match_info["tx_hash"], "transaction hash", 32)
        return _found(await self.service.tx_status(tx_hash), "unknown transaction")

    async def account(self, request: web.Request) -> web.Response:
        address = _parse_hex(request.match_info["address"], "address", 32)
        return web.json_response(self.service.account(address))

    async def lending(self, request: web.Request) -> web.Response:
        address = _parse_hex(request.match_info["address"], "address", 32)
        return web.json_response(self.service.lending(address))

    async def account_txs(self, request: web.Request) -> web.Response:
        """``?limit=N&before=CURSOR``: a page of the account's history, newest first."""
        address = _parse_hex(request.match_info["address"], "address", 32)
        limit = _parse_uint(request.query.get("limit", str(ACCOUNT_TXS_LIMIT_DEFAULT)),
                            "limit", 1, ACCOUNT_TXS_PAGE_MAX)
        before = _parse_uint(request.query.get("before", str(CURSOR_MAX)), "before", 0,
                             CURSOR_MAX)
        return web.json_response(await self.service.account_txs(address, before, limit))

    async def latest(self, request: web.Request) -> web.Response:
        return _found(await self.service.block(None), "no block committed yet")

    async def block(self, request: web.Request) -> web.Response:
        height = _parse_uint(request.match_info["height"], "height", 0, SEQ_MAX)
        return _found(await self.service.block(height), f"no block at height {height}")

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.service.status())

    async def health(self, request: web.Request) -> web.Response:
        """200 when ready, 503 with the reasons why not (``NodeService.health``)."""
        answer = self.service.health()
        return web.json_response(answer, status=200 if answer["ready"] else 503)

    async def network(self, request: web.Request) -> web.Response:
        return web.json_response(self.service.network())

    async def events(self, request: web.Request) -> web.StreamResponse:
        if self.event_streams >= self.events_subscribers_max:
            return _busy("too_many_subscribers",
                         f"{self.events_subscribers_max} event streams open (the limit); "
                         "retry later")
        # Subscribed before the headers go out: a client that sees them and then
        # submits a transaction gets its block.
        events = self.service.subscribe_blocks()
        self.event_streams += 1
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                   "Cache-Control": "no-cache"})
            await response.prepare(request)
            try:
                await self._stream(request, response, aiter(events))
            except ConnectionResetError:
                pass
            except Exception:
                # The headers went out, so no 500: log it and end the stream.
                _internal_error(self.log, request)
            return response
        finally:
            self.event_streams -= 1
            await events.aclose()

    async def _stream(self, request: web.Request, response: web.StreamResponse,
                      events: AsyncIterator[dict[str, Any]]) -> None:
        while True:
            try:
                event = await asyncio.wait_for(_next_or_none(events),
                                               self.events_heartbeat_s)
            except TimeoutError:
                # A write to a closed connection raises: the slot is freed without
                # waiting for the next block.
                await self._write(request, response, b": keep-alive\n\n")
                continue
            if event is None:  # the node ended the stream (too slow, or stopping)
                return
            data = json.dumps(event, separators=(",", ":"))
            await self._write(request, response, f"event: block\ndata: {data}\n\n".encode())

    async def _write(self, request: web.Request, response: web.StreamResponse,
                     data: bytes) -> None:
        try:
            await asyncio.wait_for(response.write(data), self.events_write_timeout_s)
        except TimeoutError:
            # The client stopped reading and its socket is full: the node already
            # stopped queueing for it (events.subscriber_dropped); free the socket too.
            self.log.warning("events.subscriber_stalled", stalled_s=self.events_write_timeout_s,
                             peer=request.remote)
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("the subscriber stopped reading") from None

    async def audit(self, request: web.Request) -> web.Response:
        return web.json_response(await self.service.audit())

    async def receipts(self, request: web.Request) -> web.Response:
        return web.json_response(await self.service.receipts(*_receipts_query(request)))

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.service.metrics_text(),
                            headers={"Content-Type": "text/plain; version=0.0.4"})


async def _next_or_none(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None


def build_app(service: NodeServiceAPI, *, body_bytes_max: int, batch_txs_max: int,
              count_request: RequestCounter | None = None,
              connections_max: int = defaults.API_CONNECTIONS_MAX,
              events_subscribers_max: int = defaults.API_EVENTS_SUBSCRIBERS_MAX,
              events_heartbeat_s: float = EVENTS_HEARTBEAT_S,
              events_write_timeout_s: float = EVENTS_WRITE_TIMEOUT_S,
              log: Any = None) -> web.Application:
    log = structlog.get_logger() if log is None else log
    # The counter sits outside the others, so it sees the final status (503s included);
    # the cap outside the error middleware, so a slot is held until the answer is made.
    middlewares = [_capping(connections_max), _errors_as_json(log)]
    if count_request is not None:
        middlewares.insert(0, _counting(count_request))
    app = web.Application(client_max_size=body_bytes_max, middlewares=middlewares)
    routes = _Routes(service, batch_txs_max, events_subscribers_max=events_subscribers_max,
                     events_heartbeat_s=events_heartbeat_s,
                     events_write_timeout_s=events_write_timeout_s, log=log)
    app.add_routes(routes.table())
    app.router.add_get("/v1/openapi.json", _serving(openapi.document(
        body_bytes_max=body_bytes_max, batch_txs_max=batch_txs_max, seq_max=SEQ_MAX,
        shard_id_max=SHARD_ID_MAX, connections_max=connections_max,
        events_subscribers_max=events_subscribers_max)))
    return app


def _serving(document: dict[str, Any]) -> Handler:
    """``GET /v1/openapi.json``: the description of this app (``node/openapi.py``)."""
    body = json.dumps(document, separators=(",", ":")).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return openapi_json
