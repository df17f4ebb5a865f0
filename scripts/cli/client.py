"""A small HTTP client of the node API, for the wallet commands, loaders and tests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from scripts.cli.testnet.layout import Manifest, TestnetDir

HTTP_TIMEOUT_S = 10.0


class ApiFailure(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body.get('error')}: {body.get('detail')}")
        self.status, self.body = status, body


def call(method: str, url: str, body: Any = None, timeout_s: float = HTTP_TIMEOUT_S) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {"error": "http", "detail": raw[:200].decode(errors="replace")}
        raise ApiFailure(exc.code, parsed) from None


FINAL_STATUSES = frozenset({"finalized", "failed", "rejected"})


class Client:
    def __init__(self, urls_by_shard: dict[int, list[str]], num_shards: int, chain_id: str
                 ) -> None:
        self.urls_by_shard = urls_by_shard
        self.num_shards = num_shards
        self.chain_id = chain_id

    @classmethod
    def from_testnet(cls, root: Path) -> Client:
        manifest: Manifest = TestnetDir(root).load_manifest()
        urls: dict[int, list[str]] = {}
        for node in manifest.nodes:
            urls.setdefault(node.shard, []).append(node.api_url)
        return cls(urls, manifest.shards, manifest.chain_id)

    @classmethod
    def from_url(cls, url: str) -> Client:
        """The whole network from one node: ``GET /v1/network`` lists every node's
        advertised URL (the given one first for its shard); ``/v1/status`` alone (that
        node only) when the node has no such route."""
        url = url.rstrip("/")
        status = call("GET", f"{url}/v1/status")
        urls: dict[int, list[str]] = {int(status["shard"]): [url]}
        try:
            network = call("GET", f"{url}/v1/network")
        except ApiFailure as exc:
            if exc.status != 404:
                raise
            network = {"nodes": []}
        for node in network["nodes"]:
            known = urls.setdefault(int(node["shard"]), [])
            if str(node["api_url"]).rstrip("/") not in known:
                known.append(str(node["api_url"]).rstrip("/"))
        return cls(urls, int(status["num_shards"]), str(status["chain_id"]))

    def url_for(self, shard: int, attempt: int = 0) -> str:
        urls = self.urls_by_shard.get(shard)
        if not urls:
            raise ApiFailure(400, {"error": "wrong_shard",
                                   "detail": f"no known node of shard {shard}"})
        return urls[attempt % len(urls)]

    def account(self, address: bytes, shard: int) -> dict[str, Any]:
        result: dict[str, Any] = call("GET", f"{self.url_for(shard)}/v1/accounts/{address.hex()}")
        return result

    def submit(self, raw_txs: list[bytes], shard: int, attempt: int = 0) -> Any:
        return call("POST", f"{self.url_for(shard, attempt)}/v1/txs",
                    {"txs": [raw.hex() for raw in raw_txs]})

    def tx_status(self, tx_hash: str, shard: int) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = call("GET", f"{self.url_for(shard)}/v1/txs/{tx_hash}")
        except ApiFailure as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def wait_final(self, tx_hash: str, shard: int, timeout_s: float,
                   until: frozenset[str] = FINAL_STATUSES) -> dict[str, Any] | None:
        """Poll until the transaction's status is one of ``until`` (bounded): by default
        finalized (every receipt it caused applied), failed or rejected."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.tx_status(tx_hash, shard)
            if found is not None and found["status"] in until:
                return found
            time.sleep(0.1)
        return self.tx_status(tx_hash, shard)
