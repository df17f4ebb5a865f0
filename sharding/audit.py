"""The audit invariant (docs/PROTOCOL.md section 6).

For every asset: balances + pool reserves over all shards + amounts in flight =
genesis supply. "Reserves" are what programs hold: pool reserves and the reward
asset each farm holds (its unallocated budget plus rewards allocated and not yet
paid: ``Farm.rewards``), and each lending market's cash (``Market.cash``: what
suppliers put in minus what borrowers and withdrawals took out; borrowed tokens
are in balances, so debts are not counted). In flight on the channel A->B is what A
has ever sent to B minus what B has ever applied from A: per asset ``sent`` (A's
state) minus ``received`` (B's state), and in receipts ``out_seq[B]`` (A) minus
``in_cursor[A]`` (B). Every receipt kind carries the amount it will credit (a SWAP
carries its input; a WITHDRAW request carries none), so each counts once.

Two entry points: ``compute_totals_audit`` over each shard's totals and channel
counters (what ``GET /v1/audit`` reports, ``get_shard_totals_from_json``), and
``compute_audit`` over whole states plus the receipts emitted so far (tests, the
demo), which also checks that the counters agree with the receipts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consensus.kernel.codec import decode
from consensus.kernel.limits import RECORD_BYTES_MAX
from sharding.farms import Farm
from sharding.receipts import Receipt
from sharding.records import (
    KEY_ACCOUNT,
    KEY_FARM,
    KEY_IN_CURSOR,
    KEY_MARKET,
    KEY_OUT_SEQ,
    KEY_POOL,
    KEY_RECEIVED,
    KEY_SENT,
    MARKET_KEY_BYTES,
    META_SHARD,
    Account,
    Market,
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
class ChannelAudit:
    """What is in flight on the channel ``src -> dst``. Negative values mean the
    destination applied more than the source ever sent: minted funds (or, outside
    quiescence, two shards read at inconsistent heights)."""

    src: int
    dst: int
    receipts: int  # out_seq on src minus in_cursor on dst
    amounts: Mapping[int, int]  # asset -> sent minus received

    @property
    def ok(self) -> bool:
        return self.receipts >= 0 and all(amount >= 0 for amount in self.amounts.values())

    @property
    def idle(self) -> bool:
        return self.receipts == 0 and not any(self.amounts.values())


@dataclass(frozen=True, slots=True)
class AuditReport:
    assets: tuple[AssetAudit, ...]
    in_flight_receipts: int
    channels: tuple[ChannelAudit, ...] = ()
    problems: tuple[str, ...] = ()  # anything else that does not add up

    @property
    def ok(self) -> bool:
        return (
            all(row.ok for row in self.assets)
            and all(channel.ok for channel in self.channels)
            and not self.problems
        )

    @property
    def idle(self) -> bool:
        """Nothing in flight on any channel."""
        return self.in_flight_receipts == 0 and all(channel.idle for channel in self.channels)


@dataclass(frozen=True, slots=True)
class ShardTotals:
    """One shard's part of the audit at one committed height."""

    shard: int
    height: int
    balances: Mapping[int, int]  # asset -> sum of account balances
    reserves: Mapping[int, int]  # asset -> sum of pool reserves and farm holdings
    out_seq: Mapping[int, int]  # dst -> last seq emitted
    in_cursor: Mapping[int, int]  # src -> last seq applied
    sent: Mapping[int, Mapping[int, int]]  # dst -> asset -> amount, cumulative
    received: Mapping[int, Mapping[int, int]]  # src -> asset -> amount, cumulative


# ---------------------------------------------------------------------------
# Shard totals


def compute_state_totals(state: State) -> tuple[dict[int, int], dict[int, int]]:
    """(balances, pool reserves) per asset over one shard's state."""
    totals = get_shard_totals(state)
    return dict(totals.balances), dict(totals.reserves)


def _add(totals: dict[int, int], key: int, amount: int) -> None:
    totals[key] = totals.get(key, 0) + amount


def get_shard_totals(state: State, height: int = 0) -> ShardTotals:
    """One pass over a shard's state: per-asset totals and the channel counters."""
    balances: dict[int, int] = {}
    reserves: dict[int, int] = {}
    out_seq: dict[int, int] = {}
    in_cursor: dict[int, int] = {}
    sent: dict[int, dict[int, int]] = {}
    received: dict[int, dict[int, int]] = {}
    for key, value in state.items():
        prefix = key[:1]
        if prefix == KEY_ACCOUNT:
            for balance in decode(value, Account, RECORD_BYTES_MAX, canonical=False).balances:
                _add(balances, balance.asset, balance.amount)
        elif prefix == KEY_POOL:
            pool = decode(value, Pool, RECORD_BYTES_MAX, canonical=False)
            _add(reserves, pool.asset_a, pool.reserve_a)
            _add(reserves, pool.asset_b, pool.reserve_b)
        elif prefix == KEY_FARM:
            farm = decode(value, Farm, RECORD_BYTES_MAX, canonical=False)
            _add(reserves, farm.reward_asset, farm.rewards)
        elif prefix == KEY_MARKET and len(key) == MARKET_KEY_BYTES:  # a market's cash
            market = decode(value, Market, RECORD_BYTES_MAX, canonical=False)
            _add(reserves, market.asset, market.cash)
        elif prefix in (KEY_OUT_SEQ, KEY_IN_CURSOR):
            counters = out_seq if prefix == KEY_OUT_SEQ else in_cursor
            counters[int.from_bytes(key[1:5], "big")] = int.from_bytes(value, "big")
        elif prefix in (KEY_SENT, KEY_RECEIVED):
            amounts = sent if prefix == KEY_SENT else received
            peer, asset = int.from_bytes(key[1:5], "big"), int.from_bytes(key[5:9], "big")
            amounts.setdefault(peer, {})[asset] = int.from_bytes(value, "big")
    raw_shard = state.get(META_SHARD)
    shard = 0 if raw_shard is None else int.from_bytes(raw_shard, "big")
    return ShardTotals(shard, height, balances, reserves, out_seq, in_cursor, sent, received)


def _int_map(value: Any) -> dict[int, int]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    return {int(key): int(amount) for key, amount in value.items()}


def get_shard_totals_from_json(report: Mapping[str, Any]) -> ShardTotals:
    """``GET /v1/audit``'s answer (keys are strings of ints) as ``ShardTotals``;
    raise ``ValueError`` or ``KeyError`` when it does not have that shape."""
    return ShardTotals(
        shard=int(report["shard"]),
        height=int(report["height"]),
        balances=_int_map(report["balances"]),
        reserves=_int_map(report["reserves"]),
        out_seq=_int_map(report["out_seq"]),
        in_cursor=_int_map(report["in_cursor"]),
        sent={int(dst): _int_map(amounts) for dst, amounts in _int_map_of(report["sent"])},
        received={int(src): _int_map(amounts)
                  for src, amounts in _int_map_of(report["received"])},
    )


def _int_map_of(value: Any) -> Iterable[tuple[str, Any]]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    return value.items()


# ---------------------------------------------------------------------------
# The audit


def compute_channels(totals: Mapping[int, ShardTotals]) -> tuple[ChannelAudit, ...]:
    """Every ordered pair of the shards given, with what is in flight on it."""
    channels = []
    for src in sorted(totals):
        for dst in sorted(totals):
            if src == dst:
                continue
            source, destination = totals[src], totals[dst]
            sent = source.sent.get(dst, {})
            received = destination.received.get(src, {})
            amounts = {asset: sent.get(asset, 0) - received.get(asset, 0)
                       for asset in sorted(set(sent) | set(received))}
            receipts = source.out_seq.get(dst, 0) - destination.in_cursor.get(src, 0)
            channels.append(ChannelAudit(src, dst, receipts, amounts))
    return tuple(channels)


def compute_totals_audit(
    totals: Mapping[int, ShardTotals], supply: Mapping[int, int]
) -> AuditReport:
    """Audit the shards' totals and channel counters against ``supply``."""
    balances: dict[int, int] = {}
    reserves: dict[int, int] = {}
    for shard_totals in totals.values():
        for asset, amount in shard_totals.balances.items():
            _add(balances, asset, amount)
        for asset, amount in shard_totals.reserves.items():
            _add(reserves, asset, amount)
    channels = compute_channels(totals)
    in_flight: dict[int, int] = {}
    for channel in channels:
        for asset, amount in channel.amounts.items():
            _add(in_flight, asset, amount)
    rows = _rows(supply, balances, reserves, in_flight)
    return AuditReport(rows, sum(channel.receipts for channel in channels), channels)


def _rows(
    supply: Mapping[int, int], balances: Mapping[int, int], reserves: Mapping[int, int],
    in_flight: Mapping[int, int],
) -> tuple[AssetAudit, ...]:
    assets = sorted(set(supply) | set(balances) | set(reserves) | set(in_flight))
    return tuple(
        AssetAudit(asset, balances.get(asset, 0), reserves.get(asset, 0),
                   in_flight.get(asset, 0), supply.get(asset, 0))
        for asset in assets
    )


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
    """Audit every shard's state plus the receipts emitted so far against ``supply``.

    In flight is counted from ``receipts`` (those above their destination's cursor);
    the channel counters in the states must say the same, receipt for receipt and
    amount for amount, or the report names the difference in ``problems``.
    """
    totals = {shard: get_shard_totals(state) for shard, state in states.items()}
    counted = compute_totals_audit(totals, supply)
    pending = get_in_flight(receipts, states)
    by_channel: dict[tuple[int, int], dict[int, int]] = {}
    in_flight: dict[int, int] = {}
    for receipt in pending:
        _add(by_channel.setdefault((receipt.src_shard, receipt.dst_shard), {}),
             receipt.asset, receipt.amount)
        _add(in_flight, receipt.asset, receipt.amount)
    problems = []
    for channel in counted.channels:
        emitted = {a: n for a, n in by_channel.get((channel.src, channel.dst), {}).items() if n}
        counters = {a: n for a, n in channel.amounts.items() if n}
        if counters != emitted:
            problems.append(f"{channel.src}->{channel.dst}: counters say {counters} in flight, "
                            f"receipts say {emitted}")
    if counted.in_flight_receipts != len(pending):
        problems.append(f"counters say {counted.in_flight_receipts} receipts in flight, "
                        f"{len(pending)} emitted receipts are not applied")
    balances = {row.asset: row.balances for row in counted.assets}
    reserves = {row.asset: row.reserves for row in counted.assets}
    return AuditReport(_rows(supply, balances, reserves, in_flight), len(pending),
                       counted.channels, tuple(problems))
