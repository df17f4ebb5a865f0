"""The audit invariant (PROTOCOL.md section 6).

For every asset: balances + pool reserves over all shards + amounts of receipts
emitted but not yet applied = genesis supply. A receipt is in flight while its
``seq`` is above its destination's ``in_cursor[src]``. Every receipt kind carries
the amount it will credit (a SWAP carries its input), so each counts once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from consensus.codec import decode
from sharding.receipts import Receipt
from sharding.records import (
    KEY_ACCOUNT,
    KEY_POOL,
    RECORD_BYTES_MAX,
    Account,
    Pool,
    get_in_cursor,
)
from sharding.state import State, StateReader


@dataclass(frozen=True, slots=True)
class AssetAudit:
    asset: int
    balances: int
    reserves: int
    in_flight: int
    supply: int

    @property
    def total(self) -> int:
        return self.balances + self.reserves + self.in_flight

    @property
    def ok(self) -> bool:
        return self.total == self.supply


@dataclass(frozen=True, slots=True)
class AuditReport:
    assets: tuple[AssetAudit, ...]
    in_flight_receipts: int

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.assets)


def compute_state_totals(state: State) -> tuple[dict[int, int], dict[int, int]]:
    """(balances, pool reserves) per asset over one shard's state."""
    balances: dict[int, int] = {}
    reserves: dict[int, int] = {}
    for key, value in state.items():
        if key[:1] == KEY_ACCOUNT:
            for balance in decode(value, Account, RECORD_BYTES_MAX, canonical=False).balances:
                balances[balance.asset] = balances.get(balance.asset, 0) + balance.amount
        elif key[:1] == KEY_POOL:
            pool = decode(value, Pool, RECORD_BYTES_MAX, canonical=False)
            reserves[pool.asset_a] = reserves.get(pool.asset_a, 0) + pool.reserve_a
            reserves[pool.asset_b] = reserves.get(pool.asset_b, 0) + pool.reserve_b
    return balances, reserves


def get_in_flight(
    receipts: Iterable[Receipt], states: Mapping[int, StateReader]
) -> list[Receipt]:
    """The receipts (deduplicated by channel and seq) that their destination has
    not applied yet."""
    seen: dict[tuple[int, int, int], Receipt] = {}
    for receipt in receipts:
        channel = (receipt.src_shard, receipt.dst_shard, receipt.seq)
        if receipt.seq > get_in_cursor(states[receipt.dst_shard], receipt.src_shard):
            seen.setdefault(channel, receipt)
    return [seen[channel] for channel in sorted(seen)]


def compute_audit(
    states: Mapping[int, State], receipts: Iterable[Receipt], supply: Mapping[int, int]
) -> AuditReport:
    """Audit every shard's state plus the receipts emitted so far against ``supply``."""
    balances: dict[int, int] = {}
    reserves: dict[int, int] = {}
    for state in states.values():
        shard_balances, shard_reserves = compute_state_totals(state)
        for asset, amount in shard_balances.items():
            balances[asset] = balances.get(asset, 0) + amount
        for asset, amount in shard_reserves.items():
            reserves[asset] = reserves.get(asset, 0) + amount
    pending = get_in_flight(receipts, states)
    in_flight: dict[int, int] = {}
    for receipt in pending:
        in_flight[receipt.asset] = in_flight.get(receipt.asset, 0) + receipt.amount
    assets = sorted(set(supply) | set(balances) | set(reserves) | set(in_flight))
    rows = tuple(
        AssetAudit(
            asset,
            balances.get(asset, 0),
            reserves.get(asset, 0),
            in_flight.get(asset, 0),
            supply.get(asset, 0),
        )
        for asset in assets
    )
    return AuditReport(rows, len(pending))
