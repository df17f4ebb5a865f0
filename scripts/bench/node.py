"""``shardnet bench node``: committed TPS and submit-to-commit latency of a real shard.

Starts a local 1-shard testnet of 4 validator processes (or uses ``--testnet``),
pre-signs transfers from many accounts, submits them over HTTP in batches of msgpack
(``application/msgpack``, as ``shardnet load`` does; honouring 503 Retry-After), and
watches commits on one node's ``/v1/events``.
Ed25519 verification speed is measured in the same run, for the crypto ceiling
``cores / (4 x verify time)`` of a 4-validator shard: with the verify path the nodes use
(``VERIFY_BACKEND``, named in the output; ``SHARDNET_VERIFY_BACKEND=cryptography``
forces OpenSSL in this process and the nodes) and, when that is the compiled extension,
with OpenSSL's too, so the ratio is given against both ceilings.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import click
import msgspec
from rich.console import Console
from rich.table import Table

from consensus.kernel.codec import encode
from consensus.kernel.crypto import VERIFY_BACKEND, KeyPair
from node.api import MSGPACK
from node.defaults import CONSENSUS_BLOCK_TXS_MAX, CONSENSUS_PIPELINE_DEPTH
from scripts.bench.common import (
    cores,
    cpu_seconds,
    local_testnet,
    machine_line,
    measure_verify_rates,
    report,
    result_table,
    watch_blocks,
)
from scripts.cli.testnet.control import NodeProcesses
from scripts.cli.testnet.generate import TestnetSpec
from scripts.cli.testnet.layout import TestnetDir
from sharding.accounts import derive_account, shard_of
from sharding.tx import Transfer, TxBody, sign_tx, tx_hash

CHAIN_ID = "shardnet-local"
RETRY_AFTER_MAX_S = 1.0


def retry_after_s(header: str | None) -> float:
    """A 503's ``Retry-After`` in seconds, at most ``RETRY_AFTER_MAX_S``; 50 ms when
    absent or not a number."""
    try:
        value = float(header) if header is not None else 0.05
    except ValueError:
        value = 0.05
    return min(RETRY_AFTER_MAX_S, max(0.05, value)) if value == value else 0.05


def sign_load(txs: int, senders: int, num_shards: int) -> tuple[list[bytes], list[str]]:
    keys: list[KeyPair] = []
    index = 0
    while len(keys) < senders:
        key = derive_account("shardnet", index)
        if shard_of(key.public_key, num_shards) == 0:
            keys.append(key)
        index += 1
    raws, hashes = [], []
    for i in range(txs):
        sender, recipient = keys[i % senders], keys[(i + 1) % senders]
        tx = sign_tx(sender, TxBody(CHAIN_ID, sender.public_key, i // senders,
                                    Transfer(recipient.public_key, 0, 1)))
        raws.append(encode(tx))
        hashes.append(tx_hash(tx).hex())
    return raws, hashes


async def run_load(urls: list[str], raws: list[bytes], hashes: list[str], batch: int,
                   timeout_s: float, rate: float = 0.0) -> dict[str, Any]:
    """Submit everything (as fast as the nodes accept it, or paced at ``rate`` tx/s)
    and time each transaction from its submission to its block's commit event."""
    submitted_at: dict[str, float] = {}
    committed_at: dict[str, float] = {}
    done = asyncio.Event()

    def on_block(block: dict[str, Any], now: float) -> bool:
        for digest in block["txs"]:
            committed_at.setdefault(digest, now)
        if len(committed_at) >= len(hashes):
            done.set()
        return done.is_set()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        watcher = asyncio.ensure_future(watch_blocks(session, urls[0], on_block))
        await asyncio.sleep(0.2)  # let the event stream attach before the first commit
        chunks = [(raws[i:i + batch], hashes[i:i + batch]) for i in range(0, len(raws), batch)]
        workers = 4
        started = time.perf_counter()

        def slot(worker: int) -> Callable[[int], float] | None:
            """Open-loop pacing: when chunk k of ``worker`` leaves."""
            if rate <= 0:
                return None
            return lambda number: started + (number * workers + worker) * batch / rate

        retries = await asyncio.gather(*(
            submit_chunks(session, urls[w % len(urls)], chunks[w::workers], submitted_at,
                          slot(w)) for w in range(workers)))
        submit_s = time.perf_counter() - started
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout_s)
        watcher.cancel()
    return load_summary(hashes, submitted_at, committed_at, sum(retries), submit_s)


async def submit_chunks(session: aiohttp.ClientSession, url: str,
                        chunks: list[tuple[list[bytes], list[str]]],
                        submitted_at: dict[str, float],
                        slot: Callable[[int], float] | None) -> int:
    """POST each chunk (at its ``slot``, if paced), again for what a full mempool
    refused (503), after the answer's ``Retry-After`` (``RETRY_AFTER_MAX_S`` at most;
    a refusal is cheap since the node refuses what cannot fit before checking it, and
    retrying every 50 ms made 967,500 retries of a 60,000-transaction burst); the count
    of such retries."""
    retries = 0
    for number, (chunk_raws, chunk_hashes) in enumerate(chunks):
        if slot is not None:
            await asyncio.sleep(max(0.0, slot(number) - time.perf_counter()))
        pending = list(zip(chunk_raws, chunk_hashes, strict=True))
        while pending:
            now = time.perf_counter()
            for _, digest in pending:
                submitted_at.setdefault(digest, now)
            # msgpack, as a real client (``shardnet load``) sends: the node reads the
            # raw transactions without JSON or hex (JSON hex before 2026-12-01 22:20 UTC).
            body = msgspec.msgpack.encode([raw for raw, _ in pending])
            async with session.post(f"{url}/v1/txs", data=body,
                                    headers={"Content-Type": MSGPACK}) as response:
                answer = await response.json(content_type=None)
                retry_after = response.headers.get("Retry-After")
            results = answer.get("results", [answer])
            again = [item for item, result in zip(pending, results, strict=True)
                     if not result.get("accepted") and result.get("error") in
                     ("mempool_full", "sender_full")]
            if again:
                retries += len(again)
                await asyncio.sleep(retry_after_s(retry_after))
            pending = again
    return retries


def load_summary(hashes: list[str], submitted_at: dict[str, float],
                 committed_at: dict[str, float], retries: int, submit_s: float
                 ) -> dict[str, Any]:
    latencies = sorted(committed_at[h] - submitted_at[h] for h in hashes if h in committed_at)
    if not latencies:
        return {"committed": 0}
    first = min(submitted_at.values())
    last = max(committed_at.values())
    return {
        "txs": len(hashes), "committed": len(latencies), "retries_503": retries,
        "submit_s": round(submit_s, 2), "duration_s": round(last - first, 2),
        "tps": round(len(latencies) / (last - first), 1),
        "latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "latency_p99_ms": round(1000 * latencies[min(len(latencies) - 1,
                                                     int(len(latencies) * 0.99))], 1),
    }


def node_metrics(url: str) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    wanted: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith(("shardnet_p2p_", "shardnet_messages_dropped",
                            "shardnet_view_changes", "shardnet_blocks_committed")):
            wanted[name] = float(value)
    return wanted


def run_once(raws: list[bytes], hashes: list[str], senders: int, batch: int, block_txs: int,
             rate: float, pipeline_depth: int = CONSENSUS_PIPELINE_DEPTH,
             base_port: int = 27600) -> dict[str, Any]:
    """One load run on a fresh 1 x 4 testnet of local processes, stopped after."""
    spec = TestnetSpec(shards=1, validators=4, accounts=max(senders * 3, 1000),
                       base_port=base_port)

    def edit(text: str) -> str:
        text = text.replace(f"block_txs_max = {CONSENSUS_BLOCK_TXS_MAX}",
                            f"block_txs_max = {block_txs}")
        return text.replace(f"pipeline_depth = {CONSENSUS_PIPELINE_DEPTH}",
                            f"pipeline_depth = {pipeline_depth}")

    with local_testnet(spec, edit) as (root, nodes):
        urls = [node.api_url for node in nodes]
        processes = NodeProcesses(TestnetDir(root))
        pids = [pid for node in nodes if (pid := processes.pid(node.name)) is not None]
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        row = asyncio.run(run_load(urls, raws, hashes, batch, timeout_s=120, rate=rate))
        # The 4 nodes' CPU (user + system) over the load: per transaction, a figure that
        # holds on a shared machine where the TPS swings with others' work.
        nodes_cpu_s = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        row["nodes_cpu_s"] = round(nodes_cpu_s, 2)
        if row.get("committed"):
            row["nodes_cpu_ms_per_tx"] = round(1000 * nodes_cpu_s / row["committed"], 3)
        row["p2p"] = node_metrics(urls[1])
        return row


def summarize(rows: list[dict[str, Any]], params: dict[str, Any],
              verify_before: dict[str, float], verify_after: dict[str, float]) -> dict[str, Any]:
    """``verify_before``/``after``: ``measure_verify_rates``; the faster of the two sets
    each backend's ceiling."""
    rates = {name: max(verify_before[name], verify_after[name]) for name in verify_before}
    ceilings = {name: cores() * rate / 4 for name, rate in rates.items()}
    good = [r for r in rows if r.get("committed")]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in good) if good else 0

    tps = median("tps")
    return {
        "machine": machine_line(), **params,
        "verify_backend": VERIFY_BACKEND,
        "verify_per_s": round(rates[VERIFY_BACKEND]),
        "crypto_ceiling_tps": round(ceilings[VERIFY_BACKEND]),
        "verify_per_s_before": round(verify_before[VERIFY_BACKEND]),
        "verify_per_s_after": round(verify_after[VERIFY_BACKEND]),
        # per backend: one core's verify/s, the ceiling, the median TPS's share of it
        "ceilings": {name: {"verify_per_s": round(rates[name]),
                            "crypto_ceiling_tps": round(ceilings[name]),
                            "tps_median_share": round(tps / ceilings[name], 3)}
                     for name in rates},
        "tps_median": tps,
        "latency_p50_ms_median": median("latency_p50_ms"),
        "latency_p99_ms_median": median("latency_p99_ms"),
        "nodes_cpu_ms_per_tx_median": median("nodes_cpu_ms_per_tx"),
        "rows": rows,
    }


def make_table(summary: dict[str, Any]) -> Table:
    rows: list[tuple[object, ...]] = [
        (row["run"], row.get("txs", summary["txs_per_run"]), row.get("committed"),
         row.get("tps"), row.get("latency_p50_ms"), row.get("latency_p99_ms"),
         row.get("retries_503"), row.get("nodes_cpu_ms_per_tx"))
        for row in summary["rows"]]
    rows.append(("median", "", "", summary["tps_median"], summary["latency_p50_ms_median"],
                 summary["latency_p99_ms_median"], "", summary["nodes_cpu_ms_per_tx_median"]))
    return result_table("shardnet bench node: 1 shard x 4 validators, local processes",
                        ("run", "txs", "committed", "TPS", "p50 ms", "p99 ms", "503 retries",
                         "nodes CPU ms/tx"),
                        rows)


def rates_line(rates: dict[str, float]) -> str:
    return ", ".join(f"{name} {rate:,.0f}/s" for name, rate in rates.items())


@click.command("node")
@click.option("--txs", default=10_000, show_default=True, help="Transactions per run.")
@click.option("--senders", default=500, show_default=True, help="Distinct sender accounts.")
@click.option("--batch", default=500, show_default=True, help="Transactions per HTTP request.")
@click.option("--runs", default=3, show_default=True, help="Runs (fresh testnet each).")
@click.option("--block-txs", default=CONSENSUS_BLOCK_TXS_MAX, show_default=True,
              help="consensus.block_txs_max")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results/node.json"),
              show_default=True)
@click.option("--rate", type=float, default=0.0, show_default=True,
              help="Offered load in tx/s (0: as fast as the nodes accept).")
@click.option("--quick", is_flag=True, help="One run of 2,000 transactions.")
@click.option("--pipeline-depth", type=click.IntRange(1, 16), default=CONSENSUS_PIPELINE_DEPTH,
              show_default=True, help="consensus.pipeline_depth (heights in flight).")
@click.option("--base-port", type=click.IntRange(1024, 65000), default=27600, show_default=True,
              help="First port of the local testnet (API and p2p ports follow it).")
def bench_node(txs: int, senders: int, batch: int, runs: int, block_txs: int, out: Path,
               rate: float, quick: bool, pipeline_depth: int, base_port: int) -> None:
    """Single-shard, 4-validator committed TPS and submit-to-commit latency."""
    if quick:
        txs, runs = 2_000, 1
    console = Console()
    verify_before = measure_verify_rates()
    console.print(f"Ed25519 verify, one core: {rates_line(verify_before)} (measured again "
                  f"after the runs; the faster of the two sets the ceiling); the nodes "
                  f"verify with {VERIFY_BACKEND}")
    raws, hashes = sign_load(txs, senders, 1)
    rows: list[dict[str, Any]] = []
    for run in range(runs):
        row = run_once(raws, hashes, senders, batch, block_txs, rate, pipeline_depth, base_port)
        row["run"] = run
        rows.append(row)
        console.print(f"run {run}: {row.get('tps')} TPS, p50 {row.get('latency_p50_ms')} ms, "
                      f"p99 {row.get('latency_p99_ms')} ms, committed {row.get('committed')}")
    # On a shared VM one 1 s measurement can land in a slow spell: take the faster of
    # two (the harder ceiling to reach).
    verify_after = measure_verify_rates()
    params = {"txs_per_run": txs, "senders": senders, "batch": batch, "runs": runs,
              "offered_rate": rate or "unbounded", "pipeline_depth": pipeline_depth}
    summary = summarize(rows, params, verify_before, verify_after)
    console.print(f"Ed25519 verify after the runs: {rates_line(verify_after)}")
    console.print(make_table(summary))
    for name, ceiling in summary["ceilings"].items():
        used = " (the nodes' path)" if name == VERIFY_BACKEND else ""
        console.print(f"crypto ceiling of a 4-validator shard on {cores()} cores with "
                      f"{name}{used}: {ceiling['crypto_ceiling_tps']:,} TPS; median is "
                      f"{100 * ceiling['tps_median_share']:.0f}% of it")
    report(console, [], out, summary)
