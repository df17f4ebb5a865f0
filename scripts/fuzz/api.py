"""The ``api`` fuzz target: schemathesis against a running node's HTTP API.

The inputs are schemathesis cases drawn from the node's own OpenAPI document
(``GET /v1/openapi.json``, ``node/openapi.py``) for every operation but the event
streams (they never end): positive cases (what the document allows) and negative ones
(what it does not), a quarter of them aimed at a transaction, account and block that
exist (``Known``). ``ApiFuzz.check`` sends one over HTTP and sorts the answer:

- 2xx: accepted; 4xx (and the documented 503s ``too_many_connections``,
  ``too_many_subscribers``, ``mempool_full``, ``sender_full``): refused, counted by
  ``"STATUS error"`` (``"400 malformed"``);
- a finding (``ApiFinding``: the run stops, hypothesis shrinks the case, the report
  prints it as a curl command): any other 5xx, an answer the document does not allow
  (schemathesis checks: status code, content type, headers, body schema; a negative
  case the node accepted), a 4xx whose body is not a typed error, a connection the
  node dropped or left unanswered.

``node_session`` starts a real testnet (one shard of four validators on 127.0.0.1, a
few transfers committed) or uses a given URL; after the run, ``internal_errors``
counts the node's ``api.internal_error`` log events (each one a finding too).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.core import NOT_SET, NotSet
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.core.transport import Response
from schemathesis.specs.openapi import checks as openapi_checks
from schemathesis.transport.serialization import Binary

from scripts.cli.params import free_base_port

DOCUMENTED_503 = frozenset({"too_many_connections", "too_many_subscribers", "mempool_full",
                            "sender_full"})
STREAMS = frozenset({"/v1/events"})  # never end: not fuzzed (they take no input)
REQUEST_TIMEOUT_S = 30.0
KNOWN_SHARE = 4  # one case in KNOWN_SHARE aims at a transaction/account/block that exists
CHECKS: list[CheckFunction] = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]
# What a refusal of data the document does not allow may answer (schemathesis's default
# list, less the statuses the node never uses for it, plus 413 for a batch too long).
REJECTION_STATUSES = ["400", "404", "405", "413"]
MSGPACK = "application/msgpack"
schemathesis.serializer.alias(MSGPACK, "application/octet-stream")  # raw bytes as sent


class ApiFinding(Exception):
    """An answer the API may not give (or none at all)."""


@dataclass(frozen=True)
class Known:
    """Path values that exist on the node: aimed at, so the 200 answers get checked too."""

    tx_hashes: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    heights: tuple[int, ...] = ()

    def path_values(self) -> dict[str, list[Any]]:
        values: dict[str, list[Any]] = {"tx_hash": list(self.tx_hashes),
                                        "address": list(self.addresses),
                                        "height": list(self.heights)}
        return {name: v for name, v in values.items() if v}


@dataclass
class ApiCounts:
    requests: int = 0
    by_class: Counter[str] = field(default_factory=Counter)  # "2xx", "4xx", "5xx"
    server_errors: int = 0  # 5xx that are not a documented 503
    schema_violations: int = 0
    dropped: int = 0  # connection errors and timeouts

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "by_class": dict(sorted(self.by_class.items())),
                "server_errors": self.server_errors,
                "schema_violations": self.schema_violations, "dropped": self.dropped}


class ApiFuzz:
    """Cases from a node's OpenAPI document, sent to it and judged."""

    def __init__(self, base_url: str, known: Known = Known()) -> None:
        self.base_url = base_url.rstrip("/")
        # An explicit config: none is read from a schemathesis.toml of the working directory.
        config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {
            "expected-statuses": REJECTION_STATUSES}}})
        self.schema = schemathesis.openapi.from_url(f"{self.base_url}/v1/openapi.json",
                                                    config=config, timeout=REQUEST_TIMEOUT_S)
        self.schema.validate()
        self.known = known
        self.session = requests.Session()
        self.counts = ApiCounts()
        self.operations: list[APIOperation[Any, Any, Any, Any]] = []
        for result in self.schema.get_all_operations():
            if isinstance(result, Err):  # the document is ours: it must be whole
                raise result.err()
            if result.ok().path not in STREAMS:
                self.operations.append(result.ok())

    def strategy(self) -> st.SearchStrategy[Case[Any]]:
        strategies: list[st.SearchStrategy[Case[Any]]] = []
        aimed: list[st.SearchStrategy[Case[Any]]] = []
        values = self.known.path_values()
        for operation in self.operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategies.append(operation.as_strategy(generation_mode=mode))
            names = {p.name for p in operation.path_parameters}
            if names and names <= set(values):
                fixed = st.fixed_dictionaries({n: st.sampled_from(values[n]) for n in names})
                aimed.append(fixed.flatmap(_aimed_at(operation)))
        everything = st.one_of(strategies)
        if not aimed:
            return everything
        return st.one_of(*[everything] * (KNOWN_SHARE - 1), st.one_of(aimed))

    def case_of(self, request: dict[str, Any]) -> Case[Any]:
        """The case a ``show``n request describes (for ``--replay``)."""
        try:
            operation = self.schema[request["path"]][request["method"]]
        except KeyError:
            raise ValueError(f"no operation {request.get('method')} {request.get('path')} "
                             "in the node's document") from None
        body = request.get("body", NOT_SET)
        if isinstance(body, dict) and set(body) == {"$bytes"}:
            body = Binary(bytes.fromhex(body["$bytes"]))
        return operation.Case(path_parameters=request.get("path_parameters"),
                              query=request.get("query"), headers=request.get("headers"),
                              body=body, media_type=request.get("media_type"))

    def check(self, value: Case[Any] | dict[str, Any]) -> str | None:
        """Send one case; ``None`` for a 2xx, ``"STATUS error"`` for a typed refusal;
        raises ``ApiFinding`` for anything the API may not answer."""
        case = self.case_of(value) if isinstance(value, dict) else value
        self.counts.requests += 1
        try:
            response = case.call(base_url=self.base_url, session=self.session,
                                 timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            self.counts.dropped += 1
            raise ApiFinding(f"no answer: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        self.counts.by_class[f"{status // 100}xx"] += 1
        reason = self._reason(case, response)
        try:
            case.validate_response(response, checks=CHECKS,
                                   transport_kwargs={"base_url": self.base_url})
        except FailureGroup as exc:
            self.counts.schema_violations += 1
            titles = "; ".join(sorted({f.title for f in exc.exceptions}))
            raise ApiFinding(f"{status}: not as documented: {titles}") from None
        return reason

    def _reason(self, case: Case[Any], response: Response) -> str | None:
        status = response.status_code
        if status < 300:
            return None
        if case.method.upper() == "HEAD":  # no body to read the reason from
            if status >= 500 and status != 503:
                self.counts.server_errors += 1
                raise ApiFinding(f"{status} on HEAD")
            return str(status)
        error = _error_of(response)
        if not isinstance(error, str):
            self.counts.schema_violations += 1
            raise ApiFinding(f"{status} without a typed error body: {response.text[:200]!r}")
        retry_after = any(name.lower() == "retry-after" for name in response.headers)
        if status >= 500 and not (status == 503 and error in DOCUMENTED_503 and retry_after):
            self.counts.server_errors += 1
            raise ApiFinding(f"{status} {error}: {response.text[:300]}")
        return f"{status} {error}"

    def show(self, case: Case[Any] | dict[str, Any]) -> str:
        """The request as JSON (``--replay`` reads it back), with its curl command."""
        if isinstance(case, dict):
            case = self.case_of(case)
        request: dict[str, Any] = {
            "method": case.method.upper(), "path": case.operation.path,
            "path_parameters": case.path_parameters or None, "query": case.query or None,
            "headers": dict(case.headers) if case.headers else None,
            "media_type": case.media_type}
        if not isinstance(case.body, NotSet):
            body = case.body
            if isinstance(body, (bytes, Binary)):
                body = {"$bytes": (body.data if isinstance(body, Binary) else body).hex()}
            request["body"] = body
        request["curl"] = case.as_curl_command(base_url=self.base_url)
        return json.dumps({k: v for k, v in request.items() if v is not None},
                          separators=(",", ":"), default=repr)

    def close(self) -> None:
        self.session.close()


def _error_of(response: Response) -> str | None:
    """The typed reason of a refusal: ``error``, or for a batch of transactions that a
    full pool refused (503 ``{"accepted", "rejected", "results"}``) the busy result's."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, str):
        return error
    results = body.get("results")
    if response.status_code == 503 and isinstance(results, list):
        busy = [r.get("error") for r in results
                if isinstance(r, dict) and r.get("error") in DOCUMENTED_503]
        return str(busy[0]) if busy else None
    return None


def _aimed_at(operation: APIOperation[Any, Any, Any, Any]
              ) -> Callable[[dict[str, Any]], st.SearchStrategy[Case[Any]]]:
    def cases(path: dict[str, Any]) -> st.SearchStrategy[Case[Any]]:
        return operation.as_strategy(generation_mode=GenerationMode.POSITIVE,
                                     path_parameters=path)

    return cases


# -- a node to fuzz --------------------------------------------------------------------


@dataclass(frozen=True)
class NodeUnderTest:
    url: str
    log: Path | None  # its structlog JSON lines, when we started it
    known: Known


def internal_errors(log: Path | None) -> list[dict[str, Any]]:
    """The node's ``api.internal_error`` events (each one a bug of ours)."""
    if log is None or not log.exists():
        return []
    events = []
    with log.open(errors="replace") as lines:
        for line in lines:
            if "api.internal_error" not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "api.internal_error":
                events.append(event)
    return events


@contextmanager
def node_session(url: str | None = None, *, workdir: Path | None = None,
                 ready_timeout_s: float = 90.0) -> Iterator[NodeUnderTest]:
    """``url`` as is, or a fresh one-shard testnet of four validators (stopped after,
    also on failure) with a few committed transfers; yields the node to fuzz."""
    if url is not None:
        yield NodeUnderTest(url.rstrip("/"), None, Known())
        return
    from scripts.cli.testnet.generate import TestnetSpec, generate
    from scripts.cli.testnet.layout import TestnetDir
    from scripts.cli.testnet.processes import start_node, stop_node, wait_healthy

    with tempfile.TemporaryDirectory(prefix="shardnet-fuzz-api-", dir=workdir) as tmp:
        root = Path(tmp) / "testnet"
        spec = TestnetSpec(shards=1, validators=4, accounts=32,
                           base_port=free_base_port(2 * 4))
        manifest = generate(spec, root)
        testnet = TestnetDir(root)
        try:
            for node in manifest.nodes:
                start_node(testnet, node.name)
            missing = wait_healthy(manifest.nodes, ready_timeout_s)
            if missing:
                tail = testnet.log(missing[0]).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nodes not healthy: {missing}\n{tail}")
            target = manifest.nodes[0]
            known = _commit_transfers(target.api_url, spec.chain_id, spec.seed, spec.accounts,
                                      ready_timeout_s)
            yield NodeUnderTest(target.api_url, testnet.log(target.name), known)
        finally:  # all at once: each SIGTERM, then SIGKILL after 10 s
            with ThreadPoolExecutor(len(manifest.nodes)) as pool:
                list(pool.map(lambda name: stop_node(testnet, name, timeout_s=10),
                              [node.name for node in manifest.nodes]))


def _commit_transfers(url: str, chain_id: str, seed: str, accounts: int,
                      timeout_s: float, count: int = 8) -> Known:
    """Submit ``count`` signed transfers and wait (bounded) until they are committed."""
    from consensus.kernel.codec import encode
    from sharding.accounts import derive_account
    from sharding.tx import Transfer, TxBody, sign_tx, tx_hash

    keys = [derive_account(seed, i) for i in range(min(accounts, count + 1))]
    raws, hashes = [], []
    for i in range(count):
        sender, recipient = keys[i], keys[i + 1]
        tx = sign_tx(sender, TxBody(chain_id, sender.public_key, 0,
                                    Transfer(recipient.public_key, 0, 1)))
        raws.append(encode(tx).hex())
        hashes.append(tx_hash(tx).hex())
    with requests.Session() as session:
        session.post(f"{url}/v1/txs", json={"txs": raws}, timeout=REQUEST_TIMEOUT_S)
        deadline = time.monotonic() + timeout_s
        heights: set[int] = set()
        for digest in hashes:
            while True:
                answer = session.get(f"{url}/v1/txs/{digest}", timeout=REQUEST_TIMEOUT_S)
                body = answer.json() if answer.status_code == 200 else {}
                if body.get("status") in ("committed", "finalized", "failed"):
                    heights.add(int(body["height"]))
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"transfer {digest} not committed in {timeout_s}s: "
                                       f"{answer.status_code} {answer.text[:200]}")
                time.sleep(0.2)
    return Known(tuple(hashes), tuple(k.public_key.hex() for k in keys),
                 tuple(sorted(heights | {0})))


# -- the registry's ``api`` target (scripts/fuzz/targets.py) ---------------------------

_ACTIVE: list[ApiFuzz] = []  # the session ``fuzzing`` opened


@dataclass
class ApiRun:
    node: NodeUnderTest
    fuzz: ApiFuzz

    def internal_errors(self) -> list[dict[str, Any]]:
        return internal_errors(self.node.log)

    def settle(self, report: Any) -> None:
        """After the run: an ``api.internal_error`` the node logged is a finding (the
        first one, with its error id and route), if the run had none of its own."""
        events = self.internal_errors()
        if events and report.finding is None:
            from scripts.fuzz.engine import Finding

            first = events[0]
            shown = json.dumps({k: first.get(k) for k in ("error_id", "method", "route",
                                                          "path")})
            report.finding = Finding(report.target, shown,
                                     f"{len(events)} api.internal_error logged by the node",
                                     f"{self.node.log}", "the request is in the node's log")

    def to_json(self) -> dict[str, Any]:
        return {"url": self.node.url, "started_node": self.node.log is not None,
                **self.fuzz.counts.to_json(),
                "internal_errors": len(self.internal_errors()) if self.node.log else None}

    def line(self) -> str:
        counts = self.fuzz.counts
        classes = ", ".join(f"{k} {v}" for k, v in sorted(counts.by_class.items()))
        logged = (f"{len(self.internal_errors())} api.internal_error logged"
                  if self.node.log else "api.internal_error not counted (a node given by --url)")
        return (f"api {self.node.url}: {counts.requests} requests ({classes}); "
                f"{counts.server_errors} undocumented 5xx, {counts.schema_violations} answers "
                f"off the document, {counts.dropped} unanswered; {logged}")


@contextmanager
def fuzzing(url: str | None = None, *, workdir: Path | None = None) -> Iterator[ApiRun]:
    """The node to fuzz (``node_session``) and the cases for it, while the ``api``
    target runs."""
    with node_session(url, workdir=workdir) as node:
        fuzz = ApiFuzz(node.url, node.known)
        _ACTIVE.append(fuzz)
        try:
            yield ApiRun(node, fuzz)
        finally:
            _ACTIVE.remove(fuzz)
            fuzz.close()


def _active() -> ApiFuzz:
    if not _ACTIVE:
        raise RuntimeError("the api target runs inside scripts.fuzz.api.fuzzing(...)")
    return _ACTIVE[-1]


def inputs(seed: int) -> st.SearchStrategy[list[Any]]:
    """Batches of one case (each is a request): hypothesis's seed is the chunk's."""
    return _active().strategy().map(lambda case: [case])


def check(value: Case[Any] | dict[str, Any]) -> str | None:
    return _active().check(value)


def show(value: Case[Any] | dict[str, Any]) -> str:
    return _active().show(value)


def parse(text: str) -> dict[str, Any]:
    """A request ``show`` printed (JSON with ``method`` and ``path``)."""
    request = json.loads(text)
    if not (isinstance(request, dict) and isinstance(request.get("method"), str)
            and isinstance(request.get("path"), str)):
        raise ValueError('expected {"method": ..., "path": ..., ...} as a finding prints it')
    return request
