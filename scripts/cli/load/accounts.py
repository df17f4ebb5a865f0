"""The accounts a run uses, and their nonces.

Senders and recipients are the testnet's prefunded deterministic accounts (seed and
count from the genesis, or ``--seed`` / ``--accounts``). Pools come from the genesis.
``NonceBook`` hands out each sender's nonces in order; a rejected transaction gives
its nonce back (the next one of that sender reuses it, which closes the gap the
rejection left), and ``resync`` takes the node's word after a nonce rejection.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from scripts.cli.load.lending import LendingInfo
from sharding.accounts import derive_account, program_address, shard_of
from sharding.genesis import Genesis

RECIPIENTS_MAX = 10_000  # derived keys cost ~80 us each: bound the start-up work
# Rejections after which the node's nonce is read again (the local count is wrong).
RESYNC_REASONS = frozenset({"wrong_nonce", "nonce_taken", "bad_nonce", "nonce"})


@dataclass(frozen=True, slots=True)
class Sender:
    index: int  # account index of the seed
    shard: int
    address: bytes


@dataclass(frozen=True, slots=True)
class PoolInfo:
    name: str
    address: bytes
    shard: int
    assets: tuple[int, int]
    farmed: bool = False  # the genesis created a farm on it (stake, harvest)


@dataclass(frozen=True, slots=True)
class Universe:
    """Everything a workload draws from, per shard."""

    seed: str
    num_shards: int
    assets: tuple[int, ...]
    senders: tuple[Sender, ...]
    recipients: dict[int, tuple[bytes, ...]]  # shard -> addresses
    pools: dict[int, tuple[PoolInfo, ...]]  # shard -> pools
    lending: LendingInfo | None = None  # the genesis's markets (issue 18)


def account_group(genesis: Genesis, seed: str | None, count: int | None) -> tuple[str, int]:
    """The funded accounts to use: genesis' first group unless overridden."""
    if seed is None and not genesis.accounts:
        raise ValueError("the genesis funds no account group: give --seed and --accounts")
    group = next((g for g in genesis.accounts if seed is None or g.seed == seed), None)
    chosen_seed = seed if seed is not None else genesis.accounts[0].seed
    chosen_count = count if count is not None else (group.count if group else 0)
    if chosen_count <= 0:
        hint = (" (--seed is the account seed; a run's random seed is --rng-seed N)"
                if chosen_seed.isdigit() else "")
        raise ValueError(f"seed {chosen_seed!r} has no funded accounts in the genesis: "
                         f"give --accounts N{hint}")
    return chosen_seed, chosen_count


def build_universe(genesis: Genesis, seed: str, count: int, senders: int) -> Universe:
    """The first ``senders`` accounts, spread evenly over the shards (in index order
    within a shard, interleaved across shards), and up to ``RECIPIENTS_MAX`` funded
    accounts as recipients."""
    num_shards = genesis.num_shards
    per_shard = -(-senders // num_shards)
    by_shard: dict[int, list[Sender]] = {s: [] for s in range(num_shards)}
    recipients: dict[int, list[bytes]] = {s: [] for s in range(num_shards)}
    for index in range(min(count, RECIPIENTS_MAX)):
        address = derive_account(seed, index).public_key
        shard = shard_of(address, num_shards)
        recipients[shard].append(address)
        if len(by_shard[shard]) < per_shard:
            by_shard[shard].append(Sender(index, shard, address))
    chosen: list[Sender] = []
    for position in range(per_shard):
        for shard in range(num_shards):
            if position < len(by_shard[shard]) and len(chosen) < senders:
                chosen.append(by_shard[shard][position])
    if not chosen:
        raise ValueError("no sender account")
    pools: dict[int, list[PoolInfo]] = {s: [] for s in range(num_shards)}
    farmed = {farm.pool for farm in genesis.farms}
    for pool in genesis.pools:
        address = program_address(pool.name)
        pools[shard_of(address, num_shards)].append(
            PoolInfo(pool.name, address, shard_of(address, num_shards),
                     (pool.asset_a, pool.asset_b), pool.name in farmed))
    return Universe(seed, num_shards, tuple(sorted(genesis.assets.values())), tuple(chosen),
                    {s: tuple(v) for s, v in recipients.items()},
                    {s: tuple(v) for s, v in pools.items()}, get_lending_info(genesis))


def get_lending_info(genesis: Genesis) -> LendingInfo | None:
    """The markets, their shard and quote, and the collateral the load supplies: the
    first market asset with a price pool (None without markets or without one)."""
    lending = genesis.lending
    if lending is None:
        return None
    priced = [m for m in lending.markets if m.price_pool]
    if not priced:
        return None
    pool = next(p for p in genesis.pools if p.address == priced[0].price_pool)
    reserves = (pool.reserve_a, pool.reserve_b)
    mine = 0 if pool.asset_a == priced[0].asset else 1
    return LendingInfo(lending.address, lending.shard, lending.quote,
                       tuple(m.asset for m in lending.markets), priced[0].asset,
                       pool.address, reserves[mine], reserves[1 - mine])


@dataclass(slots=True)
class _Nonces:
    next: int
    free: list[int] = field(default_factory=list)  # heap of given-back nonces < next
    floor: int = 0  # the node's nonce at the last resync: nothing below it is usable


class NonceBook:
    """Per-sender nonces: ``take`` the next, ``give_back`` a rejected one, ``resync``
    to the node's committed nonce."""

    def __init__(self) -> None:
        self._by_sender: dict[bytes, _Nonces] = {}
        self.resyncs = 0

    def set(self, sender: bytes, nonce: int) -> None:
        self._by_sender[sender] = _Nonces(nonce)

    def take(self, sender: bytes) -> int:
        entry = self._by_sender[sender]
        if entry.free:
            return heapq.heappop(entry.free)
        nonce = entry.next
        entry.next += 1
        return nonce

    def give_back(self, sender: bytes, nonce: int) -> None:
        """A transaction with this nonce was rejected: the nonce is unused."""
        entry = self._by_sender[sender]
        if entry.floor <= nonce < entry.next and nonce not in entry.free:
            heapq.heappush(entry.free, nonce)

    def resync(self, sender: bytes, node_nonce: int) -> None:
        """The node says ``node_nonce`` is the sender's next: nothing below it is
        usable, and nothing we handed out above it is taken back (it may be pending)."""
        self.resyncs += 1
        entry = self._by_sender[sender]
        entry.floor = max(entry.floor, node_nonce)
        entry.free = [n for n in entry.free if n >= node_nonce]
        heapq.heapify(entry.free)
        if entry.next < node_nonce:
            entry.next = node_nonce
