"""``shardnet bench ledger``: sequential ledger throughput, and where the time goes.

For each workload (2,000 signed transfers; 80/20 transfers/swaps) it builds
``--reps`` blocks in a row on shard 0 of a 2-shard genesis (recipients drawn from
every account, so about half the transfers are cross-shard and emit receipts;
swaps go to the pool on shard 0), and times each block the way a replica
handles a committed block:

* signature check: every transaction's Ed25519 signature (``compute_bad_signatures``);
* execution: ``apply_block(verify_signatures=False)`` minus its state-root part
  (it includes the tx, inbound and receipts Merkle roots);
* state root: ``State.prepare`` of the block's write set plus ``apply_prepared``;
* storage commit: ``compute_block_commit`` + ``Store.commit_block`` (SQLite, WAL,
  ``synchronous=FULL``); the same commit into a ``NORMAL`` store is reported beside it.

Signing (the clients' work) is not timed. tx/s = txs / (sum of the four parts'
wall-clock medians); "tx/s CPU" is the same over CPU time (the process's, all
threads), which other load on a shared machine disturbs much less. Figures are
medians over the blocks. Prints a table and writes JSON.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from consensus.kernel.crypto import KeyPair
from node.ledger_store import compute_block_commit, open_state
from node.store import Store, Synchronous
from scripts.bench.common import machine_facts, report, result_table
from scripts.cli.params import out_option, rng_seed_option
from sharding.accounts import derive_account, shard_of
from sharding.block import GENESIS_PREV_HASH, Block, block_hash
from sharding.executor import apply_block, build_block, commit_block_result, compute_bad_signatures
from sharding.genesis import Genesis, load_genesis, make_genesis_dict
from sharding.state import State
from sharding.tx import Swap, Transfer, TxBody, sign_tx

SHARD = 0
NUM_SHARDS = 2
PARTS = ("signature", "execution", "state_root", "storage_commit")
WORKLOADS = {
    "transfers": 0.0,
    "mixed 80/20": 0.2,
}  # mixed: 80% transfers, 20% swaps  # name -> swap share


@dataclass
class Ledger:
    genesis: Genesis
    state: State
    local: list[KeyPair]
    everyone: list[bytes]
    nonces: dict[bytes, int]
    pool: bytes
    height: int = 0
    prev: bytes = GENESIS_PREV_HASH


def make_ledger(accounts: int) -> Ledger:
    genesis = load_genesis(
        make_genesis_dict(num_shards=NUM_SHARDS, accounts=accounts, validators_per_shard=4)
    )
    keys = [derive_account("load", i) for i in range(accounts)]
    local = [k for k in keys if shard_of(k.public_key, NUM_SHARDS) == SHARD]
    pool = next(p.address for p in genesis.pools if shard_of(p.address, NUM_SHARDS) == SHARD)
    return Ledger(genesis, State(), local, [k.public_key for k in keys], {}, pool)


def make_block(ledger: Ledger, txs_per_block: int, swap_share: float, rng: random.Random) -> Block:
    txs = []
    senders = rng.sample(ledger.local, min(txs_per_block, len(ledger.local)))
    for i in range(txs_per_block):
        sender = senders[i % len(senders)]
        address = sender.public_key
        nonce = ledger.nonces.get(address, 0)
        ledger.nonces[address] = nonce + 1
        if rng.random() < swap_share:
            call: Transfer | Swap = Swap(ledger.pool, rng.randint(0, 1), rng.randint(1, 1000), 0)
        else:
            call = Transfer(rng.choice(ledger.everyone), 0, rng.randint(1, 1000))
        txs.append(sign_tx(sender, TxBody(ledger.genesis.chain_id, address, nonce, call)))
    ledger.height += 1
    block, _, rejected = build_block(
        ledger.state,
        txs,
        [],
        height=ledger.height,
        view=0,
        prev_hash=ledger.prev,
        time_ms=ledger.height * 1000,
        proposer=0,
        verify_signatures=False,
    )
    if rejected:
        raise click.ClickException(f"benchmark built an invalid tx: {rejected[0].reason}")
    return block


async def run_block(
    ledger: Ledger, block: Block, stores: dict[Synchronous, Store]
) -> dict[str, float]:
    """Handle one committed block as a replica does: seconds per part, wall clock and
    CPU (``process_time``, all threads: robust to other processes on a shared machine)."""
    t = [_now()]
    bad = compute_bad_signatures(block.txs)
    t.append(_now())
    result = apply_block(ledger.state, block, verify_signatures=False)
    t.append(_now())
    prepared = ledger.state.prepare(result.writes)  # the root part of apply_block, again
    t.append(_now())
    commit_block_result(ledger.state, result)
    t.append(_now())
    commit = compute_block_commit(block, result, b"certificate" * 64, {"view": bytes(8)})
    t.append(_now())
    await stores["FULL"].commit_block(commit)
    t.append(_now())
    await stores["NORMAL"].commit_block(commit)
    t.append(_now())
    if bad or prepared.root != block.header.state_root:
        raise click.ClickException("benchmark block did not validate")
    ledger.prev = block_hash(block.header)
    timing: dict[str, float] = {}
    for clock, suffix in ((0, ""), (1, "_cpu")):
        d = [t[i + 1][clock] - t[i][clock] for i in range(len(t) - 1)]
        timing["signature" + suffix] = d[0]
        timing["execution" + suffix] = d[1] - d[2]
        timing["state_root" + suffix] = d[2] + d[3]
        timing["storage_commit" + suffix] = d[4] + d[5]
        timing["storage_commit_normal" + suffix] = d[4] + d[6]
    return timing


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


async def bench_workload(
    name: str, swap_share: float, txs: int, reps: int, accounts: int, seed: int, workdir: Path
) -> dict[str, Any]:
    rng = random.Random(seed)
    ledger = make_ledger(accounts)
    stores: dict[Synchronous, Store] = {}
    for level in ("FULL", "NORMAL"):
        sync: Synchronous = "FULL" if level == "FULL" else "NORMAL"
        stores[sync] = await Store.open(workdir / f"{name}-{level}.db", synchronous=sync)
        ledger.state, _ = await open_state(stores[sync], ledger.genesis, SHARD)
    runs = []
    try:
        for rep in range(reps + 1):  # the first block warms caches and is not counted
            block = make_block(ledger, txs, swap_share, rng)
            timing = await run_block(ledger, block, stores)
            if rep > 0:
                runs.append(timing)
    finally:
        for store in stores.values():
            await store.close()
    per_tx_us = {key: statistics.median(run[key] for run in runs) / txs * 1e6 for key in runs[0]}
    total_us = sum(per_tx_us[part] for part in PARTS)
    total_cpu_us = sum(per_tx_us[part + "_cpu"] for part in PARTS)
    return {
        "workload": name,
        "swap_share": swap_share,
        "tx_per_s": 1e6 / total_us,
        "tx_per_s_cpu": 1e6 / total_cpu_us,
        "per_tx_us": per_tx_us,
        "total_us_per_tx": total_us,
        "total_cpu_us_per_tx": total_cpu_us,
        "block_ms": {part: [run[part] * 1e3 for run in runs] for part in PARTS},
    }


def _table(result: dict[str, Any]) -> Table:
    p = result["params"]
    title = (f"ledger, sequential: µs per tx, {p['txs_per_block']:,}-tx blocks, "
             f"{p['accounts']:,} accounts (median of {p['reps']} blocks, "
             f"{result['machine']['cpus']} cpus, python {result['machine']['python']})")
    columns = ("workload", "tx/s", "tx/s CPU", "sig", "exec", "root", "store", "total",
               "store NORMAL")
    rows = [(row["workload"],
             f"{row['tx_per_s']:,.0f}",
             f"{row['tx_per_s_cpu']:,.0f}",
             *(f"{row['per_tx_us'][part]:.1f}" for part in PARTS),
             f"{row['total_us_per_tx']:.1f}",
             f"{row['per_tx_us']['storage_commit_normal']:.1f}")
            for row in result["workloads"]]
    return result_table(title, columns, rows, left=1)


async def bench(txs: int, reps: int, accounts: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shardnet-bench-ledger-") as tmp:
        workloads = [
            await bench_workload(name, share, txs, reps, accounts, seed, Path(tmp))
            for name, share in WORKLOADS.items()
        ]
    return {
        "machine": machine_facts(),
        "params": {"txs_per_block": txs, "reps": reps, "accounts": accounts, "seed": seed},
        "workloads": workloads,
    }


@click.command("ledger")
@click.option("--txs", default=2_000, show_default=True, help="Transactions per block.")
@click.option("--reps", default=5, show_default=True, help="Measured blocks per workload.")
@click.option(
    "--accounts", default=10_000, show_default=True, help="Genesis accounts (all shards)."
)
@rng_seed_option(help="Seed of the generated load.", name="seed")
@out_option("JSON output file.", name="out_path", default="bench-results/ledger.json")
def bench_ledger(txs: int, reps: int, accounts: int, seed: int, out_path: Path) -> None:
    """Sequential tx/s of 2,000-tx blocks, split into signatures, execution, root, storage."""
    if txs < 1 or reps < 1 or accounts < 2:
        raise click.BadParameter("--txs and --reps must be >= 1, --accounts >= 2")
    result = asyncio.run(bench(txs, reps, accounts, seed))
    console = Console(width=max(Console().width, 110))
    report(console, [_table(result)], out_path, result, sort_keys=True)
