"""``shardnet bench node`` waits the 503's ``Retry-After`` before submitting again
(issue 16, deliverable 2: with refusals cheap, retrying every 50 ms made 967,500
retries of a 60,000-transaction burst), and posts msgpack as a real client does."""

from __future__ import annotations

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.api import MSGPACK
from scripts.bench.node import RETRY_AFTER_MAX_S, retry_after_s, submit_chunks


@pytest.mark.parametrize(("header", "seconds"), [
    ("1", 1.0), ("0.5", 0.5), ("30", RETRY_AFTER_MAX_S), ("0", 0.05), (None, 0.05),
    ("soon", 0.05), ("nan", 0.05), ("-3", 0.05)])
def test_retry_after_is_honoured_and_bounded(header: str | None, seconds: float) -> None:
    assert retry_after_s(header) == seconds


async def test_chunks_are_posted_as_msgpack_and_refused_ones_again() -> None:
    """The bench posts ``application/msgpack`` (an array of the encoded transactions, as
    ``shardnet load`` does) and submits again what a full pool refused."""
    bodies: list[list[bytes]] = []

    async def txs(request: web.Request) -> web.Response:
        assert request.content_type == MSGPACK
        raws = msgspec.msgpack.decode(await request.read())
        bodies.append(raws)
        refuse = len(bodies) == 1  # the first answer: the pool is full for the last one
        results = [{"accepted": not (refuse and i == len(raws) - 1),
                    "error": "mempool_full" if refuse and i == len(raws) - 1 else None}
                   for i in range(len(raws))]
        return web.json_response({"results": results}, status=503 if refuse else 200,
                                 headers={"Retry-After": "0"} if refuse else None)

    app = web.Application()
    app.router.add_post("/v1/txs", txs)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        url = str(server.make_url("")).rstrip("/")
        chunk = ([b"\x92a", b"\x92b", b"\x92c"], ["a", "b", "c"])
        submitted: dict[str, float] = {}
        retries = await submit_chunks(session, url, [chunk], submitted, None)
    assert bodies == [[b"\x92a", b"\x92b", b"\x92c"], [b"\x92c"]]
    assert retries == 1 and sorted(submitted) == ["a", "b", "c"]
