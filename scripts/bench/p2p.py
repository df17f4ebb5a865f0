"""``shardnet bench p2p``: what the p2p layer carries on this machine.

* stream: 200-byte messages from this process to a peer process over one persistent
  stream (joined writes), counted and order-checked by the receiver: messages/s;
* round trip: an echo over the message streams, and request/response (a new stream per
  request), one at a time: p50/p99 latency;
* gossip: 4 (``--gossip-nodes``) peer processes in a full mesh, each publishing 1 KB
  messages at a fixed rate: share of the expected deliveries that arrived, and latency.

Every figure is the median of ``--runs`` runs (fresh processes each run). Prints a
table and writes JSON.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import structlog
from rich.console import Console
from rich.table import Table

from node.p2p.host import P2PHost
from scripts.bench.common import cpu_seconds, machine_facts, report, result_table
from scripts.bench.p2p_peer import ECHO_CHANNEL, SINK_CHANNEL
from scripts.bench.p2p_procs import Child, child_spec, make_configs
from scripts.cli.params import out_option

SEQ = struct.Struct(">Q")
LOG_DIR = Path(tempfile.gettempdir()) / "shardnet-bench-p2p"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _start_pair() -> tuple[P2PHost, Child, str]:
    ours, theirs = make_configs(2)
    host = P2PHost(ours)
    await host.start()
    child, _ = await Child.peer(child_spec(theirs, name="sink"), LOG_DIR / "sink.log")
    deadline = time.monotonic() + 20
    while theirs.peer_id not in host.connected_peers():
        if time.monotonic() > deadline:
            raise click.ClickException("peer process did not connect")
        await asyncio.sleep(0.02)
    return host, child, theirs.peer_id


async def stream_run(messages: int, size: int, rtt_samples: int) -> dict[str, Any]:
    host, child, peer = await _start_pair()
    try:
        echoes: asyncio.Queue[bytes] = asyncio.Queue()
        host.on_message(lambda _peer, _channel, data: echoes.put_nowait(data))
        # Throughput: keep the send queue fed, never over its bound.
        padding = b"\x00" * (size - SEQ.size)
        start = time.time()
        high = host.config.send_queue_frames_max // 2
        for seq in range(messages):
            if seq % 1000 == 0 and host.queued(peer) > high:
                await host.wait_sendable(peer, high // 2, 30)
            if not host.send_nowait(peer, SINK_CHANNEL, SEQ.pack(seq) + padding):
                raise click.ClickException("send queue refused a message")
        report: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while sum(report.get("received", {}).values()) < messages:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
            report = await child.command(cmd="sink_report")
        received = sum(report.get("received", {}).values())
        elapsed = report["last_at"] - start if received else float("nan")
        sender = host.stats_snapshot()
        return {
            "messages": messages,
            "received": received,
            "out_of_order": report.get("out_of_order"),
            "msgs_per_s": received / elapsed if received else 0.0,
            "frames_per_write_avg": sender["frames_per_write_avg"],
            "sender_drops": sender["drops"],
            **await _round_trips(host, peer, echoes, padding, rtt_samples),
        }
    finally:
        await child.close()
        await host.stop()


async def _round_trips(host: P2PHost, peer: str, echoes: asyncio.Queue[bytes], padding: bytes,
                       samples: int) -> dict[str, float]:
    """Round trips, one at a time: echoes over the message stream, then requests (a new
    stream each)."""
    echo_ms: list[float] = []
    for i in range(samples):
        t0 = time.perf_counter()
        host.send_nowait(peer, ECHO_CHANNEL, SEQ.pack(i) + padding)
        await echoes.get()
        echo_ms.append((time.perf_counter() - t0) * 1000)
    request_ms: list[float] = []
    for i in range(max(1, samples // 4)):
        t0 = time.perf_counter()
        await host.request(peer, SEQ.pack(i))
        request_ms.append((time.perf_counter() - t0) * 1000)
    return {
        "echo_rtt_ms_p50": percentile(echo_ms, 0.50),
        "echo_rtt_ms_p99": percentile(echo_ms, 0.99),
        "request_rtt_ms_p50": percentile(request_ms, 0.50),
        "request_rtt_ms_p99": percentile(request_ms, 0.99),
    }


async def gossip_run(
    nodes: int, rate: float, seconds: float, size: int, degree: int
) -> dict[str, Any]:
    configs = make_configs(
        nodes,
        gossip_topics=("bench",),
        gossip_degree=degree,
        gossip_degree_low=max(1, degree * 2 // 3),
        gossip_degree_high=degree * 2,
    )
    children: list[Child] = []
    try:
        for i, config in enumerate(configs):
            child, _ = await Child.peer(
                child_spec(config, name=f"g{i}"), stderr_path=LOG_DIR / f"gossip-{i}.log"
            )
            children.append(child)
        await asyncio.gather(
            *(c.command(cmd="wait_peers", count=nodes - 1, wait_s=30) for c in children)
        )
        await asyncio.sleep(3.0)  # a few gossip heartbeats: let the mesh form
        return await _publish(children, rate, seconds, size)
    finally:
        for child in children:
            await child.close()


async def _publish(children: list[Child], rate: float, seconds: float, size: int
                   ) -> dict[str, Any]:
    """Every peer publishes ``rate`` messages/s for ``seconds``: deliveries, latency, CPU."""
    nodes = len(children)
    count = int(rate * seconds)
    t0 = time.monotonic()
    cpu0 = sum(cpu_seconds(c.proc.pid) for c in children)
    await asyncio.gather(
        *(
            c.command(timeout=seconds * 3 + 30, cmd="publish", topic="bench", count=count,
                      rate=rate, size=size)
            for c in children
        )
    )
    expected = nodes * (nodes - 1) * count
    delivered, reports = await _wait_deliveries(children, expected, t0 + seconds + 30)
    cpu_s = sum(cpu_seconds(c.proc.pid) for c in children) - cpu0
    latencies = [ms for r in reports for ms in r["latency_ms"]]
    stats = [await c.command(cmd="stats") for c in children]
    return {
        "nodes": nodes,
        "offered_msgs_per_s": rate * nodes,
        "published": count * nodes,
        "expected_deliveries": expected,
        "delivered": delivered,
        "delivery_rate": delivered / expected if expected else 0.0,
        "loss": 1 - delivered / expected if expected else 0.0,
        "duplicates": sum(r["duplicates"] for r in reports),
        "latency_ms_p50": percentile(latencies, 0.50),
        "latency_ms_p99": percentile(latencies, 0.99),
        "cpu_ms_per_published_msg": cpu_s * 1000 / (count * nodes) if count else 0.0,
        "gossip_drops": {
            k: v for s in stats for k, v in s["drops"].items() if k.startswith("gossip")
        },
    }


async def _wait_deliveries(children: list[Child], expected: int, deadline: float
                           ) -> tuple[int, list[dict[str, Any]]]:
    """Poll the peers' gossip reports until every delivery arrived, nothing arrived for
    2 s, or ``deadline`` (monotonic) passed: (deliveries, last reports)."""
    delivered, last, stable_since = 0, -1, time.monotonic()
    reports: list[dict[str, Any]] = []
    while time.monotonic() - stable_since < 2.0 and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        reports = [await c.command(cmd="gossip_report") for c in children]
        delivered = sum(sum(r["received"].values()) for r in reports)
        if delivered != last:
            last, stable_since = delivered, time.monotonic()
        if delivered >= expected:
            break
    return delivered, reports


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(run[key]) for run in runs)


async def bench(
    runs: int, messages: int, size: int, rtt_samples: int, nodes: int, rate: float,
    seconds: float, degree: int,
) -> dict[str, Any]:
    stream_runs = [await stream_run(messages, size, rtt_samples) for _ in range(runs)]
    gossip_runs = [await gossip_run(nodes, rate, seconds, 1024, degree) for _ in range(runs)]
    keys_stream = ("msgs_per_s", "frames_per_write_avg", "echo_rtt_ms_p50", "echo_rtt_ms_p99",
                   "request_rtt_ms_p50", "request_rtt_ms_p99")
    keys_gossip = ("delivery_rate", "loss", "latency_ms_p50", "latency_ms_p99",
                   "cpu_ms_per_published_msg")
    return {
        "machine": machine_facts(),
        "params": {"runs": runs, "messages": messages, "size": size,
                   "rtt_samples": rtt_samples, "gossip_nodes": nodes, "gossip_degree": degree,
                   "gossip_rate_per_node": rate,
                   "gossip_seconds": seconds, "gossip_size": 1024},
        "median": {**{f"stream_{k}": _median(stream_runs, k) for k in keys_stream},
                   **{f"gossip_{k}": _median(gossip_runs, k) for k in keys_gossip}},
        "stream_runs": stream_runs,
        "gossip_runs": gossip_runs,
    }


def _table(result: dict[str, Any]) -> Table:
    med = result["median"]
    p = result["params"]
    req_p50, req_p99 = med["stream_request_rtt_ms_p50"], med["stream_request_rtt_ms_p99"]
    rows = [
        (f"stream msgs/s ({p['size']} B, 2 processes)", f"{med['stream_msgs_per_s']:,.0f}"),
        ("frames joined per write", f"{med['stream_frames_per_write_avg']:,.0f}"),
        ("echo round trip p50 / p99 (ms)",
         f"{med['stream_echo_rtt_ms_p50']:.2f} / {med['stream_echo_rtt_ms_p99']:.2f}"),
        ("request round trip p50 / p99 (ms)", f"{req_p50:.2f} / {req_p99:.2f}"),
        (f"gossip delivery, {p['gossip_nodes']} nodes x {p['gossip_rate_per_node']:g}"
         " msg/s of 1 KB", f"{med['gossip_delivery_rate']:.2%}"),
        ("gossip CPU per published message, all nodes (ms)",
         f"{med['gossip_cpu_ms_per_published_msg']:.1f}"),
        ("gossip latency p50 / p99 (ms)",
         f"{med['gossip_latency_ms_p50']:.1f} / {med['gossip_latency_ms_p99']:.1f}"),
    ]
    title = f"p2p (median of {p['runs']} runs, {result['machine']['cpus']} cpus)"
    return result_table(title, ("measure", "value"), rows, left=1)


@click.command("p2p")
@click.option("--runs", default=3, show_default=True, help="Runs; figures are medians.")
@click.option("--messages", default=200_000, show_default=True, help="Stream messages a run.")
@click.option("--size", default=200, show_default=True, help="Stream message bytes.")
@click.option("--rtt-samples", default=1000, show_default=True, help="Echo round trips a run.")
@click.option("--gossip-nodes", default=4, show_default=True, help="Gossip peer processes.")
@click.option("--gossip-degree", default=3, show_default=True,
              help="Gossipsub mesh degree D (D_low = 2D/3, D_high = 2D).")
@click.option("--gossip-rate", default=10.0, show_default=True, help="Publishes/s per node.")
@click.option("--gossip-seconds", default=10.0, show_default=True, help="Publishing time a run.")
@out_option("JSON output file.", name="out_path", default="bench-results/p2p.json")
def bench_p2p(runs: int, messages: int, size: int, rtt_samples: int, gossip_nodes: int,
              gossip_degree: int, gossip_rate: float, gossip_seconds: float,
              out_path: Path) -> None:
    """Stream msgs/s, round-trip latency and gossip delivery of the p2p layer."""
    if size < SEQ.size:
        raise click.BadParameter(f"must be at least {SEQ.size}", param_hint="--size")
    # Entry point: quiet the libraries so the table is readable.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # logs ERROR per failed dial
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    if gossip_nodes < 2:
        raise click.BadParameter("must be at least 2", param_hint="--gossip-nodes")
    result = asyncio.run(
        bench(runs, messages, size, rtt_samples, gossip_nodes, gossip_rate, gossip_seconds,
              gossip_degree)
    )
    report(Console(), [_table(result)], out_path, result, sort_keys=True)
