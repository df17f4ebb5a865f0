"""Signing, in worker processes so that the generator's event loop only sends.

A batch of (intent, nonce) becomes encoded signed transactions and their hashes.
Workers derive the sender keys themselves (seed, index) and keep them; each batch
reports the worker CPU it took, so the report can say what the generator cost.
``workers=0`` signs in the calling process (tests, tiny runs).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from consensus.kernel.codec import encode
from consensus.kernel.crypto import KeyPair
from scripts.cli.load.lending import unpack_liquidate
from scripts.cli.load.workload import Intent
from sharding.accounts import derive_account
from sharding.tx import (
    AddLiquidity,
    Borrow,
    Call,
    Harvest,
    Liquidate,
    RemoveLiquidity,
    Repay,
    Stake,
    Supply,
    Swap,
    Transfer,
    TxBody,
    Unstake,
    sign_tx,
    tx_hash,
)

# (account index, nonce, kind, target, asset, amount): what crosses the process boundary.
Item = tuple[int, int, str, bytes, int, int]

_KEYS: dict[tuple[str, int], KeyPair] = {}


def _key(seed: str, index: int) -> KeyPair:
    key = _KEYS.get((seed, index))
    if key is None:
        key = _KEYS[(seed, index)] = derive_account(seed, index)
    return key


def make_call(kind: str, target: bytes, asset: int, amount: int) -> Call:
    if kind == "swap":
        return Swap(target, asset, amount, 0)
    if kind == "add_liquidity":  # ``amount`` of each of the pool's assets, at most
        return AddLiquidity(target, amount, amount, 0)
    if kind == "remove_liquidity":
        return RemoveLiquidity(target, amount, 0, 0)
    if kind == "stake":
        return Stake(target, amount)
    if kind == "unstake":
        return Unstake(target, amount)
    if kind == "harvest":
        return Harvest(target)
    # Lending (scripts/cli/load/lending.py): ``target`` is the market address (for
    # liquidate followed by the borrower's); a shock is a swap.
    if kind == "supply":
        return Supply(target, asset, amount)
    if kind == "borrow":
        return Borrow(target, asset, amount)
    if kind == "repay":
        return Repay(target, asset, amount)
    if kind == "liquidate":
        debt, collateral = unpack_liquidate(asset)
        return Liquidate(target[:32], target[32:], debt, amount, collateral)
    if kind == "shock":
        return Swap(target, asset, amount, 0)
    return Transfer(target, asset, amount)


def sign_items(chain_id: str, seed: str, items: list[Item]
               ) -> tuple[list[tuple[bytes, str]], float]:
    """Sign ``items``: ([(raw, hash hex)], CPU seconds used)."""
    started = time.process_time()
    out = []
    for index, nonce, kind, target, asset, amount in items:
        key = _key(seed, index)
        tx = sign_tx(key, TxBody(chain_id, key.public_key, nonce,
                                 make_call(kind, target, asset, amount)))
        out.append((encode(tx), tx_hash(tx).hex()))
    return out, time.process_time() - started


@dataclass(frozen=True, slots=True)
class Signed:
    intent: Intent
    nonce: int
    raw: bytes
    hash: str


class Signer:
    def __init__(self, chain_id: str, seed: str, sender_indices: list[int], workers: int
                 ) -> None:
        self.chain_id = chain_id
        self.seed = seed
        self.sender_indices = sender_indices
        self.workers = workers
        self.worker_cpu_s = 0.0
        self._pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                      if workers > 0 else None)

    async def sign(self, batch: list[tuple[Intent, int]]) -> list[Signed]:
        if not batch:
            return []
        items = [(self.sender_indices[intent.sender], nonce, intent.kind, intent.target,
                  intent.asset, intent.amount) for intent, nonce in batch]
        if self._pool is None:
            signed, _ = sign_items(self.chain_id, self.seed, items)
        else:
            loop = asyncio.get_running_loop()
            chunks = _split(items, self.workers)
            results = await asyncio.gather(*(
                loop.run_in_executor(self._pool, sign_items, self.chain_id, self.seed, chunk)
                for chunk in chunks))
            signed = [pair for part, _ in results for pair in part]
            self.worker_cpu_s += sum(cpu for _, cpu in results)
        return [Signed(intent, nonce, raw, digest)
                for (intent, nonce), (raw, digest) in zip(batch, signed, strict=True)]

    async def warm_up(self) -> None:
        """Start the workers (and their imports) before the clock starts."""
        if self._pool is not None:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(self._pool, sign_items, self.chain_id,
                                                        self.seed, [])
                                   for _ in range(self.workers)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _split(items: list[Item], parts: int) -> list[list[Item]]:
    size = max(64, -(-len(items) // parts))
    return [items[i:i + size] for i in range(0, len(items), size)]
