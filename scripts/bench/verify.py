"""``shardnet bench verify``: Ed25519 verifications per second, one thread against N.

The node verifies a batch's signatures at admission on ``[executor] verify_threads``
threads (``node/verify_pool.py``; OpenSSL releases the GIL while it verifies). This
measures, in the same run and interleaved round by round (so a load that comes and
goes hits both alike): ``verify_signatures`` on the calling thread, ``VerifyPool(N)``'s
``verify_many`` on the same checks, the same chunks on N processes (no GIL: the
parallelism the machine gives right now, the reference for the threads' ratio), and the
call site itself, ``admit_batch`` (decode, stateless checks, signatures, payability)
with one thread and with N. The path in use is ``VERIFY_BACKEND`` (the compiled
extension when it imports; ``SHARDNET_VERIFY_BACKEND=cryptography`` forces OpenSSL);
when it is the extension, OpenSSL's ``verify_many`` on 1 and N threads is measured in
the same rounds too, and the CPU per signature of the two compared. Medians of the
rounds, the ratio N / 1, CPU microseconds per signature, and the load average before
and after (the machine may be shared). Prints a table and writes JSON.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from consensus.kernel.codec import encode
from consensus.kernel.crypto import (
    BACKEND_CRYPTOGRAPHY,
    VERIFY_BACKEND,
    KeyPair,
    SignatureCheck,
    verify_signatures,
    verify_signatures_cryptography,
)
from node.admission import admit_batch
from node.verify_pool import VerifyPool, chunk_bounds, resolve_verify_threads
from scripts.bench.common import machine_facts, report, result_table
from scripts.cli.params import out_option
from sharding.accounts import derive_account, shard_of
from sharding.genesis import load_genesis, make_genesis_dict
from sharding.ledger import Ledger
from sharding.tx import Transfer, TxBody, sign_tx

SEED = "bench-verify"
PATHS = ("verify_1", "verify_n", "processes_n", "admit_1", "admit_n")
OPENSSL_PATHS = ("openssl_1", "openssl_n")  # when VERIFY_BACKEND is the extension


def make_checks(count: int, keys: int = 64) -> list[SignatureCheck]:
    pairs = [KeyPair.derive(SEED, i) for i in range(keys)]
    checks = []
    for i in range(count):
        pair = pairs[i % keys]
        message = b"verify bench " + i.to_bytes(8, "big") + bytes(100)
        checks.append((pair.public_key, message, pair.sign(message)))
    return checks


def make_admission(count: int) -> tuple[Callable[[], Ledger], list[bytes]]:
    """A one-shard genesis and ``count`` signed transfers from its funded accounts."""
    accounts = 64
    genesis = load_genesis(make_genesis_dict(num_shards=1, validators_per_shard=1, seed=SEED,
                                             accounts=accounts, balance=10**12,
                                             pool_reserve=10**9))
    senders = [derive_account(SEED, i) for i in range(accounts)]
    assert all(shard_of(k.public_key, 1) == 0 for k in senders)
    raws = []
    for i in range(count):
        sender = senders[i % accounts]
        body = TxBody(chain_id=genesis.chain_id, sender=sender.public_key, nonce=i // accounts,
                      call=Transfer(senders[0].public_key, 0, 1))
        tx = sign_tx(sender, body)
        raws.append(encode(tx))
    return (lambda: Ledger(genesis, 0)), raws


def timed(run: Callable[[], object], cpu: list[float]) -> float:
    """Wall seconds of ``run()``; its process CPU seconds are appended to ``cpu``."""
    started, cpu_started = time.perf_counter(), time.process_time()
    run()
    cpu.append(time.process_time() - cpu_started)
    return time.perf_counter() - started


def measure(signatures: int, threads: int, rounds: int) -> dict[str, Any]:
    checks = make_checks(signatures)
    new_ledger, raws = make_admission(signatures)
    pool = VerifyPool(threads)
    openssl_pool = VerifyPool(threads, verify_signatures_cryptography)
    paths = PATHS + (OPENSSL_PATHS if VERIFY_BACKEND != BACKEND_CRYPTOGRAPHY else ())
    processes = ProcessPoolExecutor(threads)
    chunks = [checks[start:stop] for start, stop in chunk_bounds(signatures, threads)]

    def in_processes() -> list[bool]:
        return [v for verdicts in processes.map(verify_signatures, chunks) for v in verdicts]
    samples: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    try:
        assert pool.verify_many(checks) == verify_signatures(checks) == [True] * signatures
        assert in_processes() == [True] * signatures  # (starts the processes)
        for _ in range(rounds):
            runs: dict[str, Callable[[], object]] = {
                "verify_1": lambda: verify_signatures(checks),
                "verify_n": lambda: pool.verify_many(checks),
                "processes_n": in_processes,
                # A fresh ledger each time: its verified cache would skip the signatures.
                "admit_1": lambda: admit_batch(new_ledger(), raws, verify_signatures),
                "admit_n": lambda: admit_batch(new_ledger(), raws, pool.verify_many),
                "openssl_1": lambda: verify_signatures_cryptography(checks),
                "openssl_n": lambda: openssl_pool.verify_many(checks),
            }
            for name in paths:
                run = runs[name]
                samples[name].append(signatures / timed(run, cpu[name]))
    finally:
        pool.close()
        openssl_pool.close()
        processes.shutdown()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    cpu_us = {name: statistics.median(values) * 1e6 / signatures
              for name, values in cpu.items() if name != "processes_n"}
    compare = {}
    if "openssl_1" in medians:
        assert openssl_pool.verify_many(checks) == verify_signatures_cryptography(checks)
        compare = {
            "openssl_ratio": medians["openssl_n"] / medians["openssl_1"],
            # OpenSSL's CPU per signature over the extension's, one thread and N
            "cpu_speedup_1": cpu_us["openssl_1"] / cpu_us["verify_1"],
            "cpu_speedup_n": cpu_us["openssl_n"] / cpu_us["verify_n"],
            "rate_speedup_n": medians["verify_n"] / medians["openssl_n"],
        }
    return {
        "backend": VERIFY_BACKEND,
        "signatures": signatures,
        "threads": threads,
        "rounds": rounds,
        "per_s": medians,
        "samples_per_s": samples,
        # CPU microseconds per signature (all threads): equal for 1 and N threads means
        # the threads add no work, so N free cores give N times the rate.
        # (not for the processes: their CPU is not this process's)
        "cpu_us_per_signature": cpu_us,
        "verify_ratio": medians["verify_n"] / medians["verify_1"],
        "processes_ratio": medians["processes_n"] / medians["verify_1"],
        "admit_ratio": medians["admit_n"] / medians["admit_1"],
        **compare,
    }


@click.command("verify")
@click.option("--signatures", type=int, default=2_000, show_default=True,
              help="signatures (and transactions) per batch")
@click.option("--threads", type=int, default=0, show_default=True,
              help="verify threads (0: the cores available, as [executor] verify_threads)")
@click.option("--rounds", type=int, default=7, show_default=True)
@out_option("JSON output file.", name="json_out", default=Path("bench-results/verify.json"))
def bench_verify(signatures: int, threads: int, rounds: int, json_out: Path) -> None:
    """Ed25519 verifies/s on one thread and on N (the admission's verify pool)."""
    threads = resolve_verify_threads(threads)
    load_before = os.getloadavg()
    result = measure(signatures, threads, rounds)
    result["load_average_before"] = load_before
    result["load_average_after"] = os.getloadavg()
    result["machine"] = machine_facts()
    per_s, cpu_us = result["per_s"], result["cpu_us_per_signature"]
    backend = result["backend"]
    rows = [(f"verify_many ({backend})", f"{per_s['verify_1']:,.0f}", f"{per_s['verify_n']:,.0f}",
             f"{result['verify_ratio']:.2f}x", f"{cpu_us['verify_1']:.1f}",
             f"{cpu_us['verify_n']:.1f}")]
    if "openssl_1" in per_s:
        rows.append(("verify_many (cryptography, OpenSSL)", f"{per_s['openssl_1']:,.0f}",
                     f"{per_s['openssl_n']:,.0f}", f"{result['openssl_ratio']:.2f}x",
                     f"{cpu_us['openssl_1']:.1f}", f"{cpu_us['openssl_n']:.1f}"))
    table = result_table(
        f"Ed25519 verification, batches of {signatures:,} (median of {rounds} rounds, "
        f"load {load_before[0]:.1f}); the nodes' path: {backend}",
        ("path", "1 thread /s", f"{threads} threads /s", "ratio", "CPU us/sig 1", "CPU us/sig N"),
        [*rows,
         ("verify, N processes", f"{per_s['verify_1']:,.0f}", f"{per_s['processes_n']:,.0f}",
          f"{result['processes_ratio']:.2f}x", f"{cpu_us['verify_1']:.0f}", "-"),
         ("admit_batch", f"{per_s['admit_1']:,.0f}", f"{per_s['admit_n']:,.0f}",
          f"{result['admit_ratio']:.2f}x", f"{cpu_us['admit_1']:.0f}",
          f"{cpu_us['admit_n']:.0f}")],
        left=1,
    )
    console = Console()
    if "cpu_speedup_1" in result:
        console.print(f"{backend} over OpenSSL: {result['cpu_speedup_1']:.2f}x less CPU per "
                      f"signature on 1 thread, {result['cpu_speedup_n']:.2f}x on {threads}; "
                      f"{result['rate_speedup_n']:.2f}x the rate on {threads} threads")
    report(console, [table], json_out, result)
