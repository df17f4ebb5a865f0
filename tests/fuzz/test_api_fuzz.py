"""``shardnet fuzz --target api``: schemathesis cases from the node's OpenAPI document,
sent to a node. A bounded run against a real node finds no 5xx, no answer off the
document and no ``api.internal_error``; a 500, an undocumented answer and a
non-typed error are findings with a replayable request; a documented 503 is not."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from click.testing import CliRunner

from node.api import build_app
from node.errors import SubmitResult
from scripts.cli.main import main
from scripts.fuzz import api
from scripts.fuzz.api import ApiFinding, ApiRun, fuzzing, internal_errors
from scripts.fuzz.engine import run_target
from scripts.fuzz.targets import TARGETS
from tests.node.test_api_http import RecordingService

SEED = 15
SAMPLE = 200  # requests of the bounded run (the soak is a command: docs/RELIABILITY.md)


@contextmanager
def serving(service: Any, *, outer: Any = None) -> Iterator[str]:
    """The API app over ``service`` on a real port of 127.0.0.1, in a thread
    (``outer``: a middleware put before the app's own)."""
    app = build_app(cast(Any, service), body_bytes_max=4096, batch_txs_max=3)
    if outer is not None:
        app.middlewares.insert(0, outer)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextmanager
def fuzzing_only(url: str, path: str, method: str = "GET") -> Iterator[ApiRun]:
    """The api target against ``url``, its cases drawn for one operation only."""
    with fuzzing(url) as run:
        run.fuzz.operations = [op for op in run.fuzz.operations
                               if (op.path, op.method.upper()) == (path, method)]
        assert run.fuzz.operations
        yield run


class BrokenStatus(RecordingService):
    def status(self) -> dict[str, Any]:
        raise RuntimeError("a bug in the status handler")


class FullPool(RecordingService):
    async def submit_txs(self, raw_txs: list[bytes]) -> list[SubmitResult]:
        return [SubmitResult(b"\x22" * 32, False, "mempool_full", "full") for _ in raw_txs]


@web.middleware
async def plain_text_400(request: web.Request, handler: Any) -> web.StreamResponse:
    """A refusal that bypasses the JSON error middleware."""
    if request.path.startswith("/v1/accounts/"):
        return web.Response(status=400, text="bad address")
    response: web.StreamResponse = await handler(request)
    return response


@pytest.fixture(scope="module")
def node() -> Iterator[ApiRun]:
    """A real one-shard testnet (four validators, a few transfers committed)."""
    with fuzzing() as run:
        yield run


@pytest.mark.integration
def test_bounded_run_against_a_real_node_finds_nothing(node: ApiRun) -> None:
    before = node.fuzz.counts.requests
    report = run_target(TARGETS["api"], SAMPLE, SEED)
    assert report.finding is None, report.finding
    assert report.inputs == SAMPLE
    counts = node.fuzz.counts
    assert counts.requests - before == SAMPLE
    assert counts.server_errors == counts.schema_violations == counts.dropped == 0
    assert report.accepted > 0 and counts.by_class["4xx"] > 0
    assert any(reason.startswith("400 ") for reason in report.refused)
    assert node.internal_errors() == []
    assert node.node.known.tx_hashes and 0 in node.node.known.heights


@pytest.mark.integration
def test_cli_counts_api_requests_as_json(node: ApiRun) -> None:
    result = CliRunner().invoke(main, ["fuzz", "--target", "api", "--count", "60",
                                       "--url", node.node.url, "--rng-seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    (target,) = summary["targets"]
    assert (target["target"], target["inputs"], target["failures"]) == ("api", 60, 0)
    assert summary["api"]["requests"] == 60
    assert summary["api"]["server_errors"] == summary["api"]["schema_violations"] == 0


def test_a_500_is_a_finding_with_a_replayable_request() -> None:
    with serving(BrokenStatus()) as url, fuzzing_only(url, "/v1/status") as run:
        report = run_target(TARGETS["api"], 50, SEED)
        assert report.finding is not None
        assert "500 internal" in report.finding.error
        request = json.loads(report.finding.input)
        assert (request["method"], request["path"]) == ("GET", "/v1/status")
        assert request["curl"].startswith("curl -X GET")
        assert run.fuzz.counts.server_errors >= 1
        with pytest.raises(ApiFinding, match="500 internal"):
            api.check(api.parse(report.finding.input))


def test_an_answer_off_the_document_is_a_finding() -> None:
    # RecordingService's account has no "shard" nor "height": not the Account schema.
    with serving(RecordingService()) as url, fuzzing_only(url, "/v1/accounts/{address}") as run:
        report = run_target(TARGETS["api"], 50, SEED)
        assert report.finding is not None
        assert "not as documented" in report.finding.error
        assert run.fuzz.counts.schema_violations >= 1


def test_an_error_without_the_typed_body_is_a_finding() -> None:
    with serving(RecordingService(), outer=plain_text_400) as url, \
            fuzzing_only(url, "/v1/accounts/{address}", "GET") as run:
        report = run_target(TARGETS["api"], 50, SEED)
        assert report.finding is not None
        assert "400 without a typed error body: 'bad address'" in report.finding.error
        assert run.fuzz.counts.schema_violations >= 1  # the shrinker sends some again


def test_a_documented_503_is_a_refusal_not_a_finding() -> None:
    with serving(FullPool()) as url, fuzzing_only(url, "/v1/txs", "POST") as run:
        report = run_target(TARGETS["api"], 40, SEED)
        assert report.finding is None, report.finding
        assert report.refused["503 mempool_full"] > 0
        assert run.fuzz.counts.server_errors == 0


def test_cli_exits_1_on_a_finding_and_prints_the_request() -> None:
    with serving(BrokenStatus()) as url:
        result = CliRunner().invoke(main, ["fuzz", "--target", "api", "--count", "2000",
                                           "--url", url, "--rng-seed", "1"])
    assert result.exit_code == 1, result.output
    assert "FINDING api:" in result.output
    assert "curl -X" in result.output


def test_internal_error_log_events_are_counted(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    log.write_text("\n".join([
        json.dumps({"event": "api.request", "path": "/v1/status"}),
        "not json at all api.internal_error",
        json.dumps({"event": "api.internal_error", "error_id": "00" * 8}),
        json.dumps({"event": "block.committed", "note": "api.internal_error in a field"}),
    ]) + "\n")
    assert [e["error_id"] for e in internal_errors(log)] == ["00" * 8]
    assert internal_errors(tmp_path / "missing.log") == []
    assert internal_errors(None) == []
