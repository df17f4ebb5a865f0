"""``shardnet audit``: the invariant of docs/PROTOCOL.md section 6 over a running testnet.

For every asset: balances + pool reserves over all shards + amounts in flight =
genesis supply. Each shard reports its totals and its channel counters at
``GET /v1/audit`` (O(assets + channels)); in flight on A->B is A's cumulative
``sent`` to B minus B's cumulative ``received`` from A, per asset, and
``out_seq`` minus ``in_cursor`` in receipts. One node per shard is read (the
first of the manifest that answers). The nodes come from the testnet folder
(``--testnet``, default ``testnets/default``) or, with ``--url`` / ``SHARDNET_URL``
and no ``--testnet``, from ``GET /v1/network`` as in ``shardnet load`` (the block
interval is then the default one, for ``--wait``).

Shards are read one after another, so a read while blocks commit is not one
consistent cut. ``--wait SECONDS`` first waits (bounded) for quiescence: every
node's mempool empty, no receipt in flight on any channel, and no node's height
changing for ``--quiet-intervals`` block intervals; at quiescence anything still
in flight is a failure too. Exit codes (scripts/cli/exits.py): 0 ok, 1 something does
not add up or not quiescent within ``--wait``, 2 usage (no such testnet folder), 3 no
node of a shard answers.

The computation is pure (``compute_report``, ``track_heights``,
``get_still_moving``); the command around it only fetches and prints.
"""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec

from consensus.kernel.errors import ShardnetError
from scripts.cli.client import ApiFailure, call
from scripts.cli.exits import CheckFailed, Unreachable, UsageFailure
from scripts.cli.load.targets import discover_if_asked
from scripts.cli.params import json_option, testnet_option, urls_option
from scripts.cli.testnet.layout import Manifest, TestnetDir
from sharding.audit import (
    ChannelAudit,
    compute_totals_audit,
    get_shard_totals_from_json,
)
from sharding.genesis import Genesis, load_genesis, total_supply

DEFAULT_BLOCK_INTERVAL_MS = 200
DEFAULT_QUIET_INTERVALS = 3
HTTP_TIMEOUT_S = 2.0
POLL_INTERVAL_MS_MIN = 20
POLL_INTERVAL_MS_MAX = 100
MOVING_LISTED_MAX = 4  # per kind, in the one-line "not quiescent" message


class NotQuiescent(CheckFailed):
    """``--wait``: the network did not become quiescent in time (exit 1)."""


# ---------------------------------------------------------------------------
# Pure: the report and the quiescence predicate


def compute_report(
    audits: Mapping[int, Mapping[str, Any]],
    supply: Mapping[int, int],
    asset_names: Mapping[int, str],
    *,
    require_idle: bool = False,
) -> dict[str, Any]:
    """The audit of the shards' ``GET /v1/audit`` answers (``audits[shard]``) as a
    JSON-ready report. With ``require_idle`` (at quiescence), anything in flight
    fails it too. Raises ``ValueError``/``KeyError`` on a malformed answer."""
    totals = {shard: get_shard_totals_from_json(report) for shard, report in audits.items()}
    for shard, shard_totals in totals.items():
        if shard_totals.shard != shard:
            raise ValueError(f"shard {shard}'s node reports shard {shard_totals.shard}")
    audit = compute_totals_audit(totals, supply)

    def name(asset: int) -> str:
        return asset_names.get(asset, str(asset))

    problems = [f"asset {name(row.asset)}: balances + reserves + in flight = {row.total:,}, "
                f"supply {row.supply:,}" for row in audit.assets if not row.ok]
    problems += [f"channel {c.src}->{c.dst}: destination applied more than the source sent"
                 for c in audit.channels if not c.ok]
    problems += list(audit.problems)
    if require_idle:
        problems += [f"channel {c.src}->{c.dst}: {_in_flight_text(c, name)} in flight at "
                     "quiescence" for c in audit.channels if c.ok and not c.idle]
    assets = sorted(supply)
    return {
        "ok": not problems,
        "heights": {str(shard): totals[shard].height for shard in sorted(totals)},
        "receipts_in_flight": audit.in_flight_receipts,
        "assets": [{"asset": name(row.asset), "balances": row.balances,
                    "reserves": row.reserves, "in_flight": row.in_flight,
                    "supply": row.supply, "ok": row.ok} for row in audit.assets],
        "channels": [{"src": c.src, "dst": c.dst, "receipts_in_flight": c.receipts,
                      "in_flight": {name(a): c.amounts.get(a, 0)
                                    for a in sorted(set(assets) | set(c.amounts))},
                      "ok": c.ok} for c in audit.channels],
        "problems": problems,
    }


def _in_flight_text(channel: ChannelAudit, name: Any) -> str:
    amounts = ", ".join(f"{amount:,} {name(asset)}"
                        for asset, amount in sorted(channel.amounts.items()) if amount)
    text = f"{channel.receipts} receipt{'' if channel.receipts == 1 else 's'}"
    return f"{text} ({amounts})" if amounts else text


@dataclass(frozen=True, slots=True)
class Seen:
    """A node's height and since when (ms, monotonic) it has not changed."""

    height: int
    since_ms: int


def track_heights(seen: Mapping[str, Seen], heights: Mapping[str, int], now_ms: int
                  ) -> dict[str, Seen]:
    """``seen`` updated with the heights just read (node -> height): a node whose
    height changed, or that is new, is stable only from ``now_ms``."""
    tracked = dict(seen)
    for node, height in heights.items():
        before = tracked.get(node)
        if before is None or before.height != height:
            tracked[node] = Seen(height, now_ms)
    return tracked


def get_still_moving(
    statuses: Mapping[str, Mapping[str, Any] | None],
    report: Mapping[str, Any],
    seen: Mapping[str, Seen],
    now_ms: int,
    quiet_ms: int,
) -> list[str]:
    """What keeps the testnet from quiescence ([] = quiescent): a node whose mempool
    is not empty (``statuses``: node -> ``GET /v1/status``, None for a node that did
    not answer, which is left out), a channel with receipts in flight (``report``
    from ``compute_report``), a shard where a node's height changed less than
    ``quiet_ms`` ago (``seen`` from ``track_heights``)."""
    moving: list[str] = []
    busy = [f"{node} mempool {status['mempool']}" for node, status in sorted(statuses.items())
            if status is not None and int(status["mempool"]) > 0]
    moving += _capped(busy)
    flying = [f"channel {c['src']}->{c['dst']} {c['receipts_in_flight']} receipts in flight"
              for c in report["channels"] if int(c["receipts_in_flight"]) > 0]
    moving += _capped(flying)
    recent: dict[int, tuple[int, str, int]] = {}  # shard -> (since, node, height)
    for node, status in sorted(statuses.items()):
        tracked = seen.get(node)
        if status is None or tracked is None or now_ms - tracked.since_ms >= quiet_ms:
            continue
        shard = int(status["shard"])
        if shard not in recent or tracked.since_ms > recent[shard][0]:
            recent[shard] = (tracked.since_ms, node, tracked.height)
    moving += _capped([f"shard {shard} height moved {now_ms - since} ms ago ({node} at "
                       f"{height})" for shard, (since, node, height) in sorted(recent.items())])
    return moving


def _capped(items: Sequence[str]) -> list[str]:
    if len(items) <= MOVING_LISTED_MAX:
        return list(items)
    return [*items[:MOVING_LISTED_MAX], f"and {len(items) - MOVING_LISTED_MAX} more"]


# ---------------------------------------------------------------------------
# The shell: fetch, wait, print


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    shard: int
    url: str


def fetch(url: str, timeout_s: float) -> Any:
    """One GET of the node API (a module attribute, so tests can stand in for it)."""
    return call("GET", url, timeout_s=timeout_s)


FETCH_ERRORS = (ApiFailure, OSError, ValueError, KeyError, TypeError)


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def read_audits(nodes: Sequence[Node], shards: int, timeout_s: float
                ) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """``GET /v1/audit`` of one node per shard: the first (in manifest order) that
    answers with that shard's totals. Raises ``ClickException`` for a shard where
    none does."""
    audits: dict[int, dict[str, Any]] = {}
    sources: dict[int, str] = {}
    for shard in range(shards):
        errors = []
        for node in (n for n in nodes if n.shard == shard):
            try:
                answer = fetch(f"{node.url}/v1/audit", timeout_s)
                if get_shard_totals_from_json(answer).shard != shard:
                    raise ValueError(f"reports shard {answer['shard']}")
            except FETCH_ERRORS as exc:
                errors.append(f"{node.name}: {_describe(exc)}")
                continue
            audits[shard], sources[shard] = answer, node.name
            break
        else:
            raise Unreachable(
                f"no node of shard {shard} answers /v1/audit ({'; '.join(errors) or 'none'})")
    return audits, sources


def read_statuses(nodes: Sequence[Node], timeout_s: float
                  ) -> dict[str, dict[str, Any] | None]:
    """``GET /v1/status`` of every node, concurrently; None for a node that does not
    answer."""

    def one(node: Node) -> dict[str, Any] | None:
        try:
            status = fetch(f"{node.url}/v1/status", timeout_s)
            int(status["height"]), int(status["mempool"]), int(status["shard"])
        except FETCH_ERRORS:
            return None
        return dict(status)

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(nodes)))) as pool:
        return dict(zip((n.name for n in nodes), pool.map(one, nodes), strict=True))


def get_block_interval_ms(testnet: TestnetDir, manifest: Manifest) -> int:
    """The block interval of the testnet's node configs (the largest), or the default."""
    from node.config import load_config

    found = []
    for node in manifest.nodes:
        try:
            found.append(load_config(testnet.home(node.name)).consensus.block_interval_ms)
        except ShardnetError:
            continue
    return max(found, default=DEFAULT_BLOCK_INTERVAL_MS)


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def wait_for_quiescence(
    nodes: Sequence[Node], genesis: Genesis, wait_s: float, quiet_ms: int, poll_ms: int
) -> tuple[dict[int, dict[str, Any]], dict[int, str], int]:
    """Poll statuses and audits until ``get_still_moving`` is empty; return the audits
    read at quiescence, their nodes and the time waited (ms). Raises ``NotQuiescent``
    at the deadline."""
    started = monotonic_ms()
    deadline = started + int(wait_s * 1000)
    supply, names = total_supply(genesis), _asset_names(genesis)
    seen: dict[str, Seen] = {}
    while True:
        timeout_s = max(0.2, min(HTTP_TIMEOUT_S, (deadline - monotonic_ms()) / 1000))
        statuses = read_statuses(nodes, timeout_s)
        audits, sources = read_audits(nodes, genesis.num_shards, timeout_s)
        now = monotonic_ms()
        seen = track_heights(seen, {node: int(status["height"])
                                    for node, status in statuses.items()
                                    if status is not None}, now)
        seen = track_heights(seen, {sources[shard]: int(audits[shard]["height"])
                                    for shard in audits}, now)
        report = _report(audits, supply, names)
        moving = get_still_moving(statuses, report, seen, now, quiet_ms)
        if not moving:
            return audits, sources, now - started
        if now >= deadline:
            raise NotQuiescent(f"not quiescent after {wait_s:g} s: {'; '.join(moving)}")
        time.sleep(min(poll_ms, max(0, deadline - now)) / 1000)


def _asset_names(genesis: Genesis) -> dict[int, str]:
    return {asset: name for name, asset in genesis.assets.items()}


def _report(audits: Mapping[int, Mapping[str, Any]], supply: Mapping[int, int],
            names: Mapping[int, str], *, require_idle: bool = False) -> dict[str, Any]:
    try:
        return compute_report(audits, supply, names, require_idle=require_idle)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"malformed /v1/audit answer: {_describe(exc)}") from None


def _load(root: Path) -> tuple[TestnetDir, Manifest, Genesis]:
    testnet = TestnetDir(root)
    try:
        manifest = testnet.load_manifest()
    except FileNotFoundError as exc:
        raise UsageFailure(str(exc)) from None
    except (OSError, msgspec.DecodeError) as exc:
        raise UsageFailure(f"{testnet.manifest_path}: {exc}") from None
    try:
        genesis = load_genesis(testnet.genesis_path)
    except ShardnetError as exc:
        raise UsageFailure(f"{testnet.genesis_path}: {exc.detail}") from None
    return testnet, manifest, genesis


def print_report(report: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    table = Table(title=f"audit at heights {report['heights']}: "
                        f"{report['receipts_in_flight']} receipts in flight")
    for column in ("asset", "balances", "reserves", "in flight", "supply", "ok"):
        table.add_column(column, justify="left" if column == "asset" else "right")
    for row in report["assets"]:
        table.add_row(row["asset"], f"{row['balances']:,}", f"{row['reserves']:,}",
                      f"{row['in_flight']:,}", f"{row['supply']:,}",
                      "yes" if row["ok"] else "NO")
    console.print(table)
    if report["channels"]:
        assets = [row["asset"] for row in report["assets"]]
        channels = Table(title="in flight per channel")
        for column in ("channel", "receipts", *assets, "ok"):
            channels.add_column(column, justify="left" if column == "channel" else "right")
        for c in report["channels"]:
            channels.add_row(f"{c['src']}->{c['dst']}", f"{c['receipts_in_flight']:,}",
                             *(f"{c['in_flight'].get(a, 0):,}" for a in assets),
                             "yes" if c["ok"] else "NO")
        console.print(channels)
    quiescence = report.get("quiescence")
    if quiescence is not None:
        console.print(f"quiescent after {quiescence['waited_ms'] / 1000:.1f} s (every mempool "
                      f"empty, no receipt in flight, heights still for "
                      f"{quiescence['quiet_intervals']} x {quiescence['block_interval_ms']} ms)")
    for problem in report["problems"]:
        console.print(f"[red]{problem}[/]")
    if not report["ok"] and quiescence is None:
        console.print("read without --wait: if the testnet was busy, shards may have been read "
                      "at inconsistent heights (try --wait 30)")


@click.command("audit")
@testnet_option(default=None)
@urls_option()
@json_option("Print the report as JSON on stdout.")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS",
              help="First wait (at most SECONDS) for quiescence; exit 1 if it does not come.")
@click.option("--quiet-intervals", type=click.IntRange(min=1),
              default=DEFAULT_QUIET_INTERVALS, show_default=True,
              help="With --wait: block intervals without a height change that count as quiet.")
def audit(root: Path | None, urls: tuple[str, ...], as_json: bool, wait_s: float | None,
          quiet_intervals: int) -> None:
    """Check that nothing was lost: supply = balances + reserves + in flight, per asset."""
    network = discover_if_asked(root, urls)
    if network is not None:
        genesis = network.genesis
        nodes = [Node(n.name, n.shard, n.url) for n in network.nodes]
    else:
        testnet, manifest, genesis = _load(root or Path("testnets/default"))
        nodes = [Node(n.name, n.shard, n.api_url.rstrip("/")) for n in manifest.nodes]
    quiescence = None
    if wait_s is None:
        audits, sources = read_audits(nodes, genesis.num_shards, HTTP_TIMEOUT_S)
    else:
        interval_ms = (DEFAULT_BLOCK_INTERVAL_MS if network is not None
                       else get_block_interval_ms(testnet, manifest))
        quiet_ms = quiet_intervals * interval_ms
        if wait_s * 1000 < quiet_ms:
            raise UsageFailure(
                f"--wait {wait_s:g} s is shorter than {quiet_intervals} block intervals of "
                f"{interval_ms} ms: quiescence could never be seen")
        poll_ms = max(POLL_INTERVAL_MS_MIN, min(POLL_INTERVAL_MS_MAX, interval_ms // 2))
        audits, sources, waited_ms = wait_for_quiescence(nodes, genesis, wait_s, quiet_ms,
                                                         poll_ms)
        quiescence = {"waited_ms": waited_ms, "quiet_intervals": quiet_intervals,
                      "block_interval_ms": interval_ms}
    report = _report(audits, total_supply(genesis), _asset_names(genesis),
                     require_idle=quiescence is not None)
    report["sources"] = {str(shard): sources[shard] for shard in sorted(sources)}
    report["quiescence"] = quiescence
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(report)
    if not report["ok"]:
        raise SystemExit(1)
