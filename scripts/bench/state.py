"""``shardnet bench state-root``: cost of the state root against state size.

For each state size (accounts, one ``Account`` record each, like a funded
account with two assets), measures: rebuilding the root from scratch
(``State.from_items``, what storage does on reopen), and the incremental root of
a block (``State.prepare``) writing W existing accounts, median of several runs.
Prints a table and writes JSON.
"""

from __future__ import annotations

import random
import resource
import statistics
import time
from pathlib import Path

import click
from rich.console import Console

from consensus.kernel.codec import encode
from consensus.kernel.crypto import sha256
from scripts.bench.common import report, result_table
from scripts.cli.params import out_option, rng_seed_option
from sharding.records import Account, Balance, account_key
from sharding.state import State


def make_items(accounts: int) -> list[tuple[bytes, bytes]]:
    value = encode(Account(3, [Balance(0, 10**12), Balance(1, 10**12)]))
    return [(account_key(sha256(i.to_bytes(8, "big"))), value) for i in range(accounts)]


def measure(
    accounts: int, writes_per_block: list[int], runs: int, seed: int
) -> list[dict[str, float]]:
    items = make_items(accounts)
    started = time.perf_counter()
    state = State.from_items(items)
    rebuild_s = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = random.Random(seed)
    rows = []
    for writes in writes_per_block:
        samples, cpu_samples = [], []
        for run in range(runs):
            keys = rng.sample(range(accounts), min(writes, accounts))
            value = encode(Account(4 + run, [Balance(0, 10**12 - run), Balance(1, 10**12)]))
            write_set: dict[bytes, bytes | None] = {items[k][0]: value for k in keys}
            started, cpu_started = time.perf_counter(), time.process_time()
            state.prepare(write_set)
            samples.append(time.perf_counter() - started)
            cpu_samples.append(time.process_time() - cpu_started)
        median = statistics.median(samples)
        cpu_median = statistics.median(cpu_samples)
        rows.append(
            {
                "accounts": accounts,
                "keys_written": writes,
                "root_ms": median * 1000,
                "root_cpu_ms": cpu_median * 1000,
                "root_cpu_us_per_key": cpu_median * 1e6 / writes,
                "rebuild_s": rebuild_s,
                "max_rss_mb": rss_mb,
            }
        )
    return rows


@click.command("state-root")
@click.option("--accounts", "sizes", multiple=True, type=int, default=[10_000, 1_000_000])
@click.option("--writes", "writes", multiple=True, type=int, default=[100, 1_000, 4_000])
@click.option("--runs", type=int, default=5, show_default=True)
@rng_seed_option(help="Seed of the generated writes.", name="seed")
@out_option("JSON output file.", name="json_out", default=Path("bench-results/state_root.json"))
def state_root(sizes: list[int], writes: list[int], runs: int, seed: int, json_out: Path) -> None:
    """Incremental state-root cost per block and full rebuild time, by state size."""
    rows: list[dict[str, float]] = []
    for accounts in sizes:
        rows.extend(measure(accounts, list(writes), runs, seed))
    table = result_table(
        f"state root (median of {runs} runs)",
        ("accounts", "keys written", "root ms", "CPU ms", "CPU us/key", "rebuild s", "RSS MB"),
        (
            (
                f"{row['accounts']:,}",
                f"{row['keys_written']:,}",
                f"{row['root_ms']:.1f}",
                f"{row['root_cpu_ms']:.1f}",
                f"{row['root_cpu_us_per_key']:.1f}",
                f"{row['rebuild_s']:.2f}",
                f"{row['max_rss_mb']:.0f}",
            )
            for row in rows
        ),
    )
    report(Console(), [table], json_out, rows)
