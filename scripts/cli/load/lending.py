"""The lending part of the load generator (issue 18): mix kinds ``supply``, ``borrow``,
``repay``, ``liquidate`` and ``shock``, and the ``price-shock`` preset.

The planner keeps, per sender, what it expects the sender to have supplied and
borrowed if its calls succeed, and sends what makes the requested call possible
first: a supply of collateral before a borrow, a borrow before a repayment.

Senders of the lending shard have a role, alternately in the order they first
send: a borrower supplies the collateral asset (the first market asset with a
price pool) and borrows the quote asset (a ``liquidate`` drawn for it borrows); a
lender supplies the quote asset (the cash borrowers take) and liquidates.

- ``supply``: any sender (from another shard it travels as a SUPPLY receipt: one
  inbound hop, a random market asset); the role's asset on the lending shard.
- ``borrow`` (borrowers of the lending shard; others send a supply): the quote asset, up to
  ``BORROW_SHARE`` of the collateral's value at the pool's spot price as the planner
  estimates it (below); at its limit a borrower liquidates another one instead.
- ``repay`` (lending shard's senders): part of the expected debt, local (a cross-shard
  repayment above the debt would come back as a refund, a second hop).
- ``liquidate`` (lending shard's senders): a known borrower, ``LIQUIDATE_SHARE`` of its
  expected debt; it fails ``healthy`` unless a price move made it liquidatable.
- ``shock``: a large swap of the collateral asset into its lending price pool (the
  price falls; every third shock buys it back partly) by a lending-shard sender.

``price-shock`` (``--mix price-shock``) is the mix ``supply=15,borrow=30,repay=5,
shock=5,liquidate=45``: borrowers near their limit, swaps that move the pool's price
and, once the TWAP follows (the markets' window), liquidations that succeed. Every
lending call of a block on the lending shard reads the same markets and prices: the
hot spot the optimistic executor is for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LENDING_KINDS = frozenset(("supply", "borrow", "repay", "liquidate", "shock"))
PRICE_SHOCK_MIX = "supply=15,borrow=30,repay=5,shock=5,liquidate=45"
SUPPLY_AMOUNT = (100_000, 1_000_000)
BORROW_SHARE = 0.74  # of the collateral's value (CF 0.75 in the testnet's genesis)
LIQUIDATE_SHARE = 0.10  # of the expected debt (close factor 0.5)
SHOCK_SHARE = 0.05  # of the price pool's reserve per shock swap
COLLATERAL_MIN = 100_000  # supplied before a first borrow


@dataclass(frozen=True, slots=True)
class LendingInfo:
    """What the genesis says about the markets (``Universe.lending``)."""

    address: bytes
    shard: int
    quote: int
    assets: tuple[int, ...]
    collateral: int  # the asset borrowers supply: the first with a price pool
    price_pool: bytes  # the collateral's price pool (on ``shard``)
    pool_reserve: int  # its genesis reserve of the collateral asset
    quote_reserve: int  # ... and of the quote asset


@dataclass(frozen=True, slots=True)
class LendingCall:
    """One lending call: ``target`` is the market address (for liquidate, the market
    address followed by the borrower's), ``asset`` the asset (for liquidate,
    ``debt_asset << 32 | collateral_asset``)."""

    kind: str
    target: bytes
    asset: int
    amount: int
    crosses: bool  # a supply from another shard (one inbound hop)


def pack_liquidate(debt_asset: int, collateral_asset: int) -> int:
    return debt_asset << 32 | collateral_asset


def unpack_liquidate(asset: int) -> tuple[int, int]:
    return asset >> 32, asset & 0xFFFF_FFFF


def compute_swap_out(amount: int, reserve_in: int, reserve_out: int) -> int:
    """Uniswap v2 with the 0.3 % fee (sharding/programs.py ``compute_swap_output``)."""
    return amount * 997 * reserve_out // (reserve_in * 1000 + amount * 997)


class LendingPlanner:
    """Draws lending calls; estimates the collateral's spot price from its own shocks
    (nothing else in the workload trades that pool) and borrows up to
    ``BORROW_SHARE`` of the collateral at that price (CF 0.75: a health factor of
    about 1.01 once the TWAP reaches it); the next shock's fall makes it
    liquidatable when the average follows."""

    def __init__(self, info: LendingInfo, rng: random.Random) -> None:
        self.info = info
        self.rng = rng
        self.supplied: dict[bytes, int] = {}  # sender -> collateral supplied (expected)
        self.borrowed: dict[bytes, int] = {}  # sender -> quote borrowed (expected)
        self.borrowers: list[bytes] = []
        self.shocks = 0
        self.roles: dict[bytes, bool] = {}  # lending-shard sender -> is a borrower
        self.reserves = [info.pool_reserve, info.quote_reserve]  # collateral, quote

    def room(self, sender: bytes) -> int:
        collateral, quote = self.reserves
        value = self.supplied.get(sender, 0) * quote // max(collateral, 1)
        return int(value * BORROW_SHARE) - self.borrowed.get(sender, 0)

    def next(self, kind: str, sender: bytes, shard: int) -> LendingCall:
        info, rng = self.info, self.rng
        local = shard == info.shard
        borrower = local and self.roles.setdefault(sender, len(self.roles) % 2 == 0)
        others = [b for b in self.borrowers if b != sender]
        if not local or (kind == "shock" and not local):
            kind = "supply"  # the other lending calls must come from the lending shard
        elif kind in ("liquidate", "supply") and borrower:
            kind = "borrow"  # a borrower goes to its limit (supplying when it has too little)
        elif kind in ("borrow", "repay") and not borrower:
            kind = "supply" if kind == "borrow" or not others else "liquidate"
        if kind == "repay" and self.borrowed.get(sender, 0) <= 0:
            kind = "borrow"
        if kind == "borrow" and self.supplied.get(sender, 0) < COLLATERAL_MIN:
            kind = "supply"
        elif kind == "borrow" and self.room(sender) <= 0:
            kind = "liquidate"  # at its limit: it liquidates another borrower instead
        if kind == "liquidate" and not others:
            kind = "supply"
        if kind == "supply":
            amount = rng.randint(*SUPPLY_AMOUNT)
            if borrower:
                self.supplied[sender] = self.supplied.get(sender, 0) + amount
                asset = info.collateral
            elif local:
                asset = info.quote
            else:
                asset = info.assets[rng.randrange(len(info.assets))]
            return LendingCall("supply", info.address, asset, amount, not local)
        if kind == "borrow":
            amount = self.room(sender)
            self.borrowed[sender] = self.borrowed.get(sender, 0) + amount
            if sender not in self.borrowers:
                self.borrowers.append(sender)
            return LendingCall("borrow", info.address, info.quote, amount, False)
        if kind == "repay":
            amount = max(1, self.borrowed[sender] // 4)
            self.borrowed[sender] -= amount
            return LendingCall("repay", info.address, info.quote, amount, False)
        if kind == "liquidate":
            target = others[rng.randrange(len(others))]
            amount = max(1, int(self.borrowed.get(target, 0) * LIQUIDATE_SHARE))
            return LendingCall("liquidate", info.address + target,
                               pack_liquidate(info.quote, info.collateral), amount, False)
        # shock: dump the collateral into its price pool (every third: buy some back)
        self.shocks += 1
        collateral, quote = self.reserves
        amount = max(1, int(info.pool_reserve * SHOCK_SHARE))
        if self.shocks % 3 == 0:
            amount //= 2
            out = compute_swap_out(amount, quote, collateral)
            self.reserves = [collateral - out, quote + amount]
            return LendingCall("shock", info.price_pool, info.quote, amount, False)
        out = compute_swap_out(amount, collateral, quote)
        self.reserves = [collateral + amount, quote - out]
        return LendingCall("shock", info.price_pool, info.collateral, amount, False)
