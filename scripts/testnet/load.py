"""``shardnet testnet load``: a short, bounded stream of signed transfers and swaps
on every shard of a running testnet, waiting for each transaction's outcome.

This is the wallet path in bulk (sign, submit to a node of the sender's shard,
poll the outcome). Senders and pools stay on one shard (cross-shard traffic is the
load generator's, issue 12).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from consensus.codec import encode
from consensus.crypto import KeyPair
from scripts.client import DONE_ON_SHARD, ApiFailure, Client
from scripts.testnet.generate import ASSETS, POOLS
from scripts.testnet.layout import TestnetDir
from sharding.accounts import derive_account, program_address, shard_of
from sharding.tx import Call, Swap, Transfer, TxBody, sign_tx, tx_hash

SENDERS_PER_SHARD = 16
SWAP_SHARE = 0.2


def shard_accounts(seed: str, count: int, num_shards: int) -> dict[int, list[KeyPair]]:
    by_shard: dict[int, list[KeyPair]] = {s: [] for s in range(num_shards)}
    for index in range(count):
        key = derive_account(seed, index)
        by_shard[shard_of(key.public_key, num_shards)].append(key)
    return by_shard


def local_pools(num_shards: int) -> dict[int, list[tuple[bytes, tuple[str, str]]]]:
    pools: dict[int, list[tuple[bytes, tuple[str, str]]]] = {s: [] for s in range(num_shards)}
    for name, pair in POOLS:
        address = program_address(name)
        pools[shard_of(address, num_shards)].append((address, pair))
    return pools


def build_load(client: Client, seed: str, count: int, txs: int, rng: random.Random
               ) -> list[tuple[int, bytes, str]]:
    """Signed transactions as (shard, raw, hash), nonces read from the testnet."""
    accounts = shard_accounts(seed, count, client.num_shards)
    pools = local_pools(client.num_shards)
    plan: list[tuple[int, bytes, str]] = []
    senders: list[tuple[int, KeyPair, int]] = []
    for shard, keys in accounts.items():
        for key in keys[:SENDERS_PER_SHARD]:
            nonce = int(client.account(key.public_key, shard)["nonce"])
            senders.append((shard, key, nonce))
    next_nonce = {key.public_key: nonce for _, key, nonce in senders}
    for i in range(txs):
        shard, key, _ = senders[i % len(senders)]
        call: Call
        if pools[shard] and rng.random() < SWAP_SHARE:
            address, pair = rng.choice(pools[shard])
            call = Swap(address, ASSETS.index(rng.choice(pair)), rng.randint(1, 10_000), 0)
        else:
            recipient = rng.choice(accounts[shard])
            call = Transfer(recipient.public_key, 0, rng.randint(1, 1_000))
        nonce = next_nonce[key.public_key]
        next_nonce[key.public_key] = nonce + 1
        tx = sign_tx(key, TxBody(client.chain_id, key.public_key, nonce, call))
        plan.append((shard, encode(tx), tx_hash(tx).hex()))
    return plan


def run_load(client: Client, plan: list[tuple[int, bytes, str]], timeout_s: float
             ) -> dict[str, Any]:
    started = time.monotonic()
    outcome: Counter[str] = Counter()
    by_shard: dict[int, list[tuple[bytes, str]]] = {}
    for shard, raw, digest in plan:
        by_shard.setdefault(shard, []).append((raw, digest))
    waiting: list[tuple[int, str, float]] = []
    for shard, items in by_shard.items():
        for offset in range(0, len(items), 200):
            chunk = items[offset:offset + 200]
            sent_at = time.monotonic()
            try:
                answer = client.submit([raw for raw, _ in chunk], shard, attempt=offset // 200)
            except ApiFailure as exc:
                answer = exc.body
            results = answer.get("results", [answer])
            for (_, digest), result in zip(chunk, results, strict=False):
                if result.get("accepted"):
                    waiting.append((shard, digest, sent_at))
                else:
                    outcome[f"rejected:{result.get('error')}"] += 1
    latencies: list[float] = []
    deadline = started + timeout_s
    for shard, digest, sent_at in waiting:
        final = client.wait_final(digest, shard, max(0.0, deadline - time.monotonic()),
                                  until=DONE_ON_SHARD)
        status = "pending" if final is None else final["status"]
        outcome[status] += 1
        if status in ("committed", "finalized", "failed"):
            latencies.append(time.monotonic() - sent_at)
    latencies.sort()
    return {"outcomes": dict(outcome), "accepted": len(waiting),
            "seconds": round(time.monotonic() - started, 2),
            "p50_latency_ms": round(1000 * latencies[len(latencies) // 2]) if latencies else None}


@click.command("load")
@click.option("--testnet", "root", type=click.Path(path_type=Path),
              default=Path("testnets/default"), show_default=True)
@click.option("--txs", type=click.IntRange(1, 100_000), default=200, show_default=True)
@click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True)
@click.option("--seed", "rng_seed", type=int, default=1, show_default=True)
def load(root: Path, txs: int, timeout_s: float, rng_seed: int) -> None:
    """Fire a short load (transfers and same-shard swaps) and report every outcome."""
    manifest = TestnetDir(root).load_manifest()
    client = Client.from_testnet(root)
    console = Console()
    try:
        plan = build_load(client, manifest.accounts.seed, manifest.accounts.count, txs,
                          random.Random(rng_seed))
    except (ApiFailure, OSError) as exc:
        raise click.ClickException(f"testnet not reachable ({exc}); is it up?") from None
    summary = run_load(client, plan, timeout_s)
    table = Table(title=f"load: {txs} txs, {manifest.shards} shards", min_width=30)
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for name, count in sorted(summary["outcomes"].items()):
        table.add_row(name, str(count))
    console.print(table)
    console.print(f"{summary['accepted']} accepted, p50 submit-to-final "
                  f"{summary['p50_latency_ms']} ms, {summary['seconds']} s in all")
    if summary["outcomes"].get("pending"):
        raise click.ClickException("some transactions were still pending at the timeout")
