"""Workloads, pure: which transaction comes next, reproducible from ``--rng-seed``.

A workload is a mix of kinds (``transfer=70,swap=30``), a share of transactions
that leave their shard (``--cross-shard``: the recipient, or the pool, lives on
another shard), and how hot the targets are (``--hot zipf:S``: recipients and pools
drawn with P(rank k) proportional to 1/k^S; uniform without it). Senders take turns
in a fixed order, so the same seed gives the same transactions (nonces aside, which
come from the chain).
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass

from scripts.cli.load.accounts import Universe

KINDS = ("transfer", "swap")
TRANSFER_AMOUNT = (1, 1_000)
SWAP_AMOUNT = (1_000, 10_000)  # small against 10^15 reserves, large enough not to round to 0


class WorkloadError(ValueError):
    pass


def parse_mix(text: str) -> dict[str, float]:
    """``transfer=70,swap=30`` -> shares summing to 1."""
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
    kind: str  # "transfer" | "swap"
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
        return 1 if self.kind == "transfer" else 2


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

    def _kind(self) -> str:
        x = self._rng.random() * self._kind_cumulative[-1]
        return self._kinds[min(len(self._kinds) - 1,
                               bisect.bisect_right(self._kind_cumulative, x))]

    def next(self) -> Intent:
        """The next transaction of the stream."""
        rng, universe = self._rng, self.universe
        position = self._seq % len(universe.senders)
        sender = universe.senders[position]
        kind = self._kind()
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
