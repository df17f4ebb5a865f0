"""The fault control endpoint (docs/NODE.md, "Faults and byzantine modes").

Exists only when the node's config says ``[faults] enabled = true``. Listens on
127.0.0.1 only, whatever ``[api] host`` is (a compose runner reaches it through
``docker exec``); every request needs ``Authorization: Bearer <token>``, the token
written at start to ``<home>/faults.token`` (mode 0600, new at every start). The
bound port is written to ``<home>/faults.port``. Errors are the API's JSON shape
``{"error": reason, "detail": text}``.

- ``GET /faults``: the state.
- ``PUT /faults/links`` ``{"peers": [names] | "*", "delay_ms", "loss", "partition"}``.
- ``PUT /faults/byzantine`` ``{"mode": ...}``: one of ``state.BYZANTINE_MODES``
  (equivocate, withhold_votes, wrong_roots, forge_receipts, duplicate_receipts,
  tamper_sync, fabricate_inbound; ``none`` ends it), else 400 ``unknown_mode``.
- ``DELETE /faults``: heal everything.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import msgspec
from aiohttp import web

from consensus.kernel.errors import ShardnetError
from node.faults.state import FaultState, LinkRule

HOST = "127.0.0.1"  # never anything else
TOKEN_FILE = "faults.token"
PORT_FILE = "faults.port"
BODY_BYTES_MAX = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LinksBody(msgspec.Struct, forbid_unknown_fields=True):
    peers: list[Annotated[str, msgspec.Meta(max_length=64)]] | str
    delay_ms: int = 0
    loss: float = 0.0
    partition: bool = False


class ByzantineBody(msgspec.Struct, forbid_unknown_fields=True):
    mode: str


def _error(status: int, reason: str, detail: str) -> web.Response:
    """The node API's error body (node/api.py)."""
    return web.json_response({"error": reason, "detail": detail}, status=status)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by the owner only (0600 also when it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def build_fault_app(state: FaultState, token: str) -> web.Application:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _error(401, "unauthorized", "Authorization: Bearer <token from "
                          f"<home>/{TOKEN_FILE}> required")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reason = "not_found" if exc.status == 404 else exc.reason.lower().replace(" ", "_")
            return _error(exc.status, reason, exc.text or exc.reason)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            # ValueError: msgspec raises UnicodeDecodeError (not DecodeError) for a JSON
            # string that is not UTF-8.
            return _error(400, "malformed", f"request body: {exc}")
        except ShardnetError as exc:
            return _error(400, exc.reason, exc.detail)

    async def read(request: web.Request, kind: type[msgspec.Struct]) -> msgspec.Struct:
        return msgspec.json.decode(await request.read(), type=kind)

    async def get(request: web.Request) -> web.Response:
        return web.json_response(state.snapshot())

    async def put_links(request: web.Request) -> web.Response:
        body = await read(request, LinksBody)
        assert isinstance(body, LinksBody)
        rule = LinkRule(delay_ms=body.delay_ms, loss=body.loss, partition=body.partition)
        return web.json_response(state.set_links(body.peers, rule))

    async def put_byzantine(request: web.Request) -> web.Response:
        body = await read(request, ByzantineBody)
        assert isinstance(body, ByzantineBody)
        return web.json_response(state.set_byzantine(body.mode))

    async def delete(request: web.Request) -> web.Response:
        return web.json_response(state.heal())

    app = web.Application(middlewares=[guard], client_max_size=BODY_BYTES_MAX)
    app.add_routes([web.get("/faults", get), web.delete("/faults", delete),
                    web.put("/faults/links", put_links),
                    web.put("/faults/byzantine", put_byzantine)])
    return app


class FaultEndpoint:
    """The endpoint's lifetime: ``start`` writes the token and port files and listens;
    ``stop`` closes it and removes both files."""

    def __init__(self, state: FaultState, home: Path, port: int) -> None:
        self.state = state
        self.home = home
        self.port = port
        self.token = ""
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.token = secrets.token_urlsafe(32)
        write_private(self.home / TOKEN_FILE, self.token + "\n")
        self._runner = web.AppRunner(build_fault_app(self.state, self.token), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        write_private(self.home / PORT_FILE, f"{port}\n")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        (self.home / PORT_FILE).unlink(missing_ok=True)
        (self.home / TOKEN_FILE).unlink(missing_ok=True)
