"""Checkers of the whole-network simulation, kept apart from the code they judge
(STYLE.md: VOPR; ``consensus/sim/checkers.py`` does the same for one shard).

Safety, on every commit:
- per shard, honest replicas commit one block per height with one state root, under
  a certificate that verifies (``consensus.checkers.Checker``, one per shard);
- every inbound receipt a block applies is byte for byte a receipt its source shard
  emitted in a committed block, and each channel advances by exactly one sequence
  number per receipt (nothing skipped, nothing applied twice); every ``in_cursor``
  equals the number of distinct receipts applied on that channel;
- conservation (PROTOCOL.md section 6), recomputed from the states themselves: for every
  asset, balances + pool reserves over all shards + in flight (per channel,
  ``sent`` at the source - ``received`` at the destination) = genesis supply; no
  channel has a negative amount in flight; each ledger's running audit totals agree
  with its state;
- watched addresses (recipients of fabricated receipts) hold nothing, anywhere.

Liveness, after the healed phase: honest replicas of a shard share one tip, every
submitted transaction is committed, every channel is drained (``in_cursor`` at the
destination = ``out_seq`` at the source, nothing in flight).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from consensus.certificate import CommitCertificate, Verifier
from consensus.kernel.codec import decode, encode
from consensus.kernel.limits import RECORD_BYTES_MAX
from consensus.sim.checkers import Checker
from sharding.block import Block
from sharding.farms import Farm
from sharding.ledger import Ledger
from sharding.receipts import Receipt
from sharding.records import (
    KEY_ACCOUNT,
    KEY_FARM,
    KEY_MARKET,
    KEY_POOL,
    MARKET_KEY_BYTES,
    Account,
    Market,
    Pool,
    get_balance,
    get_in_cursor,
    get_out_seq,
    get_received,
    get_sent,
)
from sharding.state import State, StateReader


def compute_holdings(state: State) -> tuple[dict[int, int], dict[int, int]]:
    """(balances, reserves) per asset, read from every record of ``state``; reserves are
    what programs hold: pool reserves, farms' unpaid reward budgets, markets' cash."""
    balances: dict[int, int] = {}
    reserves: dict[int, int] = {}
    for key, value in state.items():
        if key[:1] == KEY_ACCOUNT:
            for b in decode(value, Account, RECORD_BYTES_MAX).balances:
                balances[b.asset] = balances.get(b.asset, 0) + b.amount
        elif key[:1] == KEY_POOL:
            pool = decode(value, Pool, RECORD_BYTES_MAX)
            reserves[pool.asset_a] = reserves.get(pool.asset_a, 0) + pool.reserve_a
            reserves[pool.asset_b] = reserves.get(pool.asset_b, 0) + pool.reserve_b
        elif key[:1] == KEY_FARM:
            farm = decode(value, Farm, RECORD_BYTES_MAX)
            reserves[farm.reward_asset] = reserves.get(farm.reward_asset, 0) + farm.rewards
        elif key[:1] == KEY_MARKET and len(key) == MARKET_KEY_BYTES:
            market = decode(value, Market, RECORD_BYTES_MAX)
            reserves[market.asset] = reserves.get(market.asset, 0) + market.cash
    return balances, reserves


@dataclass
class CrossShardChecker:
    chain_id: str
    validators: Sequence[Sequence[bytes]]  # [shard][index]
    verify: Verifier
    supply: Mapping[int, int]  # genesis supply per asset
    watched: Mapping[int, bytes] = field(default_factory=dict)  # shard -> address
    violations: list[str] = field(default_factory=list)
    pbft: list[Checker] = field(init=False)
    emitted: dict[tuple[int, int, int], bytes] = field(default_factory=dict)
    applied: int = 0  # receipts applied, over all shards (first commit of each height)
    # shard -> cursor per source after each recorded height (index = height)
    cursors: dict[int, list[dict[int, int]]] = field(default_factory=dict)
    out_seqs: dict[int, list[dict[int, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shards = len(self.validators)
        self.pbft = [Checker(self.chain_id, s, self.validators[s], self.verify)
                     for s in range(shards)]
        empty = {s: 0 for s in range(shards)}
        self.cursors = {s: [dict(empty)] for s in range(shards)}
        self.out_seqs = {s: [dict(empty)] for s in range(shards)}

    @property
    def ok(self) -> bool:
        return not self.violations and all(c.ok for c in self.pbft)

    def all_violations(self) -> list[str]:
        return [*self.violations,
                *(f"shard {c.shard}: {v}" for c in self.pbft for v in c.violations)]

    def _fail(self, text: str) -> None:
        self.violations.append(text)

    # -- per commit -----------------------------------------------------------------------

    def on_block(self, shard: int, index: int, height: int, digest: bytes, block: Block,
                 receipts: Sequence[Receipt], cert: CommitCertificate, state: StateReader,
                 state_root: bytes, honest: bool) -> None:
        """A commit as a node's store holds it: the block, the receipts it emitted and
        the node's state at that height (``state``, ``state_root``: the store's, since
        the ledger may already have applied the next height, issue 16)."""
        node = f"{shard}/{index}"
        if honest:
            self.pbft[shard].on_commit(index, height, digest, cert, state_root)
        if height == len(self.cursors[shard]):
            self._record(shard, height, block, receipts)
        cursors = self.cursors[shard][height]
        out_seqs = self.out_seqs[shard][height]
        for other in cursors:
            # Verify the ledger's channel counters are the receipts counted so far.
            if other != shard and get_in_cursor(state, other) != cursors[other]:
                self._fail(f"node {node}: in_cursor[{other}] = "
                           f"{get_in_cursor(state, other)} after {cursors[other]} "
                           f"receipts applied at height {height}")
            if other != shard and get_out_seq(state, other) != out_seqs[other]:
                self._fail(f"node {node}: out_seq[{other}] differs from the receipts emitted")

    def _record(self, shard: int, height: int, block: Block, receipts: Sequence[Receipt]
                ) -> None:
        """The first commit of (shard, height): what it applied and what it emitted."""
        cursors = dict(self.cursors[shard][height - 1])
        for receipt in block.inbound:
            src, seq = receipt.src_shard, receipt.seq
            where = f"shard {shard} height {height}: receipt {src}->{shard} seq {seq}"
            # Verify the channel advances by exactly one: no duplicate, no gap.
            if seq != cursors.get(src, 0) + 1:
                self._fail(f"{where} applied after seq {cursors.get(src, 0)}")
            # Verify the receipt is one its source shard emitted, unchanged.
            if self.emitted.get((src, shard, seq)) != encode(receipt):
                self._fail(f"{where} was never emitted as applied (fabricated)")
            cursors[src] = seq
            self.applied += 1
        out_seqs = dict(self.out_seqs[shard][height - 1])
        for receipt in receipts:
            dst, seq = receipt.dst_shard, receipt.seq
            if seq != out_seqs.get(dst, 0) + 1:
                self._fail(f"shard {shard} height {height}: emitted {shard}->{dst} seq {seq} "
                           f"after {out_seqs.get(dst, 0)}")
            out_seqs[dst] = seq
            self.emitted[(shard, dst, seq)] = encode(receipt)
        self.cursors[shard].append(cursors)
        self.out_seqs[shard].append(out_seqs)

    def check_conservation(self, ledgers: Mapping[int, Ledger], where: str) -> None:
        """The audit invariant over one committed ledger per shard (the most advanced,
        so that what a destination received was sent by a state we read)."""
        shards = sorted(ledgers)
        total: dict[int, int] = {}
        for shard in shards:
            ledger = ledgers[shard]
            balances, reserves = compute_holdings(ledger.state)
            # Verify the ledger's running totals (what the node's audit serves) agree.
            if ({a: n for a, n in ledger.balances.items() if n} != balances
                    or {a: n for a, n in ledger.reserves.items() if n} != reserves):
                self._fail(f"{where}: shard {shard} running audit totals differ from its state")
            for held in (balances, reserves):
                for asset, amount in held.items():
                    total[asset] = total.get(asset, 0) + amount
            watched = self.watched.get(shard)
            if watched is not None:
                for asset in self.supply:
                    if get_balance(ledger.state, watched, asset):
                        self._fail(f"{where}: fabricated funds exist on shard {shard}")
        for src in shards:
            for dst in shards:
                if src == dst:
                    continue
                for asset in self.supply:
                    flying = (get_sent(ledgers[src].state, dst, asset)
                              - get_received(ledgers[dst].state, src, asset))
                    # Verify no destination received more than its source sent.
                    if flying < 0:
                        self._fail(f"{where}: channel {src}->{dst} asset {asset} received "
                                   f"{-flying} more than was sent")
                    total[asset] = total.get(asset, 0) + flying
        for asset in sorted(set(total) | set(self.supply)):
            # Verify balances + reserves + in flight = genesis supply, per asset.
            if total.get(asset, 0) != self.supply.get(asset, 0):
                self._fail(f"{where}: asset {asset} totals {total.get(asset, 0)}, "
                           f"supply {self.supply.get(asset, 0)}")

    # -- after healing ----------------------------------------------------------------------

    def check_final(self, honest: Mapping[int, Sequence[tuple[str, Ledger]]],
                    submitted: Iterable[tuple[int, bytes, int]]) -> None:
        """``honest``: shard -> (name, ledger) of every honest replica; ``submitted``:
        (shard, sender, transactions submitted) per sender."""
        for shard, replicas in honest.items():
            tips = {(ledger.height, ledger.state.root) for _, ledger in replicas}
            if len(tips) > 1:
                listing = ", ".join(f"{name}@{ledger.height}" for name, ledger in replicas)
                self._fail(f"shard {shard} not converged after healing: {listing}")
        for shard, sender, count in submitted:
            for name, ledger in honest[shard]:
                if ledger.committed_nonce(sender) != count:
                    self._fail(f"node {name}: {count - ledger.committed_nonce(sender)} "
                               f"transactions of {sender.hex()[:8]} never committed")
                    break
        leaders = {s: max(r, key=lambda item: item[1].height)[1]
                   for s, r in honest.items() if r}
        for src, source in leaders.items():
            for dst, destination in leaders.items():
                if src != dst and (get_out_seq(source.state, dst)
                                   != get_in_cursor(destination.state, src)):
                    self._fail(f"channel {src}->{dst} not drained: out_seq "
                               f"{get_out_seq(source.state, dst)}, in_cursor "
                               f"{get_in_cursor(destination.state, src)}")
        if len(leaders) == len(self.validators):
            self.check_conservation(leaders, "after healing")
