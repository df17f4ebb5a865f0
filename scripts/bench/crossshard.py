"""``shardnet bench crossshard``: cross-shard finality beside intra-shard commit latency.

Starts the default topology (2 shards x 4 validators) as local processes, or uses
``--testnet``, and sends a paced stream of transfers from both shards: a share of
them to accounts of the other shard (``--cross``), the rest local. One node of each
shard is watched through ``/v1/events``: a transaction is committed when a block of
its shard lists it, and a cross-shard one is finalized when a block of the
destination lists its receipt among the inbound origins. Latencies are from the
client's submission, measured on one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.table import Table

from consensus.kernel.codec import encode
from consensus.kernel.crypto import KeyPair
from scripts.bench.common import (
    local_testnet,
    machine_line,
    report,
    result_table,
    watch_blocks,
)
from scripts.cli.testnet.emulation import emulation_param
from scripts.cli.testnet.generate import TestnetSpec
from scripts.cli.testnet.layout import NodeEntry, TestnetDir
from scripts.cli.testnet.processes import running_pid
from sharding.accounts import derive_account, shard_of
from sharding.tx import Transfer, TxBody, sign_tx, tx_hash

CHAIN_ID = "shardnet-local"
SHARDS = 2
Stream = list[tuple[int, bool, bytes, str]]  # (shard, crosses, raw tx, tx hash)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..1)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]


def sign_stream(txs: int, senders_per_shard: int, cross: float, rng: random.Random
                ) -> Stream:
    """``txs`` transfers alternating between the shards' senders: (shard, crosses, raw,
    hash). Each sender's nonces ascend in stream order."""
    accounts: dict[int, list[KeyPair]] = {s: [] for s in range(SHARDS)}
    index = 0
    while min(len(a) for a in accounts.values()) < senders_per_shard * 2:
        key = derive_account("shardnet", index)
        accounts[shard_of(key.public_key, SHARDS)].append(key)
        index += 1
    nonces: dict[bytes, int] = {}
    stream = []
    for i in range(txs):
        shard = i % SHARDS
        sender = accounts[shard][(i // SHARDS) % senders_per_shard]
        crosses = rng.random() < cross
        pool = accounts[1 - shard] if crosses else accounts[shard][senders_per_shard:]
        recipient = pool[rng.randrange(len(pool))]
        nonce = nonces.get(sender.public_key, 0)
        nonces[sender.public_key] = nonce + 1
        tx = sign_tx(sender, TxBody(CHAIN_ID, sender.public_key, nonce,
                                    Transfer(recipient.public_key, 0, 1 + i % 7)))
        stream.append((shard, crosses, encode(tx), tx_hash(tx).hex()))
    return stream


@dataclass
class Seen:
    """When each transaction was submitted, committed on its shard and (crossing ones)
    finalized on the destination: ``time.perf_counter()`` of this process."""

    submitted: dict[str, float] = field(default_factory=dict)
    committed: dict[str, float] = field(default_factory=dict)
    finalized: dict[str, float] = field(default_factory=dict)


async def run_stream(urls: dict[int, list[str]], stream: Stream, rate: float,
                     timeout_s: float) -> dict[str, Any]:
    seen = Seen()
    crossing = {digest for _, crosses, _, digest in stream if crosses}
    done = asyncio.Event()

    def on_block(block: dict[str, Any], now: float) -> bool:
        for digest in block["txs"]:
            seen.committed.setdefault(digest, now)
        for origin in block.get("inbound_origins", []):
            if origin in crossing:
                seen.finalized.setdefault(origin, now)
        if len(seen.committed) >= len(stream) and len(seen.finalized) >= len(crossing):
            done.set()
        return False  # both shards' watchers run until the end

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        watchers = [asyncio.ensure_future(watch_blocks(session, urls[s][2], on_block))
                    for s in range(SHARDS)]
        await asyncio.sleep(0.3)  # let the event streams attach before the first commit
        offered_s = await send_stream(session, urls, stream, rate, seen.submitted)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout_s)
        for watcher in watchers:
            watcher.cancel()
    return stream_summary(stream, crossing, seen, offered_s)


async def send_stream(session: aiohttp.ClientSession, urls: dict[int, list[str]],
                      stream: Stream, rate: float, submitted: dict[str, float]) -> float:
    """POST the stream paced at ``rate`` (a chunk every 50 ms, one request per shard,
    round-robin over its nodes); the seconds it took. A rejection ends the run."""
    tick_s = 0.05
    per_tick = max(1, round(rate * tick_s))
    started = time.perf_counter()
    for number, start in enumerate(range(0, len(stream), per_tick)):
        await asyncio.sleep(max(0.0, started + number * tick_s - time.perf_counter()))
        chunk = stream[start:start + per_tick]
        for shard in range(SHARDS):
            mine = [(raw, digest) for s, _, raw, digest in chunk if s == shard]
            if not mine:
                continue
            now = time.perf_counter()
            for _, digest in mine:
                submitted[digest] = now
            url = urls[shard][number % len(urls[shard])]
            async with session.post(f"{url}/v1/txs",
                                    json={"txs": [raw.hex() for raw, _ in mine]}) as answer:
                body = await answer.json()
            rejected = [r for r in body.get("results", [body]) if not r.get("accepted")]
            if rejected:
                raise click.ClickException(f"rejected: {rejected[0]}")
    return time.perf_counter() - started


def stream_summary(stream: Stream, crossing: set[str], seen: Seen, offered_s: float
                   ) -> dict[str, Any]:
    submitted, committed, finalized = seen.submitted, seen.committed, seen.finalized
    local = sorted(committed[d] - submitted[d] for _, c, _, d in stream
                   if not c and d in committed)
    source = sorted(committed[d] - submitted[d] for d in crossing if d in committed)
    final = sorted(finalized[d] - submitted[d] for d in crossing if d in finalized)

    def ms(values: list[float], q: float) -> float:
        return round(1000 * percentile(values, q), 1)

    return {
        "txs": len(stream), "offered_tps": round(len(stream) / offered_s, 1),
        "committed": len(committed), "cross_shard": len(crossing), "finalized": len(final),
        "local_commit_p50_ms": ms(local, 0.5), "local_commit_p99_ms": ms(local, 0.99),
        "cross_commit_p50_ms": ms(source, 0.5), "cross_commit_p99_ms": ms(source, 0.99),
        "cross_final_p50_ms": ms(final, 0.5), "cross_final_p99_ms": ms(final, 0.99),
    }


def explain_failure(root: Path, nodes: list[NodeEntry], error: Exception) -> str:
    """One line for a run that lost a node: which node is gone and its last log line."""
    testnet = TestnetDir(root)
    for node in nodes:
        if running_pid(testnet, node.name) is None:
            lines = testnet.log(node.name).read_text(errors="replace").splitlines()
            last = lines[-1] if lines else "(empty log)"
            return f"node {node.name} exited during the run; its last log line: {last[:400]}"
    return f"a node did not answer: {error}"


def run_once(stream: Stream, rate: float, base_port: int, latency_ms: int = 0
             ) -> dict[str, Any]:
    """The stream on a fresh 2 x 4 testnet of local processes, stopped after; with
    ``latency_ms``, each node adds that one-way delay to its p2p traffic (userspace
    network emulation, as ``testnet init --latency``)."""
    spec = TestnetSpec(shards=SHARDS, validators=4, accounts=1000, base_port=base_port,
                       net_mode="userspace" if latency_ms else "off",
                       net_latency_ms=latency_ms)
    with local_testnet(spec) as (root, nodes):
        urls = {s: [n.api_url for n in nodes if n.shard == s] for s in range(SHARDS)}
        try:
            return asyncio.run(run_stream(urls, stream, rate, timeout_s=60))
        except aiohttp.ClientError as exc:
            raise click.ClickException(explain_failure(root, nodes, exc)) from None


def make_table(summary: dict[str, Any]) -> Table:
    median = summary["median"]
    rows = [(label, median[f"{prefix}_p50_ms"], median[f"{prefix}_p99_ms"])
            for label, prefix in (("local: submit -> commit", "local_commit"),
                                  ("cross-shard: submit -> commit on source", "cross_commit"),
                                  ("cross-shard: submit -> finalized", "cross_final"))]
    title = (f"shardnet bench crossshard: 2 x 4, {summary['rate']:g} tx/s offered, "
             f"{summary['cross']:.0%} cross-shard"
             + (f", +{summary['latency_ms']} ms one-way" if summary.get("latency_ms") else "")
             + f" (medians of {summary['runs']} runs)")
    return result_table(title, ("latency", "p50 ms", "p99 ms"), rows, left=1)


@click.command("crossshard")
@click.option("--rate", type=float, default=200.0, show_default=True,
              help="Offered load in tx/s over both shards.")
@click.option("--duration", "duration_s", type=float, default=15.0, show_default=True)
@click.option("--cross", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of transfers to the other shard.")
@click.option("--senders", default=100, show_default=True, help="Senders per shard.")
@click.option("--runs", default=3, show_default=True, help="Runs (fresh testnet each).")
@click.option("--base-port", default=27700, show_default=True)
@click.option("--out", type=click.Path(path_type=Path),
              default=Path("bench-results/crossshard.json"), show_default=True)
@click.option("--quick", is_flag=True, help="One run of 5 s.")
@click.option("--latency", default=None, callback=emulation_param,
              help="Emulate separate machines: a one-way delay each node adds to its p2p "
              "traffic, e.g. 20ms (as `testnet init --latency`).")
def bench_crossshard(rate: float, duration_s: float, cross: float, senders: int, runs: int,
                     base_port: int, out: Path, quick: bool, latency: int | None) -> None:
    """2 x 4 local testnet: cross-shard finality beside intra-shard commit latency."""
    if quick:
        runs, duration_s = 1, 5.0
    console = Console()
    stream = sign_stream(int(rate * duration_s), senders, cross, random.Random(7))
    rows = []
    for run in range(runs):
        row = run_once(stream, rate, base_port, latency or 0)
        row["run"] = run
        rows.append(row)
        console.print(f"run {run}: local p99 {row['local_commit_p99_ms']} ms, cross-shard "
                      f"final p99 {row['cross_final_p99_ms']} ms, "
                      f"{row['finalized']}/{row['cross_shard']} finalized")
    keys = [k for k in rows[0] if k.endswith("_ms")]
    median = {k: statistics.median(r[k] for r in rows) for k in keys}
    summary = {"machine": machine_line(),
               "topology": "2 shards x 4 validators, local processes", "rate": rate,
               "duration_s": duration_s, "cross": cross, "runs": runs,
               "latency_ms": latency or 0, "median": median,
               "rows": rows}
    report(console, [make_table(summary)], out, summary)
