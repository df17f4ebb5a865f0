"""``shardnet project calibrate``: measure the projection's cost inputs on this machine.

See ``scripts/project/costs.py`` for what each figure is. The in-process parts reuse the
benchmarks' code (``bench ledger``, ``bench consensus``); the testnet part starts a 1 x 4
testnet of local processes (``bench node``'s loader and pre-signed transfers) and reads
every node's process tree CPU (psutil) and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import psutil

from consensus.certificate import CommitCertificate, IndexedSignature
from consensus.kernel.codec import encode
from consensus.kernel.crypto import KeyPair, verify_signature
from scripts.bench.common import local_testnet, machine_facts
from scripts.cli.testnet.generate import TestnetSpec
from scripts.cli.testnet.layout import NodeEntry
from scripts.project.costs import COSTS_FORMAT, Costs, MessageCost
from sharding.block import ReceiptProof
from sharding.merkle import InclusionProof
from sharding.receipts import Receipt
from sharding.tx import Transfer, TxBody, sign_tx

PROOF_DEPTH = 11  # a receipt's Merkle path in a block of ~2,000 receipts


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


def measure_announcements(base_port: int, rate: float, seconds: float, idle_s: float,
                          log: Any) -> dict[str, Any]:
    """Per node, CPU per block of another shard (gossiped announcements, each with its
    commit certificate checked): a 2 x 4 testnet, load on shard 0 only, the CPU of
    shard 1's nodes over an idle window and a loaded one."""
    from scripts.bench.node import run_load, sign_load

    spec = TestnetSpec(shards=2, validators=4, accounts=3000, base_port=base_port)
    count = int(rate * seconds)
    raws, hashes = sign_load(count + 1000, 500, 2)  # senders and recipients of shard 0
    with local_testnet(spec) as (root, nodes):
        zero = [n for n in nodes if n.shard == 0]
        one = [n for n in nodes if n.shard == 1]
        urls = [n.api_url for n in zero]
        pids = node_pids(one, root)
        asyncio.run(run_load(urls, raws[:1000], hashes[:1000], 100, 60.0, 0))  # warm-up

        def rest() -> int:
            time.sleep(idle_s)
            return 0

        def work() -> int:
            asyncio.run(run_load(urls, raws[1000:], hashes[1000:], 100, 60.0, rate))
            return count

        idle = measure_window(pids, urls, rest)
        loaded = measure_window(pids, urls, work)
    idle_share = sum(idle.cpu_s) / 4 / idle.wall_s
    extra = sum(loaded.cpu_s) / 4 - idle_share * loaded.wall_s
    per_block = max(0.0, extra / max(1.0, loaded.blocks))
    log(f"2 x 4, load on shard 0: {loaded.blocks:.0f} blocks in {loaded.wall_s:.1f} s; a "
        f"shard-1 node spends {per_block * 1e6:.0f} µs per shard-0 block")
    return {"foreign_block_us": per_block * 1e6, "idle_cpu_share": idle_share,
            "windows": [{"wall_s": round(w.wall_s, 3), "txs": w.txs, "blocks": w.blocks,
                         "cpu_s": [round(c, 3) for c in w.cpu_s]} for w in (idle, loaded)]}


def sign_transfers(count: int, senders: int, to_shard: int, num_shards: int,
                   ) -> tuple[list[bytes], list[str]]:
    """``count`` pre-signed transfers from ``senders`` funded accounts of shard 0 to funded
    accounts of ``to_shard`` (0: local transactions; 1: each with a receipt for shard 1)."""
    from sharding.accounts import derive_account, shard_of
    from sharding.tx import tx_hash

    by_shard: dict[int, list[KeyPair]] = {0: [], to_shard: []}
    index = 0
    while len(by_shard[0]) < senders or len(by_shard[to_shard]) < senders:
        key = derive_account("shardnet", index)
        by_shard.setdefault(shard_of(key.public_key, num_shards), []).append(key)
        index += 1
    keys, recipients = by_shard[0][:senders], by_shard[to_shard][:senders]
    raws, hashes = [], []
    for i in range(count):
        sender, recipient = keys[i % senders], recipients[(i + 1) % senders]
        tx = sign_tx(sender, TxBody("shardnet-local", sender.public_key, i // senders,
                                    Transfer(recipient.public_key, 0, 1)))
        raws.append(encode(tx))
        hashes.append(tx_hash(tx).hex())
    return raws, hashes


def wait_receipts(urls: list[str], target: float, timeout_s: float) -> bool:
    """Until every node at ``urls`` has applied ``target`` receipts in all (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(metrics(url)["receipts_applied"] >= target for url in urls):
            return True
        time.sleep(0.1)  # polling a condition, with a deadline
    return False


def measure_cross(base_port: int, rate: float, seconds: float, log: Any) -> dict[str, Any]:
    """Node CPU per cross-shard transaction beyond a local one, at the source and at the
    destination: a 2 x 4 testnet, the same paced load on shard 0 twice, local transfers
    (shard 0 to shard 0), then cross-shard only (shard 0 to shard 1, until every shard-1
    node applied the receipts); per shard, the CPU of every node's process tree. The
    difference per transaction holds the receipt bundles, their relaying, the
    certificate and proof checks and the apply at the destination, finality tracking."""
    from scripts.bench.node import run_load

    spec = TestnetSpec(shards=2, validators=4, accounts=3000, base_port=base_port)
    count, senders = int(rate * seconds), 500
    warm = 500
    local_raws, local_hashes = sign_transfers(count + warm, senders, 0, 2)
    # nonces: the cross window's senders continue after the local window's
    cross_raws, cross_hashes = sign_transfers(2 * (count + warm), senders, 1, 2)
    cross_raws, cross_hashes = cross_raws[count + warm:], cross_hashes[count + warm:]
    with local_testnet(spec) as (root, nodes):
        zero = [n for n in nodes if n.shard == 0]
        one = [n for n in nodes if n.shard == 1]
        urls0, urls1 = [n.api_url for n in zero], [n.api_url for n in one]
        pids = node_pids(zero, root) + node_pids(one, root)
        asyncio.run(run_load(urls0, local_raws[:warm], local_hashes[:warm], 100, 60.0, 0))

        def local() -> int:
            asyncio.run(run_load(urls0, local_raws[warm:], local_hashes[warm:], 100, 60.0,
                                 rate))
            return count

        local_window = measure_window(pids, urls0, local)
        # warm the cross path (receipt relays, the destination's proof checks) first
        applied = metrics(urls1[0])["receipts_applied"]
        asyncio.run(run_load(urls0, cross_raws[:warm], cross_hashes[:warm], 100, 60.0, 0))
        if not wait_receipts(urls1, applied + warm, 60.0):
            raise RuntimeError("calibration: the warm-up's receipts were not applied")
        applied += warm

        def cross() -> int:
            asyncio.run(run_load(urls0, cross_raws[warm:], cross_hashes[warm:], 100, 60.0,
                                 rate))
            if not wait_receipts(urls1, applied + count, 60.0):
                raise RuntimeError("calibration: cross-shard receipts were not applied")
            return count

        cross_window = measure_window(pids, urls0, cross)
    per_tx = {}
    for name, part in (("source", slice(0, 4)), ("destination", slice(4, 8))):
        # per node: the windows carry the same transactions at the same pace (the cross
        # one ends when the receipts are applied: its few more idle ms are charged too)
        extra = sum(cross_window.cpu_s[part]) - sum(local_window.cpu_s[part])
        per_tx[name] = max(0.0, extra / count / 4 * 1e6)
    log(f"2 x 4, {rate:.0f} tx/s from shard 0: local {sum(local_window.cpu_s):.2f} CPU s in "
        f"{local_window.wall_s:.1f} s, cross-shard {sum(cross_window.cpu_s):.2f} CPU s in "
        f"{cross_window.wall_s:.1f} s; per node and cross-shard tx beyond a local one: "
        f"source {per_tx['source']:.0f} µs, destination {per_tx['destination']:.0f} µs")
    return {"cross_source_us": per_tx["source"], "cross_destination_us": per_tx["destination"],
            "rate": rate,
            "windows": [{"kind": kind, "wall_s": round(w.wall_s, 3), "txs": w.txs,
                         "blocks": w.blocks, "cpu_s": [round(c, 3) for c in w.cpu_s]}
                        for kind, w in (("local", local_window), ("cross", cross_window))]}


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
    foreign = measure_announcements(base_port + 50, 300.0, 3.0 if quick else 6.0,
                                    2.0 if quick else 4.0, log)
    cross = measure_cross(base_port + 100, 200.0, 3.0 if quick else 6.0, log)
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
        "announcements": {"topology": "2 x 4 local processes, load on shard 0 only",
                          **foreign},
        "cross_shard": {"topology": "2 x 4 local processes, paced load from shard 0: "
                                    "local, then cross-shard only", **cross},
    }
    return Costs(
        format=COSTS_FORMAT, verify_us=verify_us, sign_us=sign_us,
        execution_us=ledger["execution"], state_root_us=ledger["state_root"],
        storage_us=ledger["storage_commit"], consensus=consensus,
        tx_bytes=sizes["tx_bytes"], receipt_bytes=sizes["receipt_bytes"],
        certificate_bytes_per_signer=sizes["certificate_bytes_per_signer"],
        shell_tx_us=shell_tx, shell_block_us=shell_block,
        foreign_block_us=foreign["foreign_block_us"],
        cross_source_us=cross["cross_source_us"],
        cross_destination_us=cross["cross_destination_us"],
        idle_cpu_share=testnet["idle_cpu_share"], loader_submit_us=testnet["loader_submit_us"],
        p2p_bytes_per_tx=testnet["p2p_bytes_per_tx"],
        p2p_bytes_per_block=testnet["p2p_bytes_per_block"], measured=measured)
