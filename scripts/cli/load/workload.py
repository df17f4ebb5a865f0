"""Workloads, pure: which transaction comes next, reproducible from ``--rng-seed``.

A workload is a mix of kinds (``transfer=70,swap=30``), a share of transactions
that leave their shard (``--cross-shard``: the recipient, or the pool, lives on
another shard), and how hot the targets are (``--hot zipf:S``: recipients and pools
drawn with P(rank k) proportional to 1/k^S; uniform without it). Senders take turns
in a fixed order, so the same seed gives the same transactions (nonces aside, which
come from the chain).

Liquidity and farm kinds (``add_liquidity``, ``remove_liquidity``, ``stake``,
``unstake``, ``harvest``) always stay on the sender's shard (the calls must: LP shares
and stakes live next to the pool), on a pool of that shard drawn uniformly (a farmed
one for farm calls). The workload keeps, per sender and pool, the LP shares and the
stake it expects the sender to hold if its calls succeed, and sends what makes the
requested call possible first: an ``add_liquidity`` before a stake or a removal
without enough shares, a ``stake`` before a harvest or an unstake without a stake.
A sender with no such pool on its shard sends a transfer instead.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass

from scripts.cli.load.accounts import Universe
from scripts.cli.load.lending import LENDING_KINDS, PRICE_SHOCK_MIX, LendingPlanner

KINDS = ("transfer", "swap", "add_liquidity", "remove_liquidity", "stake", "unstake", "harvest",
         "supply", "borrow", "repay", "liquidate", "shock")
MIX_PRESETS = {"price-shock": PRICE_SHOCK_MIX}  # issue 18: scripts/cli/load/lending.py
LIQUIDITY_KINDS = frozenset(("add_liquidity", "remove_liquidity"))
FARM_KINDS = frozenset(("stake", "unstake", "harvest"))
TRANSFER_AMOUNT = (1, 1_000)
SWAP_AMOUNT = (1_000, 10_000)  # small against 10^15 reserves, large enough not to round to 0
DEPOSIT_AMOUNT = (1_000, 10_000)  # of each asset: mints about as many shares at 1:1
DEPOSIT_SHARES_EXPECTED = 500  # counted per deposit: safe while the price is within 2x
SHARES_MOVED = (1, 100)  # shares staked, unstaked or removed per call


class WorkloadError(ValueError):
    pass


def parse_mix(text: str) -> dict[str, float]:
    """``transfer=70,swap=30`` -> shares summing to 1; a preset name (``price-shock``)
    stands for its mix."""
    text = MIX_PRESETS.get(text.strip(), text)
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise WorkloadError(f"--mix: unknown kind {name!r} (known: {', '.join(KINDS)})")
        try:
            weights[name] = float(value)
        except ValueError:
            raise WorkloadError(f"--mix: {part!r} is not KIND=WEIGHT") from None
        if weights[name] < 0:
            raise WorkloadError(f"--mix: negative weight for {name}")
    total = sum(weights.values())
    if total <= 0:
        raise WorkloadError("--mix: the weights add up to 0")
    return {name: weight / total for name, weight in weights.items()}


def parse_hot(text: str | None) -> float | None:
    """``zipf:1.1`` -> 1.1; ``uniform`` or nothing -> None."""
    if text is None or text in ("", "uniform", "none"):
        return None
    kind, _, value = text.partition(":")
    try:
        exponent = float(value)
    except ValueError:
        exponent = -1.0
    if kind != "zipf" or exponent <= 0:
        raise WorkloadError(f"--hot {text!r}: expected zipf:S with S > 0, or uniform")
    return exponent


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    mix: dict[str, float]
    cross_shard: float = 0.0
    hot: float | None = None
    rng_seed: int = 1


@dataclass(frozen=True, slots=True)
class Intent:
    """One transaction to send, before its nonce and signature."""

    seq: int
    sender: int  # position in Universe.senders
    kind: str  # one of KINDS
    target: bytes  # recipient or pool address
    asset: int
    amount: int
    src_shard: int
    dst_shard: int

    @property
    def inbound_hops(self) -> int:
        """Inbound receipt applications that finalize it: a cross-shard transfer is
        credited on its destination; a cross-shard swap runs at the pool, then its
        output (or refund) is credited at home."""
        if self.src_shard == self.dst_shard:
            return 0
        return 1 if self.kind in ("transfer", "supply") else 2


class _Picker:
    """Uniform or Zipf choice over a fixed list (rank = position)."""

    def __init__(self, size: int, exponent: float | None) -> None:
        self.size = size
        self.cumulative = (list(itertools.accumulate(1 / (k ** exponent)
                                                     for k in range(1, size + 1)))
                           if exponent is not None and size > 0 else None)

    def pick(self, rng: random.Random) -> int:
        if self.cumulative is None:
            return rng.randrange(self.size)
        x = rng.random() * self.cumulative[-1]
        return min(self.size - 1, bisect.bisect_right(self.cumulative, x))


class Workload:
    def __init__(self, spec: WorkloadSpec, universe: Universe) -> None:
        self.spec = spec
        self.universe = universe
        self._rng = random.Random(spec.rng_seed)
        self._seq = 0
        self._kinds = [k for k in KINDS if spec.mix.get(k, 0) > 0]
        self._kind_cumulative = list(itertools.accumulate(spec.mix[k] for k in self._kinds))
        self._recipients = {s: _Picker(len(v), spec.hot) for s, v in universe.recipients.items()}
        self._pools = {s: _Picker(len(v), spec.hot) for s, v in universe.pools.items()}
        if spec.cross_shard > 0 and universe.num_shards < 2:
            raise WorkloadError("--cross-shard needs at least 2 shards")
        if "swap" in self._kinds and not any(universe.pools.values()):
            raise WorkloadError("--mix has swaps but the genesis has no pool")
        if LIQUIDITY_KINDS & set(self._kinds) and not any(universe.pools.values()):
            raise WorkloadError("--mix has liquidity calls but the genesis has no pool")
        if FARM_KINDS & set(self._kinds) and not any(
                pool.farmed for pools in universe.pools.values() for pool in pools):
            raise WorkloadError("--mix has farm calls but the genesis has no farm")
        if LENDING_KINDS & set(self._kinds) and universe.lending is None:
            raise WorkloadError("--mix has lending calls but the genesis has no markets")
        self._lending = (LendingPlanner(universe.lending, self._rng)
                         if universe.lending is not None else None)
        # Expected LP shares and stake per (sender position, pool), if calls succeed.
        self._free: dict[tuple[int, bytes], int] = {}
        self._staked: dict[tuple[int, bytes], int] = {}

    def _kind(self) -> str:
        x = self._rng.random() * self._kind_cumulative[-1]
        return self._kinds[min(len(self._kinds) - 1,
                               bisect.bisect_right(self._kind_cumulative, x))]

    def _pool_call(self, kind: str, position: int) -> Intent | None:
        """A liquidity or farm call of the sender at ``position`` on a pool of its shard
        (or what must come before it); None when its shard has no suitable pool."""
        rng = self._rng
        shard = self.universe.senders[position].shard
        pools = [p for p in self.universe.pools[shard] if kind in LIQUIDITY_KINDS or p.farmed]
        if not pools:
            return None
        pool = pools[rng.randrange(len(pools))]
        entry = (position, pool.address)
        free, staked = self._free.get(entry, 0), self._staked.get(entry, 0)
        low, high = SHARES_MOVED
        if kind in ("harvest", "unstake") and staked < high:
            kind = "stake"
        if kind in ("stake", "remove_liquidity") and free < high:
            kind = "add_liquidity"
        amount = 0
        if kind == "add_liquidity":
            amount = rng.randint(*DEPOSIT_AMOUNT)
            free += DEPOSIT_SHARES_EXPECTED
        elif kind == "stake":
            amount = rng.randint(low, high)
            free, staked = free - amount, staked + amount
        elif kind == "unstake":
            amount = rng.randint(low, high)
            free, staked = free + amount, staked - amount
        elif kind == "remove_liquidity":
            amount = rng.randint(low, high)
            free -= amount
        self._free[entry], self._staked[entry] = free, staked
        return Intent(self._seq, position, kind, pool.address, pool.assets[0], amount,
                      shard, shard)

    def next(self) -> Intent:
        """The next transaction of the stream."""
        rng, universe = self._rng, self.universe
        position = self._seq % len(universe.senders)
        sender = universe.senders[position]
        kind = self._kind()
        if kind in LENDING_KINDS and self._lending is not None:
            made = self._lending.next(kind, sender.address, sender.shard)
            dst = self._lending.info.shard if made.crosses else sender.shard
            self._seq += 1
            return Intent(self._seq - 1, position, made.kind, made.target, made.asset,
                          made.amount, sender.shard, dst)
        if kind in LIQUIDITY_KINDS or kind in FARM_KINDS:
            pool_call = self._pool_call(kind, position)
            if pool_call is not None:
                self._seq += 1
                return pool_call
            kind = "transfer"
        crosses = rng.random() < self.spec.cross_shard
        dst = sender.shard
        if crosses:
            dst = (sender.shard + 1 + rng.randrange(universe.num_shards - 1)) % \
                universe.num_shards
        if kind == "swap" and not universe.pools[dst]:
            # No pool on that shard: another shard with one, on the same side of the
            # shard boundary; a transfer when there is none.
            shards = [s for s in range(universe.num_shards)
                      if universe.pools[s] and (s != sender.shard) == crosses]
            if shards:
                dst = shards[rng.randrange(len(shards))]
            else:
                kind = "transfer"
        if kind == "swap":
            pool = universe.pools[dst][self._pools[dst].pick(rng)]
            asset = pool.assets[rng.randrange(2)]
            intent = Intent(self._seq, position, "swap", pool.address, asset,
                            rng.randint(*SWAP_AMOUNT), sender.shard, dst)
        else:
            recipients = universe.recipients[dst]
            target = recipients[self._recipients[dst].pick(rng)] if recipients else \
                sender.address
            asset = universe.assets[rng.randrange(len(universe.assets))]
            intent = Intent(self._seq, position, "transfer", target, asset,
                            rng.randint(*TRANSFER_AMOUNT), sender.shard,
                            dst if recipients else sender.shard)
        self._seq += 1
        return intent
