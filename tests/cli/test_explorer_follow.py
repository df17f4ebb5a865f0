"""``shardnet events -f`` across reconnections (scripts/cli/explorer.py ``Follower``),
against a scripted SSE server on 127.0.0.1: a stream that ends is reconnected, the
blocks committed meanwhile are fetched from ``/v1/blocks/{height}`` and printed in order,
a block seen twice is printed once, and a node that keeps refusing ends in exit 3."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scripts.cli import explorer
from scripts.cli.exits import UNREACHABLE


def _block(height: int) -> dict[str, Any]:
    return {"shard": 0, "height": height, "hash": f"{height:064x}", "txs": [], "view": 0,
            "time_ms": 1000 * height, "inbound_receipts": 0,
            "certificate": {"view": 0, "signers": [0, 1, 2]}}


class Script:
    """What each /v1/events connection sends (a list of heights, then the stream ends);
    None: answer 503."""

    def __init__(self, connections: list[list[int] | None]) -> None:
        self.connections = connections
        self.served = 0
        self.blocks_asked: list[int] = []


def _server(script: Script) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/v1/blocks/"):
                height = int(self.path.rsplit("/", 1)[1])
                script.blocks_asked.append(height)
                body = json.dumps(_block(height)).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            index = min(script.served, len(script.connections) - 1)
            script.served += 1
            heights = script.connections[index]
            if heights is None:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b": keep-alive\n\n")
            for height in heights:
                data = json.dumps(_block(height))
                self.wfile.write(f"event: block\ndata: {data}\n\n".encode())
            self.close_connection = True

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(script: Script) -> str:
        server = _server(script)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(explorer, "BACKOFF_FIRST_S", 0.01)


def test_a_dropped_stream_is_reconnected_and_the_missed_blocks_are_printed(
        serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    script = Script([[1], None, [1, 4], [5]])  # ends, refuses once, repeats 1, skips 2..3
    follower = explorer.Follower([serve(script)], as_json=True, count=5, retries=3)
    follower.run()
    out, err = capsys.readouterr()
    assert [json.loads(line)["height"] for line in out.splitlines()] == [1, 2, 3, 4, 5]
    assert script.blocks_asked == [2, 3]
    assert "reconnecting in" in err and "HTTP 503" in err


def test_a_node_that_keeps_refusing_is_unreachable_after_the_retries(
        serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    script = Script([None])
    follower = explorer.Follower([serve(script)], as_json=False, count=None, retries=2)
    with pytest.raises(explorer.Unreachable) as raised:
        follower.run()
    assert raised.value.exit_code == UNREACHABLE
    assert script.served == 3 and "3 attempts in a row" in str(raised.value)
    assert capsys.readouterr().out == ""


def test_a_human_line_per_block(serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    follower = explorer.Follower([serve(Script([[7, 8]]))], as_json=False, count=2, retries=0)
    follower.run()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "shard 0  height      7" in lines[0]
    assert "signers 3" in lines[1] and "txs 0" in lines[1]


def test_an_endless_event_line_or_event_from_a_node_is_refused_not_buffered(
        serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node is an untrusted server: an event line (and an event) beyond its bound ends
    the stream with a ValueError (the follower's 'bad answer, reconnect' path) instead of
    being read into memory whole."""
    url = serve(Script([[1, 2]]))
    assert [b["height"] for b in explorer.sse_blocks(url)] == [1, 2]
    size = len(json.dumps(_block(1)))
    monkeypatch.setattr(explorer, "EVENT_LINE_BYTES_MAX", size // 2)
    with pytest.raises(ValueError, match="event line over"):
        list(explorer.sse_blocks(url))
    monkeypatch.setattr(explorer, "EVENT_LINE_BYTES_MAX", 10 * size)
    monkeypatch.setattr(explorer, "EVENT_BYTES_MAX", size)
    with pytest.raises(ValueError, match="event over"):
        list(explorer.sse_blocks(url))
