"""The OpenAPI 3.1 description of the node's HTTP API, served at ``GET /v1/openapi.json``.

Data only: ``document`` builds the dict from the limits ``node/api.py`` enforces (the
bounds of every path and query number, the batch and body caps), so the two cannot
drift apart silently; ``tests/fuzz/test_openapi.py`` checks every route of the app
against it (method, path, parameter names and required-ness) and that it validates
as OpenAPI 3, and ``shardnet fuzz --target api`` (schemathesis) checks the running
node's answers against it. Every ``GET`` is also answered for ``HEAD`` (aiohttp's
``allow_head``): the same operation without a body.

Error bodies are ``{"error": reason, "detail": text}``; the only 5xx a client should
ever see are the documented 503s (``too_many_connections`` on every route,
``too_many_subscribers`` on ``/v1/events``, ``mempool_full``/``sender_full`` on
``POST /v1/txs``), each with ``Retry-After``. A 500 ``internal`` (with ``error_id``)
is documented because it is the shape of the last resort, but it is a bug of ours.
"""

from __future__ import annotations

import copy
from typing import Any

from node.store.accounts import ACCOUNT_TXS_PAGE_MAX, CURSOR_MAX

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
MSGPACK = "application/msgpack"

_HEX = "^(0x)?([0-9a-fA-F]{2})*$"
_HEX32 = "^(0x)?[0-9a-fA-F]{64}$"
_LOWER_HEX32 = "^[0-9a-f]{64}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}
_HASH = {"type": "string", "pattern": _LOWER_HEX32}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}


def _schemas() -> dict[str, Any]:
    return {
        "Error": _obj(["error", "detail"], {
            "error": {"type": "string", "description": "the reason, a stable snake_case word"},
            "detail": {"type": ["string", "null"], "description": "for humans"},
            "error_id": {"type": "string", "pattern": "^[0-9a-f]{16}$",
                         "description": "500 only: joins the answer to the logged "
                                        "`api.internal_error`"},
        }),
        "SubmitResult": _obj(["hash", "accepted"], {
            "hash": {"type": ["string", "null"], "pattern": _LOWER_HEX32},
            "accepted": {"type": "boolean"},
            "error": {"type": ["string", "null"]},
            "detail": {"type": ["string", "null"]},
        }),
        "SubmitBatch": _obj(["accepted", "rejected", "results"], {
            "accepted": _INT, "rejected": _INT,
            "results": {"type": "array", "items": _ref("SubmitResult")},
        }),
        "TxStatus": _obj(["hash", "status", "shard"], {
            "hash": _HASH,
            "status": {"enum": ["pending", "committed", "finalized", "failed", "rejected"]},
            "shard": _INT, "height": _INT, "index": _INT,
            "outcome": _obj(["ok", "error", "receipts"], {
                "ok": {"type": "boolean"}, "error": {"type": ["string", "null"]},
                "receipts": _INT}),
            "hops": {"type": "array", "items": {"type": "object"}},
            "pending_receipts": {"type": "array", "items": {"type": "object"}},
            "error": _STR, "detail": {"type": ["string", "null"]},
        }),
        "Account": _obj(["address", "shard", "nonce", "balances", "height"], {
            "address": _HASH, "shard": _INT, "nonce": _INT, "balances": _COUNTS,
            "height": _INT,
            "liquidity": {
                "type": "object",
                "description": "per pool name, when the account holds LP shares or a "
                               "farm stake there (pending_reward: at `height`)",
                "additionalProperties": _obj(["lp_shares", "staked"], {
                    "lp_shares": _INT, "staked": _INT, "pending_reward": _INT,
                    "reward_asset": _STR}),
            },
        }),
        "Lending": _obj(["address", "shard", "height", "lending_address", "quote",
                         "positions", "collateral_value", "debt_value", "health_factor",
                         "liquidatable", "markets"], {
            "address": _HASH, "shard": _INT, "height": _INT, "lending_address": _HASH,
            "quote": _INT, "positions": {"type": "array", "items": {"type": "object"}},
            "collateral_value": _INT, "debt_value": {"type": ["integer", "null"]},
            "health_factor": {"type": ["number", "null"]}, "liquidatable": {"type": "boolean"},
            "markets": {"type": "array", "items": {"type": "object"}},
        }),
        "Block": _obj(["shard", "height", "view", "hash", "prev_hash", "time_ms", "proposer",
                       "tx_root", "inbound_root", "receipts_root", "state_root",
                       "evidence_root", "txs", "inbound_receipts", "inbound_origins",
                       "certificate"], {
            "shard": _INT, "height": _INT, "view": _INT, "hash": _HASH, "prev_hash": _HASH,
            "time_ms": _INT, "proposer": _INT, "tx_root": _HASH, "inbound_root": _HASH,
            "receipts_root": _HASH, "state_root": _HASH, "evidence_root": _HASH,
            "txs": {"type": "array", "items": _HASH}, "inbound_receipts": _INT,
            "inbound_origins": {"type": "array", "items": _HASH},
            "certificate": _obj(["view", "signers"], {
                "view": _INT, "signers": {"type": "array", "items": _INT}}),
        }),
        "Health": _obj(["ready", "reasons", "node", "shard", "height", "shard_peers",
                        "shard_peers_needed", "pending_ready_ms", "since_commit_ms"], {
            "ready": {"type": "boolean"},
            "reasons": {"type": "array", "items": {
                "enum": ["no_peers", "no_commit_yet", "stalled"]}},
            "node": _STR, "shard": _INT, "height": _INT, "shard_peers": _INT,
            "shard_peers_needed": _INT,
            "pending_ready_ms": {"type": ["integer", "null"], "minimum": 0},
            "since_commit_ms": {"type": ["integer", "null"], "minimum": 0},
        }),
        "Status": _obj(["node", "chain_id", "shard", "num_shards", "validator_index", "view",
                        "primary", "height", "block_hash", "state_root", "peers", "mempool",
                        "mempool_bytes", "recent_tps", "view_changes", "shard_tips"], {
            "node": _STR, "chain_id": _STR, "shard": _INT, "num_shards": _INT,
            "validator_index": _INT, "view": _INT, "primary": _INT, "height": _INT,
            "block_hash": _HASH, "state_root": _HASH, "peers": _INT, "mempool": _INT,
            "mempool_bytes": _INT, "recent_tps": {"type": "number", "minimum": 0},
            "view_changes": _INT, "shard_tips": _COUNTS,
        }),
        "Network": _obj(["chain_id", "num_shards", "node", "nodes", "genesis"], {
            "chain_id": _STR, "num_shards": _INT, "node": _STR,
            "nodes": {"type": "array", "items": _obj(
                ["shard", "index", "name", "api_url", "self"], {
                    "shard": _INT, "index": _INT, "name": _STR, "api_url": _STR,
                    "self": {"type": "boolean"}})},
            "genesis": {"type": "object"},
        }),
        "Audit": _obj(["shard", "height", "state_root", "balances", "reserves", "out_seq",
                       "in_cursor", "sent", "received"], {
            "shard": _INT, "height": _INT, "state_root": _HASH, "balances": _COUNTS,
            "reserves": _COUNTS, "out_seq": _COUNTS, "in_cursor": _COUNTS,
            "sent": {"type": "object", "additionalProperties": _COUNTS},
            "received": {"type": "object", "additionalProperties": _COUNTS},
        }),
        "AccountTxs": _obj(["address", "shard", "txs", "next_before"], {
            "address": _HASH, "shard": _INT,
            "txs": {"type": "array", "maxItems": ACCOUNT_TXS_PAGE_MAX, "items": _obj(
                ["hash", "height", "ordinal", "role", "cursor"], {
                    "hash": _HASH, "height": _INT, "ordinal": _INT,
                    "role": {"enum": ["sender", "recipient", "credit"],
                             "description": "`credit`: a cross-shard receipt of that "
                                            "transaction applied on this shard"},
                    "cursor": _INT})},
            "next_before": {"type": ["integer", "null"], "minimum": 0,
                            "description": "`before` of the next page; null on the last"}}),
        "Receipts": _obj(["src_shard", "dst_shard", "out_seq", "receipts", "sources"], {
            "src_shard": _INT, "dst_shard": _INT, "out_seq": _INT,
            "receipts": {"type": "array", "items": _obj(
                ["src_shard", "dst_shard", "seq", "kind", "origin", "sender", "recipient",
                 "asset", "amount", "height", "encoded", "proof"], {
                    "src_shard": _INT, "dst_shard": _INT, "seq": _INT, "kind": _STR,
                    "origin": _HASH, "sender": _HASH, "recipient": _HASH, "asset": _INT,
                    "amount": _INT, "height": _INT, "encoded": _STR,
                    "proof": _obj(["index", "tree_size", "path"], {
                        "index": _INT, "tree_size": _INT,
                        "path": {"type": "array", "items": _HASH}})})},
            "sources": {"type": "array", "items": _obj(
                ["shard", "height", "hash", "receipts_root", "time_ms", "header",
                 "certificate"], {
                    "shard": _INT, "height": _INT, "hash": _HASH, "receipts_root": _HASH,
                    "time_ms": _INT, "header": _STR, "certificate": _STR})},
        }),
    }


_RETRY_AFTER = {"Retry-After": {"description": "seconds before retrying, on a new connection",
                                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def _json(schema: dict[str, Any], description: str, *,
          headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _common() -> dict[str, Any]:
    """What every route may answer, whatever its handler does."""
    return {
        "500": _error("`internal`: a bug of ours (logged as `api.internal_error` with the "
                      "same `error_id`); never expected"),
        "503": _json(_ref("Error"), "`too_many_connections`: `api.connections_max` requests "
                     "already in progress; the connection is closed",
                     headers=_RETRY_AFTER),
    }


def _path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


def _query_param(name: str, schema: dict[str, Any], description: str, *,
                 required: bool) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def _get(operation_id: str, summary: str, responses: dict[str, Any], *,
         parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary,
                                 "responses": {**_common(), **responses}}
    if parameters:
        operation["parameters"] = parameters
    return operation


def _head_of(get: dict[str, Any]) -> dict[str, Any]:
    """The ``HEAD`` twin of a ``GET``: the same parameters and statuses, no body."""
    head = copy.deepcopy(get)
    head["operationId"] = "head" + get["operationId"].removeprefix("get")
    head["summary"] = f"Headers of: {get['summary']}"
    for response in head["responses"].values():
        response.pop("content", None)
    return head


def document(*, body_bytes_max: int, batch_txs_max: int, seq_max: int, shard_id_max: int,
             connections_max: int, events_subscribers_max: int) -> dict[str, Any]:
    """The OpenAPI document for an app built with these limits."""
    hex_tx = {"type": "string", "pattern": _HEX,
              "description": "an encoded signed transaction, hex (optional `0x`)"}
    tx_hash = _path_param("tx_hash", {"type": "string", "pattern": _HEX32},
                          "the transaction's hash: 32 bytes, hex (optional `0x`)")
    address = _path_param("address", {"type": "string", "pattern": _HEX32},
                          "an account: 32 bytes, hex (optional `0x`)")
    height = _path_param("height", {"type": "integer", "minimum": 0, "maximum": seq_max},
                         "ASCII decimal digits only")
    malformed = _error("`malformed` (not ASCII digits, not 32 bytes of hex) or "
                       "`out_of_range`")
    not_found = _error("`not_found`")
    gets = {
        "/v1/txs/{tx_hash}": _get("getTx", "A transaction's status", {
            "200": _json(_ref("TxStatus"), "pending, committed, finalized, failed or "
                         "rejected (reason kept for the last 100,000)"),
            "400": malformed, "404": not_found}, parameters=[tx_hash]),
        "/v1/accounts/{address}": _get("getAccount", "An account of this node's shard", {
            "200": _json(_ref("Account"), "nonce and balances at the committed tip"),
            "400": _error("`malformed`, or `wrong_shard`: the address lives on another "
                          "shard")}, parameters=[address]),
        "/v1/lending/{address}": _get("getLending", "A lending position (issue 18)", {
            "200": _json(_ref("Lending"), "the account's supply shares and debts (interest "
                         "and TWAP prices as of the next block), health factor, markets"),
            "400": malformed,
            "404": _error("`no_lending`: this shard runs no lending markets"),
            "409": _error("`overflow`: a market can no longer accrue interest")},
            parameters=[address]),
        "/v1/accounts/{address}/txs": _get("getAccountTxs",
                                           "An account's transactions, newest first", {
            "200": _json(_ref("AccountTxs"), "a page of the account's history (sent, "
                         "received, credited by a cross-shard receipt); empty for an "
                         "account never seen"),
            "400": _error("`malformed`, `out_of_range` (`limit`, `before`), or "
                          "`wrong_shard`: the address lives on another shard")},
            parameters=[address,
                        _query_param("limit", {"type": "integer", "minimum": 1,
                                               "maximum": ACCOUNT_TXS_PAGE_MAX,
                                               "default": 100},
                                     "entries in the page", required=False),
                        _query_param("before", {"type": "integer", "minimum": 0,
                                                "maximum": CURSOR_MAX},
                                     "only entries with a smaller `cursor` (the previous "
                                     "page's `next_before`)", required=False)]),
        "/v1/blocks/latest": _get("getLatestBlock", "The last committed block", {
            "200": _json(_ref("Block"), "the block"),
            "404": not_found}),
        "/v1/blocks/{height}": _get("getBlock", "The committed block at a height", {
            "200": _json(_ref("Block"), "the block"),
            "400": malformed, "404": not_found}, parameters=[height]),
        "/v1/status": _get("getStatus", "This node's view of its shard", {
            "200": _json(_ref("Status"), "height, view, peers, mempool, shard tips")}),
        "/v1/health": _get("getHealth", "Whether this node is ready, and why not", {
            "200": _json(_ref("Health"), "ready: a quorum of its shard peers connected, "
                         "not stalled"),
            "503": _json({"anyOf": [_ref("Health"), _ref("Error")]},
                         "not ready: `reasons` names `no_peers`, `no_commit_yet`, "
                         "`stalled`; or `too_many_connections`", headers=_RETRY_AFTER)}),
        "/v1/network": _get("getNetwork", "Chain id, genesis and every validator's API URL", {
            "200": _json(_ref("Network"), "the network")}),
        "/v1/events": _get("getEvents", "Committed blocks as server-sent events", {
            "200": {"description": "`event: block` with the block as JSON `data`, a "
                    "`: keep-alive` comment every 15 s; never ends on its own",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "503": _json(_ref("Error"), "`too_many_connections`, or `too_many_subscribers`: "
                         f"`api.events_subscribers_max` ({events_subscribers_max}) "
                         "streams already open; the connection is closed",
                         headers=_RETRY_AFTER)}),
        "/v1/audit": _get("getAudit", "This shard's part of the supply audit", {
            "200": _json(_ref("Audit"), "totals at the committed tip")}),
        "/v1/receipts": _get("getReceipts", "Outbound receipts to a shard, with proofs", {
            "200": _json(_ref("Receipts"), "receipts of channel (this shard -> `dst`) "
                         "with their proofs and certified headers, bounded by count and "
                         "bytes"),
            "400": _error("`malformed` (missing `dst`, not ASCII digits) or "
                          "`out_of_range` (`to` below `from`)")}, parameters=[
            _query_param("dst", {"type": "integer", "minimum": 0, "maximum": shard_id_max},
                         "the destination shard", required=True),
            _query_param("from", {"type": "integer", "minimum": 1, "maximum": seq_max,
                                  "default": 1}, "first sequence number", required=False),
            _query_param("to", {"type": "integer", "minimum": 1, "maximum": seq_max},
                         "last sequence number, at least `from`; default `from` + 999 "
                         f"(at most {seq_max})", required=False)]),
        "/metrics": _get("getMetrics", "Prometheus metrics", {
            "200": {"description": "Prometheus text format 0.0.4",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}),
        "/v1/openapi.json": _get("getOpenapi", "This document", {
            "200": _json({"type": "object"}, "the OpenAPI document")}),
    }
    paths: dict[str, Any] = {path: {"get": op, "head": _head_of(op)}
                             for path, op in gets.items()}
    paths["/v1/txs"] = {"post": {
        "operationId": "submitTxs",
        "summary": "Submit signed transactions",
        "description": "JSON `{\"tx\": hex}` or `{\"txs\": [hex, ...]}`, or msgpack: one "
                       "encoded transaction or an array of them (bin items). At most "
                       f"{batch_txs_max} transactions (`api.batch_txs_max`) and "
                       f"{body_bytes_max} bytes (`api.body_bytes_max`); any other "
                       "content type is read as JSON.",
        "requestBody": {"required": True, "content": {
            JSON: {"schema": {"anyOf": [
                _obj(["tx"], {"tx": hex_tx}),
                _obj(["txs"], {"txs": {"type": "array", "items": hex_tx,
                                       "maxItems": batch_txs_max}}),
            ]}},
            MSGPACK: {"schema": {"type": "string", "format": "binary",
                                 "maxLength": body_bytes_max}},
        }},
        "responses": {
            "200": _json(_ref("SubmitBatch"), "several transactions: every result"),
            "202": _json(_ref("SubmitResult"), "one transaction, accepted"),
            "400": _json({"anyOf": [_ref("SubmitResult"), _ref("Error")]},
                         "one transaction refused (`accepted`: false, its reason), or a "
                         "body that is `malformed` or `too_deep`"),
            "413": _error("`oversized`: too many bytes or transactions"),
            **_common(),
            "503": _json({"anyOf": [_ref("SubmitResult"), _ref("SubmitBatch"),
                                    _ref("Error")]},
                         "`mempool_full`/`sender_full` (one result says so; resubmit only "
                         "the rejected), or `too_many_connections`", headers=_RETRY_AFTER),
        },
    }}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "shardnet node API", "version": "1",
                 "description": "One node of a shardnet testnet: transactions, accounts and "
                                "blocks of its shard, status, events, audit, receipts. "
                                f"At most {connections_max} requests in progress "
                                "(`api.connections_max`). Errors: "
                                '`{"error": reason, "detail": text}`; docs/NODE.md section 5.'},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": _schemas()},
    }
