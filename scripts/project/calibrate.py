"""``shardnet project calibrate``: measure the projection's cost inputs on this machine.

See ``scripts/project/costs.py`` for what each figure is. The in-process parts reuse the
benchmarks' code (``bench ledger``, ``bench consensus``); the testnet parts start
testnets of local processes (1 x 4 with ``bench node``'s loader and pre-signed
transfers, a burst and a paced window; 1 x 4 and 2 x 4 at paced rates; 2 x 4 local
against cross-shard) and read every node's process tree CPU (psutil) and
``/metrics``. Re-runnable: ``shardnet project calibrate`` writes the whole costs file
again from this machine (after a change to the node, on a quiet machine).
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import msgspec
import psutil

from consensus.certificate import CommitCertificate, IndexedSignature
from consensus.kernel.codec import encode
from consensus.kernel.crypto import KeyPair, verify_signature
from scripts.bench.common import local_testnet, machine_facts
from scripts.cli.testnet.generate import TestnetSpec
from scripts.cli.testnet.layout import NodeEntry
from scripts.project.costs import COSTS_FORMAT, Costs, MessageCost, PacedCost
from scripts.project.transfers import mixed_route, sign_sequence, sign_transfers
from sharding.block import ReceiptProof
from sharding.merkle import InclusionProof
from sharding.receipts import Receipt
from sharding.tx import Transfer, TxBody, sign_tx

PROOF_DEPTH = 11  # a receipt's Merkle path in a block of ~2,000 receipts
# The paced calibration's offered rates (all shards together), per shard count: where
# the find-max's steps are on this machine (from 500 tx/s up, x1.3 a step; a quiet
# 2 x 4 reached ~1,800 on 2026-12-01): the per-transaction cost falls as blocks grow,
# so calibrating far below the steps overcharges them
PACED_RATES: dict[int, tuple[float, ...]] = {1: (200.0, 500.0, 800.0),
                                              2: (400.0, 1000.0, 1600.0)}
PACED_BLOCKS_PER_S = 5.0  # the node's 200 ms block interval
# The 2 x 4 calibration's mixed window (rate in all, cross-shard share): the lowest paced
# rate with the share of the find-max's cross-shard steps (`bench e2e`: 0 % and 20 %);
# its p99 calibrates the shared model's cross-shard latency term
PACED_CROSS = (400.0, 0.2)


def cpu_per_call_us(call: Any, seconds: float) -> float:
    """Median process CPU µs of ``call()`` over batches of 100 within ``seconds``."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 3:
        started = time.process_time()
        for _ in range(100):
            call()
        samples.append((time.process_time() - started) * 1e4)
    return statistics.median(samples)


def measure_crypto(seconds: float) -> tuple[float, float]:
    """(verify µs, sign µs) of Ed25519 on one core."""
    key = KeyPair.derive("project", 0)
    message = b"x" * 120
    signature = key.sign(message)
    verify = cpu_per_call_us(lambda: verify_signature(key.public_key, message, signature),
                             seconds)
    return verify, cpu_per_call_us(lambda: key.sign(message), seconds / 2)


def measure_ledger(reps: int) -> dict[str, float]:
    """Per-tx CPU µs of the ledger parts (``bench ledger``'s transfers workload)."""
    import tempfile
    from pathlib import Path

    from scripts.bench.ledger import bench_workload

    with tempfile.TemporaryDirectory(prefix="shardnet-project-") as tmp:
        row = asyncio.run(bench_workload("transfers", 0.0, 2000, reps, 10_000, 1, Path(tmp)))
    per_tx = row["per_tx_us"]
    return {part: per_tx[f"{part}_cpu"] for part in
            ("signature", "execution", "state_root", "storage_commit")}


def measure_consensus() -> list[MessageCost]:
    from scripts.bench.consensus import message_cost

    rows = []
    for replicas in (4, 7):
        runs = [message_cost(replicas, True, seed) for seed in range(2)]
        rows.append(MessageCost(replicas, statistics.median(r["median_us"] for r in runs),
                                float(runs[0]["messages_per_commit"])))
    return rows


def wire_sizes() -> dict[str, float]:
    key = KeyPair.derive("project", 1)
    tx = sign_tx(key, TxBody("shardnet-local", key.public_key, 12345,
                             Transfer(KeyPair.derive("project", 2).public_key, 0, 1000)))
    receipt = Receipt(0, 1, 1000, 0, bytes(32), key.public_key, key.public_key, 0, 1000)
    proof = ReceiptProof(0, InclusionProof(1000, 2000, [bytes(32)] * PROOF_DEPTH))
    empty = CommitCertificate(0, 1, 1000, bytes(32), ())
    three = CommitCertificate(0, 1, 1000, bytes(32),
                              tuple(IndexedSignature(i, bytes(64)) for i in range(3)))
    return {"tx_bytes": float(len(encode(tx))),
            "receipt_bytes": float(len(encode(receipt)) + len(encode(proof))),
            "certificate_bytes_per_signer": (len(encode(three)) - len(encode(empty))) / 3}


# -- the testnet part ---------------------------------------------------------------------


def tree_cpu_s(pid: int) -> float:
    """User + system CPU of a process and its children (executor workers)."""
    try:
        process = psutil.Process(pid)
        total = sum(process.cpu_times()[:2])
        for child in process.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                continue
        return float(total)
    except psutil.Error:
        return 0.0


def metrics(url: str) -> dict[str, float]:
    """Blocks committed, receipts applied and p2p bytes sent, from a node's ``/metrics``."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    out = {"blocks": 0.0, "sent_bytes": 0.0, "receipts_applied": 0.0}
    for line in text.splitlines():
        if line.startswith("shardnet_blocks_committed_total"):
            out["blocks"] = float(line.rpartition(" ")[2])
        elif line.startswith("shardnet_receipts_applied_total"):
            out["receipts_applied"] += float(line.rpartition(" ")[2])
        elif line.startswith("shardnet_p2p_bytes_total") and 'direction="out"' in line:
            out["sent_bytes"] += float(line.rpartition(" ")[2])
    return out


@dataclass
class Window:
    wall_s: float
    cpu_s: list[float]  # per node
    txs: int
    blocks: float  # of one node
    sent_bytes: list[float]  # per node
    loader_cpu_s: float


def node_pids(nodes: list[NodeEntry], root: Any) -> list[int]:
    from scripts.cli.testnet.layout import TestnetDir
    from scripts.cli.testnet.processes import running_pid

    testnet = TestnetDir(root)
    pids = [running_pid(testnet, node.name) for node in nodes]
    if any(pid is None for pid in pids):
        raise RuntimeError("a calibration node is not running")
    return [pid for pid in pids if pid is not None]


def measure_window(pids: list[int], urls: list[str], work: Any) -> Window:
    before_cpu = [tree_cpu_s(pid) for pid in pids]
    before = [metrics(url) for url in urls]
    loader_before, started = time.process_time(), time.perf_counter()
    txs = work()
    wall = time.perf_counter() - started
    loader = time.process_time() - loader_before
    after = [metrics(url) for url in urls]
    return Window(wall, [tree_cpu_s(pid) - b for pid, b in zip(pids, before_cpu, strict=True)],
                  txs, after[1]["blocks"] - before[1]["blocks"],
                  [a["sent_bytes"] - b["sent_bytes"] for a, b in zip(after, before, strict=True)],
                  loader)


def fit(idle: Window, loaded: list[Window], validators: int) -> dict[str, float]:
    """Per node: idle CPU share, CPU per tx and per block, by least squares over the
    loaded windows of ``cpu - idle x wall = per_tx x txs + per_block x blocks``."""
    idle_share = sum(idle.cpu_s) / validators / idle.wall_s
    rows = [(w.txs, w.blocks, sum(w.cpu_s) / validators - idle_share * w.wall_s)
            for w in loaded]
    sxx = sum(t * t for t, _, _ in rows)
    sxy = sum(t * b for t, b, _ in rows)
    syy = sum(b * b for _, b, _ in rows)
    sxz = sum(t * z for t, _, z in rows)
    syz = sum(b * z for _, b, z in rows)
    det = sxx * syy - sxy * sxy
    per_tx, per_block = (syy * sxz - sxy * syz) / det, (sxx * syz - sxy * sxz) / det
    if per_block < 0 or per_tx < 0:  # noise: all of it per transaction
        per_block, per_tx = 0.0, sum(z for _, _, z in rows) / sum(t for t, _, _ in rows)
    # bytes: the busiest node (the primary of view 0) by least squares on its own
    bytes_rows = [(w.txs, w.blocks, max(w.sent_bytes)) for w in loaded]
    bxz = sum(t * z for t, _, z in bytes_rows)
    byz = sum(b * z for _, b, z in bytes_rows)
    bytes_tx, bytes_block = (syy * bxz - sxy * byz) / det, (sxx * byz - sxy * bxz) / det
    if bytes_block < 0 or bytes_tx < 0:
        bytes_block, bytes_tx = 0.0, sum(z for _, _, z in bytes_rows) / sum(
            t for t, _, _ in bytes_rows)
    return {"idle_cpu_share": idle_share, "node_us_per_tx": per_tx * 1e6,
            "node_us_per_block": per_block * 1e6, "p2p_bytes_per_tx": bytes_tx,
            "p2p_bytes_per_block": bytes_block}


BURST_TXS = 4000  # the unbounded window: blocks fill (few blocks per transaction)


def window_txs(rate: float, seconds: float) -> int:
    """Transactions of a window: ``rate`` x ``seconds``, or a burst (rate 0: at once)."""
    return int(rate * seconds) if rate > 0 else BURST_TXS


def measure_testnet(base_port: int, rates: tuple[float, ...], seconds: float,
                    idle_s: float, log: Any) -> dict[str, Any]:
    from scripts.bench.node import run_load, sign_load

    senders = 500
    spec = TestnetSpec(shards=1, validators=4, accounts=1500, base_port=base_port)
    total = sum(window_txs(rate, seconds) for rate in rates) + 2000
    raws, hashes = sign_load(total, senders, 1)
    with local_testnet(spec) as (root, nodes):
        urls = [node.api_url for node in nodes]
        pids = node_pids(nodes, root)
        offset = 0

        def load(count: int, rate: float) -> Any:
            def work() -> int:
                nonlocal offset
                chunk = slice(offset, offset + count)
                offset += count
                asyncio.run(run_load(urls, raws[chunk], hashes[chunk], 100, 60.0, rate))
                return count
            return work

        load(1000, 0)()  # warm-up: first blocks, caches, connections, workers
        def rest() -> int:
            time.sleep(idle_s)  # nothing offered: what the nodes spend on their own
            return 0

        idle = measure_window(pids, urls, rest)
        log(f"idle: {sum(idle.cpu_s) / idle.wall_s:.0%} of a core for 4 nodes")
        loaded = []
        for rate in rates:
            window = measure_window(pids, urls, load(window_txs(rate, seconds), rate))
            loaded.append(window)
            what = f"{rate:,.0f} tx/s" if rate else "burst"
            log(f"{what}: {window.txs} txs, {window.blocks:.0f} blocks, "
                f"{window.wall_s:.1f} s, nodes {sum(window.cpu_s):.2f} CPU s, "
                f"loader {window.loader_cpu_s:.2f} CPU s")
    fitted: dict[str, Any] = dict(fit(idle, loaded, 4))
    fitted["loader_submit_us"] = 1e6 * sum(w.loader_cpu_s for w in loaded) / sum(
        w.txs for w in loaded)
    fitted["windows"] = [{"wall_s": round(w.wall_s, 3), "txs": w.txs, "blocks": w.blocks,
                          "cpu_s": [round(c, 3) for c in w.cpu_s],
                          "sent_bytes": w.sent_bytes, "loader_cpu_s": round(w.loader_cpu_s, 3)}
                         for w in [idle, *loaded]]
    return fitted


def wait_receipts(urls: list[str], target: float, timeout_s: float) -> bool:
    """Until every node at ``urls`` has applied ``target`` receipts in all (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(metrics(url)["receipts_applied"] >= target for url in urls):
            return True
        time.sleep(0.1)  # polling a condition, with a deadline
    return False


def measure_cross(base_port: int, rate: float, seconds: float, reps: int, log: Any,
                  ) -> dict[str, Any]:
    """Node CPU per cross-shard transaction beyond a local one, at the source and at the
    destination: a 2 x 4 testnet, the same paced load on shard 0 alternately local
    transfers (shard 0 to shard 0) and cross-shard only (shard 0 to shard 1, the window
    ending when every shard-1 node applied the receipts), ``reps`` pairs; per shard, the
    CPU of every node's process tree; per pair the difference per transaction, the
    median over the pairs. The difference holds the receipt bundles, their relaying,
    the certificate and proof checks and the apply at the destination, finality
    tracking."""
    from scripts.bench.node import run_load

    spec = TestnetSpec(shards=2, validators=4, accounts=3000, base_port=base_port)
    count, senders, warm = int(rate * seconds), 500, 500
    plan = [(warm, 0), (warm, 1)] + [(count, to) for _ in range(reps) for to in (0, 1)]
    signed = sign_sequence(plan, senders, 2)
    with local_testnet(spec) as (root, nodes):
        zero = [n for n in nodes if n.shard == 0]
        one = [n for n in nodes if n.shard == 1]
        urls0, urls1 = [n.api_url for n in zero], [n.api_url for n in one]
        pids = node_pids(zero, root) + node_pids(one, root)
        applied = metrics(urls1[0])["receipts_applied"]

        def send(index: int, paced: float) -> int:
            nonlocal applied
            raws, hashes = signed[index]
            asyncio.run(run_load(urls0, raws, hashes, max(1, round(paced / 25)) if paced
                                 else 100, 60.0, paced))
            if plan[index][1] == 1:
                applied += len(raws)
                if not wait_receipts(urls1, applied, 60.0):
                    raise RuntimeError("calibration: cross-shard receipts were not applied")
            return len(raws)

        send(0, 0.0)  # warm-up, then the cross path (relays, the destination's checks)
        send(1, 0.0)
        windows: list[tuple[str, Window]] = []
        for index in range(2, len(plan)):
            kind = "cross" if plan[index][1] == 1 else "local"
            windows.append((kind, measure_window(pids, urls0,
                                                 lambda i=index: send(i, rate))))
    pairs = [(windows[i][1], windows[i + 1][1]) for i in range(0, len(windows), 2)]
    per_tx: dict[str, float] = {}
    for name, part in (("source", slice(0, 4)), ("destination", slice(4, 8))):
        # per node: the windows carry the same transactions at the same pace (the cross
        # one ends when the receipts are applied: its few more idle ms are charged too)
        per_tx[name] = max(0.0, statistics.median(
            (sum(cross.cpu_s[part]) - sum(local.cpu_s[part])) / count / 4 * 1e6
            for local, cross in pairs))
    log(f"2 x 4, {rate:.0f} tx/s from shard 0, {reps} x ({seconds:g} s local, {seconds:g} s "
        f"cross-shard): per node and cross-shard tx beyond a local one (median): source "
        f"{per_tx['source']:.0f} µs, destination {per_tx['destination']:.0f} µs")
    return {"cross_source_us": per_tx["source"], "cross_destination_us": per_tx["destination"],
            "rate": rate,
            "windows": [{"kind": kind, "wall_s": round(w.wall_s, 3), "txs": w.txs,
                         "blocks": w.blocks, "cpu_s": [round(c, 3) for c in w.cpu_s]}
                        for kind, w in windows]}


def foreign_block_us(windows: list[dict[str, Any]], idle_share: float) -> float:
    """What a block of another shard costs a node, measured directly: in the cross-shard
    run's local windows shard 0 alone has load and shard 1 cuts no block (an idle shard
    builds no empty block), so shard 1's nodes spend their idle share and the work of
    shard 0's blocks (the gossiped announcement, its certificate checked, the relay's
    and the events' share); per node and shard-0 block, the median over the windows
    (``idle_share``: per node, the paced 2 x 4 testnet's idle window). Replaces the
    difference of the paced 2 x 4 and 1 x 4 cycle fits (two noisy fits differenced:
    0-1,700 µs between calibrations), which is still logged beside."""
    values = [(sum(w["cpu_s"][4:8]) / 4 - idle_share * w["wall_s"]) / w["blocks"] * 1e6
              for w in windows if w["kind"] == "local" and w["blocks"] > 0]
    return max(0.0, statistics.median(values)) if values else 0.0


def _two_terms(rows: list[tuple[float, float, float]]) -> tuple[float, float]:
    """(a, b) minimising the squared error of ``z = a x + b y`` over ``rows`` (x, y, z)."""
    sxx = sum(x * x for x, _, _ in rows)
    sxy = sum(x * y for x, y, _ in rows)
    syy = sum(y * y for _, y, _ in rows)
    sxz = sum(x * z for x, _, z in rows)
    syz = sum(y * z for _, y, z in rows)
    det = sxx * syy - sxy * sxy
    if det <= 1e-12 * max(1.0, sxx * syy):
        raise RuntimeError("calibration: the paced windows do not separate per-block "
                           "from per-transaction CPU (their rates and block rates are "
                           "proportional)")
    return (syy * sxz - sxy * syz) / det, (sxx * syz - sxy * sxz) / det


def window_latency(summaries: list[dict[str, Any]], count: int) -> dict[str, Any]:
    """A paced window's submit-to-commit latency from each shard's ``run_load`` summary:
    per shard p50 and p99, and the window's (the median over the shards: the step's
    p99 over all its transactions lies between the shards' when they carry equal
    loads); None when a shard did not commit all ``count`` transactions (a window that
    did not keep up: its percentiles would leave the slowest out)."""
    p50 = [s.get("latency_p50_ms") for s in summaries]
    p99 = [s.get("latency_p99_ms") for s in summaries]
    complete = bool(summaries) and all(s.get("committed") == count for s in summaries)
    return {"p50_ms_per_shard": p50, "p99_ms_per_shard": p99,
            "commit_p50_ms": statistics.median(float(v) for v in p50 if v is not None)
            if complete else None,
            "commit_p99_ms": statistics.median(float(v) for v in p99 if v is not None)
            if complete else None}


def measure_paced(base_port: int, shards: int, rates: tuple[float, ...], seconds: float,
                  reps: int, idle_s: float, log: Any,
                  cross: tuple[float, float] | None = None) -> dict[str, Any]:
    """A node's CPU at paced rates, as ``bench e2e``'s find-max steps offer them: an
    ``shards`` x 4 testnet, local transfers paced at ``rate`` tx/s into every shard (each
    shard ``rate`` / ``shards``), in windows of ``seconds``, each rate ``reps`` times
    (interleaved, so drift in the machine spreads over the rates), and an idle window.
    Per window, every node's process tree CPU over the wall time; per rate, the median
    over the windows of the nodes' mean CPU share, their shard's rate and its blocks per
    second; fitted to ``share = idle + per_cycle x blocks/s + per_tx x shard rate``,
    by least squares over the rates (the cycle: every shard cuts a block; per node, the
    work of its own shard's block and of the other shards' announcements). Paced
    blocks are cut every interval at these rates (blocks/s nearly constant), so the
    per-cycle term is the fixed cost at the paced block rate and the per-transaction
    term the slope in the rate; on a loaded machine the cycles stretch and both vary.
    The windows are recorded beside the fit.

    ``cross`` (rate, share), with more than one shard: each rep also offers one window
    at that rate in which every ``1 / share``-th transfer of each shard goes to the
    next shard (a receipt for it), as the find-max's cross-shard steps mix them; its
    submit-to-commit p50 and p99 are the ``cross_points`` (what the shared model's
    cross-shard latency term is calibrated on: ``model.latency_floor``). Not in the CPU
    fit (the fit is of local transfers; ``measure_cross`` measures what a receipt
    costs); after each such window the receipts are awaited (every node applied them),
    outside any window, so the next window does not carry their work."""
    from scripts.bench.node import run_load

    spec = TestnetSpec(shards=shards, validators=4, accounts=1500 * shards, base_port=base_port)
    per_window = [max(1, int(rate / shards * seconds)) for rate in rates]
    warm = 300
    mixed = cross if cross is not None and shards > 1 else None
    cross_count = max(1, int(mixed[0] / shards * seconds)) if mixed else 0
    every = max(1, round(1 / mixed[1])) if mixed else 0
    total = warm + reps * (sum(per_window) + cross_count)

    signed = [sign_transfers(total, 300, shard, shards, from_shard=shard,
                             route=mixed_route(shard, shards, warm, sum(per_window),
                                               cross_count, every) if mixed else None)
              for shard in range(shards)]
    with local_testnet(spec) as (root, nodes):
        by_shard = [[n for n in nodes if n.shard == shard] for shard in range(shards)]
        urls = [[n.api_url for n in group] for group in by_shard]
        pids = [pid for group in by_shard for pid in node_pids(group, root)]
        probe = [group[1] for group in urls]  # one node per shard: its blocks
        offset = [0] * shards

        summaries: list[dict[str, Any]] = []  # the last send's, per shard

        def send(count: int, rate: float) -> int:
            """``count`` transfers into every shard at ``rate`` / shards each; each
            shard's submit-to-commit latencies in ``summaries``."""
            async def every_shard() -> list[dict[str, Any]]:
                shard_rate = rate / shards
                batch = max(1, round(shard_rate / 25))  # ~25 submissions a second
                return list(await asyncio.gather(*(
                    run_load(urls[s], signed[s][0][offset[s]:offset[s] + count],
                             signed[s][1][offset[s]:offset[s] + count], batch, 60.0,
                             shard_rate) for s in range(shards))))
            summaries[:] = asyncio.run(every_shard())
            for s in range(shards):
                offset[s] += count
            return count * shards

        send(warm, 0.0)  # warm-up: first blocks, caches, connections, workers

        def rest() -> int:
            time.sleep(idle_s)  # nothing offered: what the nodes spend on their own
            return 0

        idle = measure_window(pids, urls[0], rest)
        idle_share = sum(idle.cpu_s) / len(pids) / idle.wall_s
        windows: list[dict[str, Any]] = []
        mixed_windows: list[dict[str, Any]] = []
        receipts = 0  # each shard's nodes apply every ``every``-th of the other's
        for _ in range(reps):
            plan = [(rate, count, windows) for rate, count in zip(rates, per_window,
                                                                  strict=True)]
            if mixed:
                plan.append((mixed[0], cross_count, mixed_windows))
            for rate, count, into in plan:
                before = [metrics(url)["blocks"] for url in probe]
                window = measure_window(pids, urls[0], lambda c=count, r=rate: send(c, r))
                blocks = [metrics(url)["blocks"] - b for url, b in zip(probe, before,
                                                                        strict=True)]
                into.append({"rate": rate, "wall_s": round(window.wall_s, 3),
                             "txs_per_shard": count, "blocks_per_shard": blocks,
                             "cpu_s": [round(c, 3) for c in window.cpu_s],
                             **window_latency(summaries, count)})
                if into is mixed_windows:
                    receipts += len(range(0, count, every))
                    if not all(wait_receipts(group, receipts, 60.0) for group in urls):
                        raise RuntimeError("calibration: the mixed window's cross-shard "
                                           "receipts were not applied within 60 s")
    points = rate_points(windows, rates, len(pids))
    cross_points = [dict(point, cross=mixed[1]) for point in
                    rate_points(mixed_windows, (mixed[0],), len(pids))] if mixed else []
    per_cycle, per_tx = _two_terms([(p["blocks_per_s"], p["shard_rate"],
                                     p["node_cpu_share"] - idle_share) for p in points])
    if per_cycle < 0 or per_tx < 0:  # noise: all of it on the other term
        rows = [(p["blocks_per_s"], p["shard_rate"], p["node_cpu_share"] - idle_share)
                for p in points]
        if per_cycle < 0:
            per_cycle, per_tx = 0.0, sum(z for _, _, z in rows) / sum(y for _, y, _ in rows)
        else:
            per_cycle, per_tx = sum(z for _, _, z in rows) / sum(x for x, _, _ in rows), 0.0
    slope, per_cycle_us = max(0.0, per_tx), max(0.0, per_cycle) * 1e6
    bps = statistics.median(p["blocks_per_s"] for p in points)
    # 200 ms between cuts: ~5 blocks/s per shard at these rates on a machine that gives
    # the testnet its CPU; far fewer, and the machine starved the nodes (other users'
    # work): the per-cycle figure then extrapolates from a few blocks
    starved = bps < 0.5 * PACED_BLOCKS_PER_S
    if starved:
        log(f"warning: {shards} x 4 paced windows cut {bps:.1f} blocks/s per shard (not "
            f"~{PACED_BLOCKS_PER_S:g}): the machine starved the testnet (load average "
            f"{os.getloadavg()[0]:.1f}); calibrate again on a quieter machine")
    log(f"{shards} x 4 paced ({', '.join(f'{r:g}' for r in rates)} tx/s, {reps} x "
        f"{seconds:g} s): per node {slope * 1e6:.0f} µs per tx, {per_cycle_us:.0f} µs per "
        f"cycle ({bps:.1f} blocks/s per shard), idle {idle_share:.1%} of a core")
    log(f"{shards} x 4 paced submit-to-commit p50 / p99 (median of the windows): "
        + ", ".join(f"{p['rate']:g} tx/s {p.get('commit_p50_ms', math.nan):.0f} / "
                    f"{p.get('commit_p99_ms', math.nan):.0f} ms" for p in points))
    for p in cross_points:
        log(f"{shards} x 4 paced with {p['cross']:.0%} cross-shard, {p['rate']:g} tx/s: "
            f"submit-to-commit p50 / p99 {p.get('commit_p50_ms', math.nan):.0f} / "
            f"{p.get('commit_p99_ms', math.nan):.0f} ms (median of the windows)")
    return {"shards": shards, "validators": 4, "tx_us": slope * 1e6,
            "cores": float(len(os.sched_getaffinity(0))),
            "cycle_us": per_cycle_us, "idle_cpu_share": idle_share, "blocks_per_s": bps,
            "starved": starved, "load_average": [round(x, 2) for x in os.getloadavg()],
            "points": points, "idle_window": {"wall_s": round(idle.wall_s, 3),
                                              "cpu_s": [round(c, 3) for c in idle.cpu_s]},
            "windows": windows,
            **({"cross_points": cross_points, "cross_windows": mixed_windows} if mixed
               else {})}


def rate_points(windows: list[dict[str, Any]], rates: tuple[float, ...], nodes: int,
                ) -> list[dict[str, float]]:
    """Per rate, the medians of its windows: the nodes' mean CPU share, the shard's
    rate, its blocks per second, and the submit-to-commit p50 and p99 when every
    window has them (each window complete: ``window_latency``)."""
    points = []
    for rate in rates:
        mine = [w for w in windows if w["rate"] == rate]
        share = statistics.median(sum(w["cpu_s"]) / nodes / w["wall_s"] for w in mine)
        shard_rate = statistics.median(w["txs_per_shard"] / w["wall_s"] for w in mine)
        bps = statistics.median(statistics.mean(w["blocks_per_shard"]) / w["wall_s"]
                                for w in mine)
        point = {"rate": rate, "shard_rate": shard_rate, "node_cpu_share": share,
                 "blocks_per_s": bps}
        for key in ("commit_p50_ms", "commit_p99_ms"):  # median over the windows
            seen = [w[key] for w in mine if w.get(key) is not None]
            if len(seen) == len(mine):
                point[key] = statistics.median(seen)
        points.append(point)
    return points


def calibrate(base_port: int, quick: bool, log: Any) -> Costs:
    load_before = os.getloadavg()
    seconds = 0.5 if quick else 2.0
    verify_us, sign_us = measure_crypto(seconds)
    log(f"Ed25519: verify {verify_us:.1f} µs, sign {sign_us:.1f} µs (CPU)")
    ledger = measure_ledger(2 if quick else 4)
    log("ledger per tx (CPU µs): " + ", ".join(f"{k} {v:.1f}" for k, v in ledger.items()))
    consensus = measure_consensus()
    log("PBFT step: " + ", ".join(f"n={m.replicas} {m.step_us:.0f} µs x "
                                  f"{m.messages_per_commit:.0f} msgs/commit" for m in consensus))
    sizes = wire_sizes()
    # Few transactions per block (a paced 100 tx/s: a block per interval), then many
    # (a burst: full blocks): the fit separates per-block from per-transaction CPU.
    rates = (100.0, 0.0)
    testnet = measure_testnet(base_port, rates, 4.0 if quick else 8.0, 2.0 if quick else 4.0,
                              log)
    # the find-max's paced steps: 1 x 4 and 2 x 4, per node per tx and per cycle
    seconds, reps = (5.0, 2) if quick else (10.0, 3)
    paced_one = measure_paced(base_port + 50, 1, PACED_RATES[1], seconds, reps, seconds, log)
    paced_two = measure_paced(base_port + 100, 2, PACED_RATES[2], seconds, reps, seconds, log,
                              cross=PACED_CROSS)
    difference_us = max(0.0, paced_two["cycle_us"] - paced_one["cycle_us"])
    cross = measure_cross(base_port + 150, 200.0, 4.0 if quick else 10.0, 1 if quick else 3,
                          log)
    foreign_us = foreign_block_us(cross["windows"], paced_two["idle_cpu_share"])
    log(f"a block of another shard costs a node {foreign_us:.0f} µs (shard 1's nodes, no "
        f"load of their own, per shard-0 block; the paced 2 x 4 cycle less the 1 x 4 one: "
        f"{difference_us:.0f} µs)")
    in_process = verify_us + ledger["execution"] + ledger["state_root"] + \
        ledger["storage_commit"]
    step_us, messages = consensus[0].step_us, consensus[0].messages_per_commit / 4
    shell_tx = max(0.0, testnet["node_us_per_tx"] - in_process)
    shell_block = max(0.0, testnet["node_us_per_block"] - step_us * messages)
    log(f"testnet, per node: {testnet['node_us_per_tx']:.0f} µs per tx (shell "
        f"{shell_tx:.0f}), {testnet['node_us_per_block']:.0f} µs per block (shell "
        f"{shell_block:.0f}), idle {testnet['idle_cpu_share']:.1%} of a core")
    load_after = os.getloadavg()
    measured = {
        "machine": machine_facts(), "cores": len(os.sched_getaffinity(0)),
        "at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "ledger_signature_us": ledger["signature"],
        "testnet": {"topology": "1 x 4 local processes, bench node loader (pre-signed)",
                    "rates": list(rates), **testnet},
        "paced": {"topology": "1 x 4 and 2 x 4 local processes, local transfers paced "
                              "into every shard", "rates": {str(k): list(v) for k, v in
                                                            PACED_RATES.items()},
                  "window_s": seconds, "reps": reps,
                  "mixed_2x4": {"rate": PACED_CROSS[0], "cross": PACED_CROSS[1]}},
        "cross_shard": {"topology": "2 x 4 local processes, paced load from shard 0: "
                                    "local, then cross-shard only", **cross},
        "foreign_block": {"us": foreign_us, "cycle_difference_us": difference_us,
                          "from": "shard 1's nodes in the cross-shard run's local windows"},
    }
    return Costs(
        format=COSTS_FORMAT, verify_us=verify_us, sign_us=sign_us,
        execution_us=ledger["execution"], state_root_us=ledger["state_root"],
        storage_us=ledger["storage_commit"], consensus=consensus,
        tx_bytes=sizes["tx_bytes"], receipt_bytes=sizes["receipt_bytes"],
        certificate_bytes_per_signer=sizes["certificate_bytes_per_signer"],
        shell_tx_us=shell_tx, shell_block_us=shell_block,
        foreign_block_us=foreign_us,
        cross_source_us=cross["cross_source_us"],
        cross_destination_us=cross["cross_destination_us"],
        idle_cpu_share=testnet["idle_cpu_share"], loader_submit_us=testnet["loader_submit_us"],
        p2p_bytes_per_tx=testnet["p2p_bytes_per_tx"],
        p2p_bytes_per_block=testnet["p2p_bytes_per_block"],
        paced=[msgspec.convert(row, type=PacedCost) for row in (paced_one, paced_two)],
        measured=measured)
