"""The dashboard's picture of the network, kept live from the nodes.

One task per node polls ``/v1/status`` and ``/metrics`` every interval, one more per
node follows its ``/v1/events`` block stream, and a sampler turns the nodes' latest
values into one point per shard per interval, kept for the last ``window_s`` seconds
(``TimeSeries``). A node that does not answer is marked down with the reason, never an
error of the dashboard; its tasks keep trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from scripts.cli.load.targets import Network, NodeTarget
from scripts.dashboard.metrics import MetricsError, NodeMetrics, Rates, parse_metrics, rates
from scripts.dashboard.series import TimeSeries, downsample

# One block event is one line; 2,000 tx hashes and 1,000 inbound origins are ~210 KB.
# aiohttp refuses a line over twice its read buffer.
EVENTS_READ_BUFSIZE = 1 << 20
REQUEST_TIMEOUT_S = 3.0
ANSWER_BYTES_MAX = 8 << 20  # /metrics of a busy node is ~100 KB; a block ~250 KB
EVENTS_READ_TIMEOUT_S = 40.0  # a quiet node sends a keep-alive comment every 15 s
EVENTS_BACKOFF_MAX_S = 10.0
LATEST_BLOCKS = 20  # per shard
TX_SAMPLE = 3  # tx hashes kept per block, for the page's search links


def describe(exc: BaseException) -> str:
    """A short reason for the page: no traceback, no repr."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, MetricsError | json.JSONDecodeError):
        return str(exc)
    return str(exc) or type(exc).__name__


@dataclass
class NodeView:
    """What the dashboard last learnt of one node."""

    target: NodeTarget
    up: bool = False
    error: str | None = "not polled yet"
    status: dict[str, Any] | None = None
    metrics: NodeMetrics | None = None
    scraped_at: float | None = None  # monotonic seconds
    rates: Rates | None = None
    events: str = "not connected"  # "live", or why not

    def as_json(self) -> dict[str, Any]:
        status = self.status or {}
        metrics = self.metrics
        return {
            "name": self.target.name, "shard": self.target.shard, "index": self.target.index,
            "url": self.target.url, "up": self.up, "error": self.error, "events": self.events,
            "height": metrics.height if metrics else None,
            "view": metrics.view if metrics else None,
            "primary": status.get("primary"),
            "is_primary": bool(status) and status.get("primary") == self.target.index,
            "view_changes": int(metrics.view_changes) if metrics else None,
            "mempool": metrics.mempool_txs if metrics else None,
            "peers": metrics.peers if metrics else None,
            "tps": None if self.rates is None else round(self.rates.tps, 1),
            "latency_mean_ms": _round(self.rates.latency_mean_ms if self.rates else None),
            "latency_p99_ms": _round(self.rates.latency_p99_ms if self.rates else None),
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class ShardPoint:
    """One shard at one moment, from the nodes of it that answered."""

    nodes_up: int
    height: int | None = None
    tps: float | None = None
    latency_mean_ms: float | None = None
    latency_p99_ms: float | None = None
    view: int | None = None
    view_changes: int | None = None
    mempool: int | None = None
    peers_min: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"nodes_up": self.nodes_up, "height": self.height, "tps": _round(self.tps),
                "latency_mean_ms": _round(self.latency_mean_ms),
                "latency_p99_ms": _round(self.latency_p99_ms), "view": self.view,
                "view_changes": self.view_changes, "mempool": self.mempool,
                "peers_min": self.peers_min}


def shard_point(nodes: list[NodeView]) -> ShardPoint:
    """The shard's height and view are its most advanced node's; TPS the median of its
    nodes' (a node catching up by sync does not make a spike); latency the mean of their
    means and the worst p99; view changes the most any node started; mempool the
    fullest; peers the fewest (the worst-connected node)."""
    up = [n for n in nodes if n.up and n.metrics is not None]
    if not up:
        return ShardPoint(nodes_up=0)
    metrics = [n.metrics for n in up if n.metrics is not None]
    node_rates = [n.rates for n in up if n.rates is not None]
    means = [r.latency_mean_ms for r in node_rates if r.latency_mean_ms is not None]
    p99s = [r.latency_p99_ms for r in node_rates if r.latency_p99_ms is not None]
    return ShardPoint(
        nodes_up=len(up),
        height=max(m.height for m in metrics),
        tps=statistics.median(r.tps for r in node_rates) if node_rates else None,
        latency_mean_ms=statistics.fmean(means) if means else None,
        latency_p99_ms=max(p99s) if p99s else None,
        view=max(m.view for m in metrics),
        view_changes=int(max(m.view_changes for m in metrics)),
        mempool=max(m.mempool_txs for m in metrics),
        peers_min=min(m.peers for m in metrics),
    )


def block_summary(event: dict[str, Any]) -> dict[str, Any]:
    """The part of a ``/v1/events`` block the page shows; KeyError/TypeError/ValueError
    when the event is not a block."""
    txs, origins = event["txs"], event.get("inbound_origins") or []
    if not isinstance(txs, list) or not isinstance(origins, list):
        raise TypeError("txs or inbound_origins is not a list")
    certificate = event.get("certificate") or {}
    return {
        "shard": int(event["shard"]), "height": int(event["height"]),
        "hash": str(event["hash"]), "time_ms": int(event["time_ms"]),
        "view": int(event.get("view", 0)), "proposer": event.get("proposer"),
        "txs": len(txs), "tx_sample": [str(t) for t in txs[:TX_SAMPLE]],
        # The transactions (of another shard) whose receipts this block applied.
        "origin_sample": [str(o) for o in origins[:TX_SAMPLE]],
        "failed": len(event.get("failed") or []),
        "inbound": int(event.get("inbound_receipts", 0)),
        "signers": len(certificate.get("signers") or []),
    }


class Aggregator:
    """Every node's latest state, each shard's time series and the latest blocks."""

    def __init__(self, network: Network, *, interval_s: float = 1.0, window_s: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        if interval_s <= 0 or window_s < interval_s:
            raise ValueError("need 0 < interval_s <= window_s")
        self.network = network
        self.interval_s = interval_s
        self.window_s = window_s
        self.clock = clock
        self.started_at = clock()
        self.nodes = [NodeView(target) for target in network.nodes]
        max_points = int(window_s / interval_s) + 2
        self.series: dict[int, TimeSeries[ShardPoint]] = {
            shard: TimeSeries(window_s, max_points) for shard in range(network.num_shards)}
        self.blocks: dict[int, OrderedDict[int, dict[str, Any]]] = {
            shard: OrderedDict() for shard in range(network.num_shards)}
        self.bad_events = 0
        self.tick = 0
        self._ticked = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle ----------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                read_bufsize=EVENTS_READ_BUFSIZE,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        return self._session

    async def start(self) -> None:
        """Start following every node (returns at once)."""
        for node in self.nodes:
            self._tasks.append(asyncio.create_task(self._poll_loop(node)))
            self._tasks.append(asyncio.create_task(self._events_loop(node)))
        self._tasks.append(asyncio.create_task(self._sample_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def poll_all(self) -> None:
        """Poll every node once and sample (``--once``)."""
        await asyncio.gather(*(self.poll_node(node) for node in self.nodes))
        self.sample()

    async def wait_tick(self, after: int, timeout_s: float) -> int:
        """The tick number once it passed ``after`` (or as it is after ``timeout_s``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.tick <= after:
                    await self._ticked.wait()
        return self.tick

    # -- polling ---------------------------------------------------------------------

    async def get_json(self, url: str) -> Any:
        """The JSON answer of a 200; ClientResponseError for any other status."""
        return json.loads(await self._get_body(url))

    async def _get_body(self, url: str) -> bytes:
        """A 200's body, at most ``ANSWER_BYTES_MAX`` (a node is not trusted to be small)."""
        async with self.session.get(url) as response:
            if response.status != 200:
                raise aiohttp.ClientResponseError(response.request_info, (),
                                                  status=response.status)
            chunks, size = [], 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > ANSWER_BYTES_MAX:
                    raise ValueError(f"answer larger than {ANSWER_BYTES_MAX} bytes")
                chunks.append(chunk)
        return b"".join(chunks)

    async def poll_node(self, node: NodeView) -> None:
        url = node.target.url
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, text = await asyncio.gather(self.get_json(f"{url}/v1/status"),
                                                    self._get_body(f"{url}/metrics"))
            metrics = parse_metrics(text.decode("utf-8", errors="replace"))
            if not isinstance(status, dict):
                raise ValueError("/v1/status is not an object")
            if status.get("chain_id") != self.network.chain_id:
                raise ValueError(f"on chain {status.get('chain_id')!r}, not "
                                 f"{self.network.chain_id!r}")
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
            node.up, node.error, node.rates = False, describe(exc), None
            return
        now = time.monotonic()
        if node.metrics is not None and node.scraped_at is not None and now > node.scraped_at:
            node.rates = rates(node.metrics, metrics, now - node.scraped_at)
        node.status, node.metrics, node.scraped_at = status, metrics, now
        node.up, node.error = True, None

    async def _poll_loop(self, node: NodeView) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.poll_node(node)
            await asyncio.sleep(max(0.05, self.interval_s - (loop.time() - started)))

    async def _events_loop(self, node: NodeView) -> None:
        backoff = 1.0
        timeout = aiohttp.ClientTimeout(total=None, connect=REQUEST_TIMEOUT_S,
                                        sock_read=EVENTS_READ_TIMEOUT_S)
        while True:
            try:
                async with self.session.get(f"{node.target.url}/v1/events",
                                            timeout=timeout) as response:
                    if response.status != 200:
                        raise aiohttp.ClientResponseError(response.request_info, (),
                                                          status=response.status)
                    node.events, backoff = "live", 1.0
                    async for line in response.content:
                        if line.startswith(b"data: "):
                            self.on_block_event(line[6:])
                node.events = "ended by the node"
            except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
                node.events = describe(exc)
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, EVENTS_BACKOFF_MAX_S)

    def on_block_event(self, data: bytes) -> None:
        """A block from some node's stream; every node of the shard sends it: kept once."""
        try:
            block = block_summary(json.loads(data))
        except (ValueError, KeyError, TypeError, AttributeError):
            self.bad_events += 1
            return
        kept = self.blocks.get(block["shard"])
        if kept is None:
            self.bad_events += 1
            return
        height = block["height"]
        if height in kept or (len(kept) >= LATEST_BLOCKS and height < next(iter(kept))):
            return
        newest = next(reversed(kept)) if kept else None
        kept[height] = block
        if newest is not None and height < newest:
            # Out of order (one node behind another): keep the dict sorted by height.
            for h in sorted(kept):
                kept.move_to_end(h)
        while len(kept) > LATEST_BLOCKS:
            kept.popitem(last=False)

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.sample()

    def sample(self) -> None:
        now = self.clock()
        for shard, series in self.series.items():
            series.append(now, shard_point([n for n in self.nodes if n.target.shard == shard]))
        self.tick += 1
        self._ticked.set()
        self._ticked = asyncio.Event()

    # -- answers -------------------------------------------------------------------

    def snapshot(self, blocks: int = 20) -> dict[str, Any]:
        """Everything the page shows but the charts, as JSON."""
        shards = []
        for shard, series in self.series.items():
            point = series.last() or ShardPoint(nodes_up=0)
            kept = self.blocks[shard]
            shards.append({"shard": shard, "nodes": sum(n.target.shard == shard
                                                        for n in self.nodes),
                           **point.as_json(),
                           "last_block_ms": kept[next(reversed(kept))]["time_ms"]
                           if kept else None})
        latest = sorted((b for kept in self.blocks.values() for b in kept.values()),
                        key=lambda b: (b["time_ms"], b["shard"]), reverse=True)[:blocks]
        return {
            "chain_id": self.network.chain_id, "source": self.network.source,
            "num_shards": self.network.num_shards, "tick": self.tick,
            "time": self.clock(), "started_at": self.started_at,
            "interval_s": self.interval_s, "window_s": self.window_s,
            "nodes_up": sum(n.up for n in self.nodes), "nodes_total": len(self.nodes),
            "shards": shards, "nodes": [n.as_json() for n in self.nodes],
            "blocks": latest, "bad_events": self.bad_events,
        }

    def series_json(self, limit: int | None = None) -> dict[str, Any]:
        """Each shard's points (``t`` in seconds since the epoch), at most ``limit``."""
        out: dict[str, Any] = {}
        for shard, series in self.series.items():
            points = series.points()
            if limit is not None:
                points = downsample(points, limit)
            out[str(shard)] = [{"t": round(t, 3), **p.as_json()} for t, p in points]
        return {"time": self.clock(), "window_s": self.window_s, "shards": out}
