"""The run: pace, sign, submit, watch blocks, drain. The only module that awaits.

Open loop (``--rate``): every tick, the arrivals the schedule has made due are
drawn from the workload, given nonces, signed (worker processes) and queued per
shard; up to ``requests_per_shard_max`` POSTs per shard are in flight, each of at
most ``batch_txs_max`` transactions (msgpack). Closed loop (``--concurrency N``):
N users each send one transaction and wait for its commit.

A POST that fails (connection refused or reset, timeout, 5xx without results)
marks its node down for a while and goes to another node of the shard; 503 +
Retry-After resubmits the refused transactions after the delay. Nothing is dropped
silently: every failure is counted by reason, every transaction ends committed,
rejected with a reason, or listed as lost.

Completion comes from ``/v1/events`` on one node per shard (another on failure),
with blocks read back by height after a reconnect; stragglers are asked once, at
the end, with ``GET /v1/txs/{hash}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from scripts.cli.load.accounts import RESYNC_REASONS, NonceBook, Universe
from scripts.cli.load.rate import Arrivals, RateSchedule
from scripts.cli.load.signer import Signed, Signer
from scripts.cli.load.stats import Timeline
from scripts.cli.load.targets import Network, NodeTarget, TargetError
from scripts.cli.load.tracker import Tracker, TxRecord
from scripts.cli.load.workload import Intent, Workload

MSGPACK = "application/msgpack"
BUSY_REASONS = frozenset({"mempool_full", "sender_full"})
NODE_DOWN_S = (0.5, 5.0)  # first and largest cool-down of a node that failed a request
RETRY_AFTER_MAX_S = 10.0
ATTEMPTS_MAX = 30  # per transaction: then it is rejected "unreachable" by the generator
STRAGGLERS_ASKED_MAX = 5_000
STATUS_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class RunConfig:
    schedule: RateSchedule | None  # open loop; None: closed loop
    concurrency: int = 0  # closed loop users
    poisson: bool = False
    duration_s: float = 10.0
    max_txs: int | None = None
    drain_s: float = 30.0  # after sending, wait at most this long for outcomes
    tick_s: float = 0.02
    batch_txs_max: int = 500
    requests_per_shard_max: int = 4
    backlog_s: float = 5.0  # open loop: arrivals queued beyond this many seconds are skipped
    http_timeout_s: float = 10.0
    rng_seed: int = 1


@dataclass(slots=True)
class NodeState:
    target: NodeTarget
    down_until: float = 0.0
    failures: int = 0
    up: bool | None = None  # from the status poller
    status: dict[str, Any] | None = None


@dataclass(slots=True)
class Entry:
    signed: Signed
    attempt: int = 0
    # A previous attempt may have reached a node (connection lost, timeout, node died):
    # "already there" answers then mean in flight, not rejected.
    uncertain: bool = False


@dataclass(slots=True)
class RunState:
    """What the live view and the report read while the run goes."""

    started: float = 0.0
    phase: str = "starting"
    send_done_s: float | None = None
    ended_s: float | None = None
    offered: int = 0
    skipped: int = 0  # arrivals not queued: the backlog was full
    errors: Counter[str] = field(default_factory=Counter)  # per request failure reason
    retries: int = 0
    busy_backoffs: int = 0
    resubmitted: int = 0  # accepted by a node that then stopped answering
    markers: list[dict[str, Any]] = field(default_factory=list)  # view changes, restarts
    start_heights: dict[int, int] = field(default_factory=dict)

    def elapsed(self) -> float:
        return time.monotonic() - self.started if self.started else 0.0


class EventsBusy(Exception):
    """``/v1/events`` refused with 503: the node asks us to come back later."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"events busy, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


def _retry_after_s(header: str | None) -> float:
    """A Retry-After in seconds, bounded; 1 s when absent or not a number."""
    try:
        value = float(header) if header is not None else 1.0
    except ValueError:
        value = 1.0
    return min(RETRY_AFTER_MAX_S, max(0.2, value)) if value == value else 1.0


class Engine:
    def __init__(self, network: Network, universe: Universe, workload: Workload,
                 signer: Signer, config: RunConfig, *,
                 on_tick: Callable[[Engine], None] | None = None) -> None:
        self.network = network
        self.universe = universe
        self.workload = workload
        self.signer = signer
        self.config = config
        self.on_tick = on_tick
        self.nonces = NonceBook()
        self.tracker = Tracker()
        self.timeline = Timeline()
        self.state = RunState()
        self.nodes = {n.name: NodeState(n) for n in network.nodes}
        self._rr: Counter[int] = Counter()
        self._backlog: dict[int, deque[Entry]] = {s: deque() for s in range(network.num_shards)}
        self._delayed: list[tuple[float, int, Entry]] = []
        self._active: Counter[int] = Counter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._resyncing: set[bytes] = set()
        self._last_height: dict[int, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._sent_count = 0
        self._signed: dict[str, Signed] = {}
        self._send_end_s = config.duration_s  # end_sending() brings it forward

    # -- time ------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.state.started

    # -- set-up ----------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the engine is not running")
        return self._session

    async def _get(self, url: str, timeout_s: float = 3.0) -> Any:
        async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            if r.status >= 400:
                raise aiohttp.ClientResponseError(r.request_info, (), status=r.status,
                                                  message=(await r.text())[:200])
            return await r.json(content_type=None)

    async def _get_on_shard(self, shard: int, path: str) -> Any:
        """GET ``path`` from the first node of ``shard`` that answers."""
        last: Exception | None = None
        for node in self._shard_order(shard):
            try:
                return await self._get(f"{node.target.url}{path}")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = exc
        raise TargetError(f"no node of shard {shard} answers {path.split('?')[0]}: "
                          f"{_reason(last) if last else 'no node'}")

    async def prepare(self) -> None:
        """Nonces and funds of every sender, the shards' heights: before the clock."""
        sem = asyncio.Semaphore(16)

        async def read(position: int) -> None:
            sender = self.universe.senders[position]
            async with sem:
                answer = await self._get_on_shard(sender.shard,
                                                  f"/v1/accounts/{sender.address.hex()}")
            balances = answer.get("balances") or {}
            if not any(int(v) > 0 for v in balances.values()):
                raise TargetError(
                    f"account {sender.index} of seed {self.universe.seed!r} has no funds on "
                    f"shard {sender.shard}: wrong --seed or --accounts for this network?")
            self.nonces.set(sender.address, int(answer["nonce"]))

        await asyncio.gather(*(read(i) for i in range(len(self.universe.senders))))
        for shard in range(self.network.num_shards):
            status = await self._get_on_shard(shard, "/v1/status")
            if status.get("chain_id") != self.network.chain_id:
                raise TargetError(f"shard {shard} answers for chain {status.get('chain_id')!r}"
                                  f", expected {self.network.chain_id!r}")
            self.state.start_heights[shard] = int(status["height"])
            self._last_height[shard] = int(status["height"])
        await self.signer.warm_up()

    # -- the run ---------------------------------------------------------------------

    async def run(self, settle: Callable[[], Awaitable[None]] | None = None) -> None:
        """Prepare, send, drain; then ``settle`` (the end-of-run audit's wait for
        quiescence: blocks are still watched meanwhile), then ask the stragglers."""
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            self._session = session
            try:
                await self.prepare()
                self.state.started = time.monotonic()
                background = [asyncio.ensure_future(self._watch(s))
                              for s in range(self.network.num_shards)]
                background.append(asyncio.ensure_future(self._poll_statuses()))
                try:
                    self.state.phase = "sending"
                    if self.config.schedule is not None:
                        await self._open_loop(self.config.schedule)
                    else:
                        await self._closed_loop()
                    self.state.send_done_s = self.now()
                    self.state.phase = "draining"
                    await self._drain()
                    if settle is not None:
                        self.state.phase = "audit"
                        await settle()
                    self.state.phase = "stragglers"
                    await self._ask_stragglers()
                finally:
                    for task in [*background, *self._tasks]:
                        task.cancel()
                    await asyncio.gather(*background, *self._tasks, return_exceptions=True)
                    self.state.ended_s = self.now()
                    self.state.phase = "done"
            finally:
                self._session = None

    def end_sending(self) -> None:
        """End the sending phase now, before ``duration_s`` (bounded by it): no new
        arrivals; what was generated is still sent, then the run drains as usual."""
        self._send_end_s = min(self._send_end_s, self.now())

    def _wanted_more(self, sent: int) -> bool:
        return self.config.max_txs is None or sent < self.config.max_txs

    async def _open_loop(self, schedule: RateSchedule) -> None:
        arrivals = Arrivals(schedule, poisson=self.config.poisson,
                            rng=random.Random(self.config.rng_seed * 7919 + 1))
        peak_tps = max(max(stage.start_tps, stage.end_tps) for stage in schedule.stages)
        backlog_max = max(1_000, int(self.config.backlog_s * peak_tps))
        generated = 0
        while True:
            end_s = self._send_end_s
            t = min(self.now(), end_s)
            due = arrivals.due(t)
            if self.config.max_txs is not None:
                due = min(due, self.config.max_txs - generated)
            self.state.offered += due
            self.timeline.at(t).offered += due
            room = max(0, backlog_max - sum(len(q) for q in self._backlog.values()))
            take = min(due, room)
            self.state.skipped += due - take
            if take:
                await self._generate(take)
                generated += take
            self._flush()
            self._tick()
            if t >= end_s or not self._wanted_more(generated):
                break
            await asyncio.sleep(self.config.tick_s)
        while any(self._backlog.values()) or self._delayed or any(self._active.values()):
            self._flush()
            self._tick()
            if self.now() > self._send_end_s + self.config.drain_s:
                break
            await asyncio.sleep(self.config.tick_s)

    async def _generate(self, count: int) -> list[Signed]:
        batch: list[tuple[Intent, int]] = []
        for _ in range(count):
            intent = self.workload.next()
            sender = self.universe.senders[intent.sender]
            batch.append((intent, self.nonces.take(sender.address)))
        signed = await self.signer.sign(batch)
        for item in signed:
            intent = item.intent
            self.tracker.add(TxRecord(item.hash, intent.seq, intent.src_shard, intent.dst_shard,
                                      intent.kind, intent.inbound_hops,
                                      self.universe.senders[intent.sender].address, item.nonce))
            self._signed[item.hash] = item
            self._backlog[intent.src_shard].append(Entry(item))
        return signed

    async def _closed_loop(self) -> None:
        generated = 0

        async def user() -> None:
            nonlocal generated
            while self.now() < self._send_end_s and self._wanted_more(generated):
                generated += 1
                self.state.offered += 1
                self.timeline.at(self.now()).offered += 1
                (signed,) = await self._generate(1)
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._waiters[signed.hash] = waiter
                self._flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, self.config.http_timeout_s * 3)
                self._waiters.pop(signed.hash, None)

        users = [asyncio.ensure_future(user()) for _ in range(self.config.concurrency)]
        try:
            while not all(u.done() for u in users):
                self._flush()
                self._tick()
                await asyncio.sleep(self.config.tick_s)
        finally:
            for u in users:
                u.cancel()
            await asyncio.gather(*users, return_exceptions=True)

    async def _drain(self) -> None:
        deadline = self.now() + self.config.drain_s
        while self.tracker.waiting() and self.now() < deadline:
            self._flush()
            self._tick()
            await asyncio.sleep(0.1)

    def _tick(self) -> None:
        if self.on_tick is not None:
            self.on_tick(self)

    # -- submitting ------------------------------------------------------------------

    def _shard_order(self, shard: int) -> list[NodeState]:
        """The shard's nodes, healthy ones first, rotating."""
        nodes = [self.nodes[n.name] for n in self.network.shard_nodes(shard)]
        self._rr[shard] += 1
        k = self._rr[shard] % max(1, len(nodes))
        rotated = nodes[k:] + nodes[:k]
        now = time.monotonic()
        return sorted(rotated, key=lambda n: n.down_until > now)

    def _flush(self) -> None:
        now = self.now()
        if self._delayed:
            ready = [d for d in self._delayed if d[0] <= now]
            self._delayed = [d for d in self._delayed if d[0] > now]
            for _, shard, entry in sorted(ready, key=lambda d: d[2].signed.nonce):
                self._backlog[shard].appendleft(entry)
        for shard, queue in self._backlog.items():
            while queue and self._active[shard] < self.config.requests_per_shard_max:
                node = self._shard_order(shard)[0]
                if node.down_until > time.monotonic():
                    break  # every node of the shard is cooling down
                batch = [queue.popleft() for _ in range(min(len(queue),
                                                            self.config.batch_txs_max))]
                self._active[shard] += 1
                task = asyncio.ensure_future(self._post(shard, node, batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _post(self, shard: int, node: NodeState, batch: list[Entry]) -> None:
        t = self.now()
        bucket = self.timeline.at(t)
        for entry in batch:
            if entry.attempt == 0:
                self.tracker.on_submitted(entry.signed.hash, t)
                bucket.sent += 1
                self._sent_count += 1
        body = msgspec.msgpack.encode([e.signed.raw for e in batch])
        try:
            async with self.session.post(
                    f"{node.target.url}/v1/txs", data=body, headers={"Content-Type": MSGPACK},
                    timeout=aiohttp.ClientTimeout(total=self.config.http_timeout_s)) as answer:
                status = answer.status
                retry_after = answer.headers.get("Retry-After")
                payload = await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._node_failed(node, _reason(exc))
            self._requeue(shard, batch, 0.0, uncertain=True)
            return
        finally:
            self._active[shard] -= 1
        results = payload.get("results") if isinstance(payload, dict) else None
        if results is None and isinstance(payload, dict) and "accepted" in payload:
            results = [payload]  # the single-transaction answer
        if not isinstance(results, list) or len(results) != len(batch):
            self._node_failed(node, f"http_{status}")
            self._requeue(shard, batch, 0.0, uncertain=True)
            return
        node.failures = 0
        busy: list[Entry] = []
        for entry, result in zip(batch, results, strict=True):
            digest = entry.signed.hash
            if result.get("accepted"):
                self.tracker.on_accepted(digest, node.target.name)
                continue
            reason = str(result.get("error") or "unknown")
            if reason in BUSY_REASONS:
                busy.append(entry)
                continue
            if self.tracker.on_rejected(digest, reason, resubmission=entry.uncertain):
                self._rejected(entry, reason)
        if busy:
            self.state.busy_backoffs += 1
            self._requeue(shard, busy, _retry_after_s(retry_after))

    def _requeue(self, shard: int, entries: list[Entry], delay_s: float, *,
                 uncertain: bool = False) -> None:
        bucket = self.timeline.at(self.now())
        again: list[Entry] = []
        for entry in entries:
            entry.attempt += 1
            entry.uncertain = entry.uncertain or uncertain
            self.state.retries += 1
            bucket.retries += 1
            if entry.attempt > ATTEMPTS_MAX:
                if self.tracker.on_rejected(entry.signed.hash, "unreachable"):
                    self._rejected(entry, "unreachable")
                continue
            if delay_s > 0:
                self._delayed.append((self.now() + delay_s, shard, entry))
            else:
                again.append(entry)
        self._backlog[shard].extendleft(reversed(again))  # first in line, in their order

    def _rejected(self, entry: Entry, reason: str) -> None:
        self.timeline.at(self.now()).rejected += 1
        record = self.tracker.records[entry.signed.hash]
        self.nonces.give_back(record.sender, record.nonce)
        if reason in RESYNC_REASONS and record.sender not in self._resyncing:
            self._resyncing.add(record.sender)
            task = asyncio.ensure_future(self._resync(record.shard, record.sender))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._wake(entry.signed.hash)

    async def _resync(self, shard: int, sender: bytes) -> None:
        try:
            answer = await self._get_on_shard(shard, f"/v1/accounts/{sender.hex()}")
            self.nonces.resync(sender, int(answer["nonce"]))
        except (TargetError, KeyError, ValueError) as exc:
            self.state.errors[f"resync_{_reason(exc)[:40]}"] += 1
        finally:
            self._resyncing.discard(sender)

    def _node_failed(self, node: NodeState, reason: str) -> None:
        self.state.errors[reason] += 1
        self.timeline.at(self.now()).errors += 1
        node.failures += 1
        cool = min(NODE_DOWN_S[1], NODE_DOWN_S[0] * 2 ** (node.failures - 1))
        node.down_until = time.monotonic() + cool
        self._resubmit_accepted_by(node)

    def _resubmit_accepted_by(self, node: NodeState) -> None:
        """A node stopped answering: what it accepted and its shard has not committed
        goes to another node (an "already there" answer counts as in flight)."""
        records = self.tracker.accepted_by(node.target.name)
        if not records:
            return
        self.state.resubmitted += len(records)
        for record in records:
            record.node = None
        self._requeue(records[0].shard, [Entry(self._signed[r.hash], attempt=1)
                                         for r in records], 0.0, uncertain=True)

    def _wake(self, digest: str) -> None:
        waiter = self._waiters.pop(digest, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- watching --------------------------------------------------------------------

    def _on_block(self, event: dict[str, Any]) -> None:
        t = self.now()
        shard = int(event["shard"])
        self._last_height[shard] = max(self._last_height.get(shard, 0), int(event["height"]))
        bucket = self.timeline.at(t)
        for change in self.tracker.on_block(event, t):
            record = change.record
            if record.submitted_s is None:
                continue
            if change.what == "committed":
                ms = 1000 * (t - record.submitted_s)
                bucket.committed += 1
                bucket.committed_by_shard[record.shard] = \
                    bucket.committed_by_shard.get(record.shard, 0) + 1
                bucket.commit_ms.append(ms)
                bucket.commit_ms_by_shard.setdefault(record.shard, []).append(ms)
                self._wake(record.hash)
            if record.finalized_s is not None and (change.what == "finalized" or
                                                   record.hops_expected == 0):
                bucket.finalized += 1
                if record.hops_expected:
                    bucket.finality_ms.append(1000 * (record.finalized_s - record.submitted_s))

    async def _watch(self, shard: int) -> None:
        """Follow one node of ``shard``'s block events; on any failure, another node,
        after reading back the blocks missed meanwhile."""
        while True:
            pause = 0.2
            for node in self._shard_order(shard):
                try:
                    await self._follow(shard, node)
                except TimeoutError:
                    continue  # no block for a while (idle, or a hung node): reconnect
                except EventsBusy as exc:
                    # The node's subscriber cap (503 + Retry-After): come back when told,
                    # not every 0.2 s (another node of the shard may still take us).
                    self.state.errors["events_http_503"] += 1
                    pause = max(pause, exc.retry_after_s)
                except (aiohttp.ClientError, ValueError, KeyError) as exc:
                    self.state.errors[f"events_{_reason(exc)}"] += 1
            await asyncio.sleep(pause)

    async def _follow(self, shard: int, node: NodeState) -> None:
        url = node.target.url
        timeout = aiohttp.ClientTimeout(total=None, connect=2.0, sock_read=5.0)
        async with self.session.get(f"{url}/v1/events", timeout=timeout) as response:
            if response.status == 503:
                raise EventsBusy(_retry_after_s(response.headers.get("Retry-After")))
            if response.status != 200:
                raise aiohttp.ClientError(f"http_{response.status}")
            status = await self._get(f"{url}/v1/status")
            await self._backfill(shard, url, int(status["height"]))
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                height = int(event["height"])
                if height > self._last_height.get(shard, 0) + 1:
                    await self._backfill(shard, url, height - 1)
                self._on_block(event)

    async def _backfill(self, shard: int, url: str, upto: int) -> None:
        for height in range(self._last_height.get(shard, 0) + 1, upto + 1):
            block = await self._get(f"{url}/v1/blocks/{height}")
            self._on_block(block)

    async def _poll_statuses(self) -> None:
        """Every node's status each second: down/up transitions and view changes are
        markers on the report's time axis; heights and mempools feed the live view."""
        async def one(node: NodeState) -> None:
            try:
                status = await self._get(f"{node.target.url}/v1/status", timeout_s=1.0)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                if node.up:
                    self._mark("node_down", node.target.name)
                    self._resubmit_accepted_by(node)
                node.up, node.status = False, None
                return
            if node.up is False:
                self._mark("node_up", node.target.name)
                node.down_until = 0.0
            before = node.status
            if before is not None and int(status.get("view_changes", 0)) > int(
                    before.get("view_changes", 0)):
                self._mark("view_change", node.target.name, view=status.get("view"))
            node.up, node.status = True, status

        while True:
            await asyncio.gather(*(one(n) for n in self.nodes.values()))
            await asyncio.sleep(STATUS_INTERVAL_S)

    def _mark(self, kind: str, node: str, **extra: Any) -> None:
        self.state.markers.append({"t_s": round(self.now(), 2), "kind": kind, "node": node,
                                   **extra})

    # -- the end ---------------------------------------------------------------------

    async def _ask_stragglers(self) -> None:
        waiting = self.tracker.waiting()[:STRAGGLERS_ASKED_MAX]
        sem = asyncio.Semaphore(16)

        async def ask(record: TxRecord) -> None:
            async with sem:
                try:
                    found = await self._get_on_shard(record.shard, f"/v1/txs/{record.hash}")
                except TargetError:
                    found = None
            self.tracker.on_late(record.hash, found)

        await asyncio.gather(*(ask(r) for r in waiting))


def _reason(exc: BaseException) -> str:
    """A short, stable reason for a request failure."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection_refused"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "disconnected"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"http_{exc.status}"
    if isinstance(exc, aiohttp.ClientOSError):
        return "connection_reset"
    if isinstance(exc, ValueError):
        return "bad_answer"
    return type(exc).__name__.lower()
