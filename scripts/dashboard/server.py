"""The dashboard's HTTP server (aiohttp, 127.0.0.1 only).

| route | answer |
|---|---|
| `GET /` , `/dashboard.js` | the page and its script |
| `GET /api/snapshot` | every node, every shard's latest point, the latest blocks (JSON) |
| `GET /api/series?limit=N` | each shard's points of the window (JSON) |
| `GET /api/stream` | server-sent events: one `snapshot` per interval |
| `GET /api/charts` | the charts as inline SVG (drawn at most once per interval) |
| `GET /api/tx/{hash}` | a transaction's status and hops, asked of the nodes |

Errors are JSON ``{"error", "detail"}`` with a 4xx/5xx status, never a traceback. A
request whose ``Host`` is not a loopback name is refused (403 ``forbidden_host``): a
web page elsewhere cannot read the dashboard through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from scripts.dashboard.aggregator import Aggregator
from scripts.dashboard.page import PAGE_HTML, PAGE_JS
from scripts.dashboard.svg import charts_html
from scripts.dashboard.txsearch import TxSearchError, find_tx

STREAM_SUBSCRIBERS_MAX = 16
STREAM_WRITE_TIMEOUT_S = 10.0
STREAM_KEEPALIVE_S = 15.0
SERIES_LIMIT_MAX = 100_000
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
# Nothing but this server: no script, style, font or image from anywhere else.
CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'")

log = structlog.get_logger("dashboard")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[:host.find("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _host_name(request.host or "").lower() not in LOOPBACK_HOSTS:
        return _error(403, "forbidden_host", "the dashboard answers only to 127.0.0.1 or "
                      "localhost")
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = (exc.reason or "error").lower().replace(" ", "_")
        response = _error(exc.status, reason, exc.reason or "")
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:  # a bug of ours: JSON, not a traceback on the page
        log.exception("dashboard.internal_error", path=request.path)
        response = _error(500, "internal", "the dashboard failed on this request (logged)")
    if not response.prepared:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
    return response


class DashboardServer:
    def __init__(self, aggregator: Aggregator, *,
                 stream_subscribers_max: int = STREAM_SUBSCRIBERS_MAX) -> None:
        self.aggregator = aggregator
        self.stream_subscribers_max = stream_subscribers_max
        self.streams: set[asyncio.Task[Any]] = set()
        self._charts: tuple[int, str] | None = None
        self._charts_lock = asyncio.Lock()
        self._closing = False

    def app(self) -> web.Application:
        app = web.Application(middlewares=[guard])
        app.router.add_get("/", self.page)
        app.router.add_get("/dashboard.js", self.script)
        app.router.add_get("/api/snapshot", self.snapshot)
        app.router.add_get("/api/series", self.series)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_get("/api/charts", self.charts)
        app.router.add_get("/api/tx/{hash}", self.tx)
        app.on_shutdown.append(self._end_streams)
        return app

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE_HTML, content_type="text/html")

    async def script(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE_JS, content_type="application/javascript")

    async def snapshot(self, request: web.Request) -> web.Response:
        return web.json_response(self.aggregator.snapshot())

    async def series(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit")
        limit = None
        if raw is not None:
            if not (raw.isascii() and raw.isdigit()) or not 2 <= int(raw) <= SERIES_LIMIT_MAX:
                return _error(400, "malformed",
                              f"limit is a whole number from 2 to {SERIES_LIMIT_MAX}")
            limit = int(raw)
        return web.json_response(self.aggregator.series_json(limit))

    async def charts(self, request: web.Request) -> web.Response:
        """Drawn at most once per tick, in a thread, however many pages ask."""
        async with self._charts_lock:
            tick = self.aggregator.tick
            if self._charts is None or self._charts[0] != tick:
                series = {s: ts.points() for s, ts in self.aggregator.series.items()}
                now = self.aggregator.clock()
                self._charts = (tick, await asyncio.to_thread(charts_html, series, now))
            body = self._charts[1]
        return web.Response(text=body, content_type="text/html")

    async def tx(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(await find_tx(self.aggregator,
                                                   request.match_info["hash"]))
        except TxSearchError as exc:
            return web.json_response(exc.as_json(), status=exc.status)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if len(self.streams) >= self.stream_subscribers_max:
            busy = _error(503, "too_many_subscribers",
                          f"{self.stream_subscribers_max} pages already follow this "
                          "dashboard; close one")
            busy.headers["Retry-After"] = "5"
            return busy
        task = asyncio.current_task()
        assert task is not None
        self.streams.add(task)
        try:
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-store",
                "Content-Security-Policy": CSP})
            await response.prepare(request)
            try:
                await self._feed(response)
            except ConnectionResetError:
                pass
            except asyncio.CancelledError:
                if not self._closing:
                    raise
            return response
        finally:
            self.streams.discard(task)

    async def _feed(self, response: web.StreamResponse) -> None:
        tick = self.aggregator.tick
        await self._write(response, self._event(self.aggregator.snapshot()))
        while True:
            now = await self.aggregator.wait_tick(tick, STREAM_KEEPALIVE_S)
            if now == tick:
                await self._write(response, b": keep-alive\n\n")
                continue
            tick = now
            await self._write(response, self._event(self.aggregator.snapshot()))

    @staticmethod
    def _event(snapshot: dict[str, Any]) -> bytes:
        data = json.dumps(snapshot, separators=(",", ":"))
        return f"event: snapshot\ndata: {data}\n\n".encode()

    @staticmethod
    async def _write(response: web.StreamResponse, data: bytes) -> None:
        try:
            async with asyncio.timeout(STREAM_WRITE_TIMEOUT_S):
                await response.write(data)
        except TimeoutError:
            raise ConnectionResetError("the page stopped reading") from None

    async def _end_streams(self, app: web.Application) -> None:
        self._closing = True
        for task in list(self.streams):
            task.cancel()
