"""The explorer commands (issue 17): ``shardnet block [HEIGHT|latest] [--shard S]``,
``shardnet events [-f] [--shard S] [--count N]``, and what ``shardnet tx get HASH`` and
``shardnet account ADDRESS --txs`` (scripts/cli/wallet.py) print.

Readable text on stdout, or with ``--json`` machine output only (one document; one
JSON line per block for ``events``). Errors are one line with the exit codes of
scripts/cli/exits.py: 1 the node has no such block or transaction, 2 usage, 3 no node
answers.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from scripts.cli.client import ApiFailure, Client, call
from scripts.cli.exits import CheckFailed, Unreachable, UsageFailure
from scripts.cli.wallet import _ask, _client, _unreachable_reason, with_network

BLOCK_TXS_SHOWN = 10
TX_HASH = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
EVENTS_READ_TIMEOUT_S = 45.0  # the node sends a keep-alive every 15 s
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
GAP_BLOCKS_MAX = 100  # blocks missed while reconnecting that are fetched and printed
# A node is an untrusted server: one SSE line, and one event's data lines together, are
# bounded (a 2,000-transaction block event is ~150 KiB).
EVENT_LINE_BYTES_MAX = 8 * 1024 * 1024
EVENT_BYTES_MAX = 16 * 1024 * 1024


def _time(time_ms: Any) -> str:
    if not isinstance(time_ms, int):
        return "?"
    return datetime.fromtimestamp(time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _shard(client: Client, shard: int) -> int:
    if not 0 <= shard < client.num_shards:
        raise UsageFailure(f"--shard {shard}: the network has shards 0..{client.num_shards - 1}")
    return shard


# ---------------------------------------------------------------------------
# block


def block_lines(block: dict[str, Any], shown: int = BLOCK_TXS_SHOWN) -> list[str]:
    cert = block.get("certificate") or {}
    signers = cert.get("signers") or []
    txs = block.get("txs") or []
    lines = [
        f"block {block['height']} of shard {block['shard']}",
        f"  hash          {block['hash']}",
        f"  prev_hash     {block['prev_hash']}",
        f"  time          {_time(block.get('time_ms'))} UTC",
        f"  view          {block['view']}   proposer {block['proposer']}",
        f"  state_root    {block['state_root']}",
        f"  tx_root       {block['tx_root']}",
        f"  receipts_root {block['receipts_root']}",
        f"  certificate   view {cert.get('view')}, {len(signers)} signers: "
        + " ".join(str(s) for s in signers),
        f"  txs           {len(txs)}   inbound receipts {block.get('inbound_receipts', 0)}",
    ]
    lines += [f"    {digest}" for digest in txs[:shown]]
    if len(txs) > shown:
        lines.append(f"    ... {len(txs) - shown} more (--json lists all)")
    return lines


@click.command("block")
@click.argument("height", default="latest", metavar="[HEIGHT|latest]")
@click.option("--shard", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The node's JSON on stdout.")
@with_network
def block(height: str, shard: int, as_json: bool, url: str | None, testnet: Path) -> None:
    """A committed block: header, certificate signers, tx count and the first txs.
    Exit 1 when the shard has no block at HEIGHT."""
    if height != "latest" and not (height.isascii() and height.isdigit()):
        raise UsageFailure(f"HEIGHT must be a number or latest, got {height!r}")
    client = _client(url, testnet)
    shard = _shard(client, shard)
    where = f"block {height} of shard {shard}"
    found: dict[str, Any] = _ask(where, lambda: call(
        "GET", f"{client.url_for(shard)}/v1/blocks/{height}"))
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        click.echo("\n".join(block_lines(found)))


# ---------------------------------------------------------------------------
# tx get


def parse_tx_hash(text: str) -> str:
    match = TX_HASH.fullmatch(text.strip())
    if match is None:
        raise UsageFailure(f"a transaction hash is 64 hex digits, got {text!r}")
    return match.group(1).lower()


def _ask_shard(client: Client, shard: int, path: str) -> tuple[dict[str, Any] | None, str]:
    """(answer, "") from the first node of the shard that answers, (None, "") when it
    says 404, (None, reason) when none answers."""
    reasons = []
    for url in client.urls_by_shard.get(shard, []):
        try:
            answer = call("GET", f"{url}{path}")
        except ApiFailure as exc:
            if exc.status == 404:
                return None, ""
            reasons.append(f"{url}: {exc}")
            continue
        except (OSError, ValueError) as exc:
            reasons.append(f"{url}: {_unreachable_reason(exc)}")
            continue
        if isinstance(answer, dict):
            return answer, ""
        reasons.append(f"{url}: not a JSON object")
    return None, "; ".join(reasons) or "no known node"


def find_tx(client: Client, digest: str) -> dict[str, Any]:
    """Ask every shard (only the sender's knows the transaction), as the dashboard's
    search does (scripts/dashboard/txsearch.py): the first answer, else CheckFailed
    (no shard knows it) or Unreachable (a shard that could know it did not answer)."""
    unreachable: dict[int, str] = {}
    for shard in range(client.num_shards):
        found, reason = _ask_shard(client, shard, f"/v1/txs/{digest}")
        if found is not None:
            return found
        if reason:
            unreachable[shard] = reason
    if unreachable:
        raise Unreachable(f"transaction {digest}: not found on the shards that answered; "
                          + "; ".join(f"shard {s}: {r}" for s, r in unreachable.items()))
    raise CheckFailed(f"transaction {digest}: unknown to every shard "
                      f"(0..{client.num_shards - 1})")


def tx_lines(tx: dict[str, Any]) -> list[str]:
    lines = [f"tx {tx['hash']}", f"  status   {tx['status']}"]
    if "height" in tx:
        lines.append(f"  shard    {tx['shard']}   height {tx['height']}   index {tx['index']}")
    else:
        lines.append(f"  shard    {tx['shard']}")
    outcome = tx.get("outcome")
    if isinstance(outcome, dict):
        text = "ok" if outcome.get("ok") else f"failed: {outcome.get('error')}"
        lines.append(f"  outcome  {text}, {outcome.get('receipts', 0)} receipts emitted")
    if tx.get("error"):
        lines.append(f"  error    {tx['error']}: {tx.get('detail')}")
    hops = tx.get("hops") or []
    if hops:
        first = hops[0].get("time_ms")
        lines.append(f"  hops     {len(hops)}")
        for number, hop in enumerate(hops):
            after = (f"+{hop['time_ms'] - first} ms" if isinstance(hop.get("time_ms"), int)
                     and isinstance(first, int) else "")
            via = (f"   receipt {hop['src_shard']}->{hop['shard']} seq {hop['seq']}"
                   if "src_shard" in hop else "")
            lines.append(f"    {number}  shard {hop['shard']} height {hop['height']}  "
                         f"{after}{via}")
    for pending in tx.get("pending_receipts") or []:
        lines.append(f"  pending  {json.dumps(pending, sort_keys=True)}")
    return lines


def tx_get(digest_text: str, as_json: bool, url: str | None, testnet: Path) -> None:
    digest = parse_tx_hash(digest_text)
    found = find_tx(_client(url, testnet), digest)
    click.echo(json.dumps(found, indent=2) if as_json else "\n".join(tx_lines(found)))


# ---------------------------------------------------------------------------
# account --txs


def account_txs_lines(page: dict[str, Any]) -> list[str]:
    lines = [f"account {page['address']} (shard {page['shard']}): {len(page['txs'])} entries, "
             "newest first"]
    lines += [f"  {e['height']:>8}  {e['role']:<9}  {e['hash']}" for e in page["txs"]]
    if page.get("next_before") is not None:
        lines.append(f"  more: --before {page['next_before']}")
    return lines


# ---------------------------------------------------------------------------
# events


def event_line(block: dict[str, Any]) -> str:
    cert = block.get("certificate") or {}
    failed = block.get("failed")
    return (f"{_time(block.get('time_ms'))}  shard {block.get('shard')}  height "
            f"{block.get('height'):>6}  {str(block.get('hash'))[:16]}  txs "
            f"{len(block.get('txs') or [])}"
            + (f" ({len(failed)} failed)" if failed else "")
            + f"  inbound {block.get('inbound_receipts', 0)}  view {block.get('view')}"
            f"  signers {len(cert.get('signers') or [])}")


def sse_blocks(url: str) -> Iterator[dict[str, Any]]:
    """The ``event: block`` documents of one ``/v1/events`` connection (urllib, line by
    line; comments and other events skipped). Ends when the server closes."""
    request = urllib.request.Request(f"{url}/v1/events",
                                     headers={"Accept": "text/event-stream"})
    with urllib.request.urlopen(request, timeout=EVENTS_READ_TIMEOUT_S) as response:
        event, data, size = "message", list[str](), 0
        while raw := response.readline(EVENT_LINE_BYTES_MAX + 1):
            # Verify the line and the event stay within their bounds.
            if len(raw) > EVENT_LINE_BYTES_MAX:
                raise ValueError(f"event line over {EVENT_LINE_BYTES_MAX} bytes")
            size += len(raw)
            if size > EVENT_BYTES_MAX:
                raise ValueError(f"event over {EVENT_BYTES_MAX} bytes")
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line:
                if event == "block" and data:
                    document = json.loads("\n".join(data))
                    if isinstance(document, dict):
                        yield document
                event, data, size = "message", list[str](), 0
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))


class Follower:
    """Prints a shard's blocks as they commit, across reconnections (backoff, the next
    node of the shard each time), filling a gap left by a reconnection from
    ``/v1/blocks/{height}`` (up to ``GAP_BLOCKS_MAX``)."""

    def __init__(self, urls: list[str], as_json: bool, count: int | None,
                 retries: int) -> None:
        self.urls, self.as_json, self.count, self.retries = urls, as_json, count, retries
        self.printed = 0
        self.last_height: int | None = None

    def done(self) -> bool:
        return self.count is not None and self.printed >= self.count

    def emit(self, block: dict[str, Any]) -> None:
        height = block.get("height")
        if isinstance(height, int) and self.last_height is not None and height <= self.last_height:
            return  # seen before a reconnection
        click.echo(json.dumps(block, separators=(",", ":")) if self.as_json
                   else event_line(block))
        self.printed += 1
        if isinstance(height, int):
            self.last_height = height

    def fill_gap(self, url: str, upto: int) -> None:
        if self.last_height is None:
            return
        first = max(self.last_height + 1, upto - GAP_BLOCKS_MAX)
        for height in range(first, upto):
            if self.done():
                return
            try:
                self.emit(call("GET", f"{url}/v1/blocks/{height}"))
            except (ApiFailure, OSError, ValueError):
                return

    def run(self) -> None:
        failures, attempt, delay = 0, 0, BACKOFF_FIRST_S
        while not self.done():
            url = self.urls[attempt % len(self.urls)]
            attempt += 1
            try:
                for block in sse_blocks(url):
                    failures, delay = 0, BACKOFF_FIRST_S
                    height = block.get("height")
                    if isinstance(height, int):
                        self.fill_gap(url, height)
                    if self.done():
                        return
                    self.emit(block)
                    if self.done():
                        return
                reason = "the node closed the stream"
            except (OSError, ValueError) as exc:  # refused, reset, timeout, bad JSON
                reason = _unreachable_reason(exc)
                if isinstance(exc, urllib.error.HTTPError):
                    reason = f"HTTP {exc.code}"
            failures += 1
            if failures > self.retries:
                raise Unreachable(f"events of {url}: {reason} ({failures} attempts in a row)")
            click.echo(f"events: {url}: {reason}; reconnecting in {delay:.1f} s", err=True)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


@click.command("events")
@click.option("-f", "--follow", is_flag=True,
              help="Follow: print each block as it commits (Ctrl-C stops).")
@click.option("--shard", type=click.IntRange(0), default=0, show_default=True)
@click.option("--count", type=click.IntRange(1), default=None,
              help="Stop after N blocks (with -f).")
@click.option("--retries", type=click.IntRange(0), default=10, show_default=True,
              help="Failed connections in a row before giving up (exit 3).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per block.")
@with_network
def events(follow: bool, shard: int, count: int | None, retries: int, as_json: bool,
           url: str | None, testnet: Path) -> None:
    """Committed blocks of a shard, one line each (GET /v1/events). Without -f: the
    latest block's line. Reconnects with backoff to the shard's nodes in turn."""
    client = _client(url, testnet)
    shard = _shard(client, shard)
    if not follow:
        latest: dict[str, Any] = _ask(f"latest block of shard {shard}", lambda: call(
            "GET", f"{client.url_for(shard)}/v1/blocks/latest"))
        click.echo(json.dumps(latest, separators=(",", ":")) if as_json
                   else event_line(latest))
        return
    follower = Follower(client.urls_by_shard[shard], as_json, count, retries)
    try:
        follower.run()
    except KeyboardInterrupt:
        click.echo(f"events: stopped after {follower.printed} blocks", err=True)
