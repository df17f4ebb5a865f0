"""Lending markets (PROTOCOL.md, "Lending"; issue 18): Compound-style, one market
per asset, all on the lending shard named in the genesis.

State: ``LendingConfig`` (key ``L``: the program's address, the quote asset, the
assets), one ``Market`` per asset (key ``L`` asset) and one ``Position`` per
account (key ``P`` owner) holding, per asset, supply shares (collateral) and a
debt principal with the borrow index it was last set at.

Interest accrues once per block, on the first call that touches a market in that
block (``ShardParams.height``): with utilisation ``u = borrows / (cash + borrows -
reserves)`` the rate per block is ``base + min(u, kink) * slope + max(u - kink, 0) *
jump`` (WAD = 10**18 fixed point), and over ``dt`` blocks ``borrows`` grows by
``borrows * rate * dt``, ``reserves`` by the reserve factor of that, and the borrow
index by ``index * rate * dt``. A read of another market (a health check) accrues
it in memory the same way, without writing.

Prices: ``sharding.oracle`` TWAP of the pool pairing the asset with the quote
asset on this shard (named per market at genesis); the quote asset is worth 1. An
asset without such a pool has no price: it counts for nothing as collateral and
cannot be borrowed (``no_price``).

Health: ``collateral = sum(shares' underlying * price * CF)`` rounded down,
``debt = sum(debt * price)`` rounded up; borrow and withdraw must leave
``collateral >= debt``; liquidation needs ``collateral < debt`` (health factor
below 1), repays at most ``close_factor`` of one debt and takes collateral shares
worth ``repay * (1 + bonus)`` (the collateral market's bonus).

Rounding never favours the user over the protocol: the rate, interest, the borrow
index and debts round up; shares minted, collateral value, seized amounts round
down; shares burnt by a withdrawal round up. A u64 that would overflow fails the
call with ``overflow``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from consensus.kernel.codec import U64_MAX, decode, encode
from consensus.kernel.limits import RECORD_BYTES_MAX
from sharding.accounts import shard_of
from sharding.oracle import Q64, Price, decode_int, encode_int, get_twap
from sharding.receipts import CREDIT, SUPPLY, WITHDRAW, Receipt, get_refund
from sharding.records import (
    CallFailed,
    Holding,
    LendingConfig,
    Market,
    Position,
    ShardParams,
    get_pool,
    market_config_key,
    market_key,
    position_key,
    process_credit,
    process_debit,
)
from sharding.state import Overlay, StateReader, StateView

WAD = 10**18
INDEX_ONE = encode_int(WAD)
INDEX_MAX = 2**255
INFINITE = 2**512  # the value of a debt that has no price: never covered


@dataclass(frozen=True, slots=True)
class Health:
    """Collateral value (times CF, rounded down) and debt value (rounded up), in
    quote units times 2**64; healthy when ``collateral >= debt``."""

    collateral: int
    debt: int

    @property
    def healthy(self) -> bool:
        return self.collateral >= self.debt

    def factor_wad(self) -> int | None:
        """Health factor in WAD (None without debt)."""
        return None if self.debt == 0 else self.collateral * WAD // self.debt


# ---------------------------------------------------------------------------
# Records


def get_lending_config(view: StateReader) -> LendingConfig | None:
    raw = view.get(market_config_key())
    return None if raw is None else decode(raw, LendingConfig, RECORD_BYTES_MAX, canonical=False)


def get_market(view: StateReader, asset: int) -> Market | None:
    raw = view.get(market_key(asset))
    return None if raw is None else decode(raw, Market, RECORD_BYTES_MAX, canonical=False)


def put_market(view: StateView, market: Market) -> None:
    view.set(market_key(market.asset), encode(market))


def get_position(view: StateReader, owner: bytes) -> Position:
    raw = view.get(position_key(owner))
    if raw is None:
        return Position([])
    return decode(raw, Position, RECORD_BYTES_MAX, canonical=False)


def put_position(view: StateView, owner: bytes, position: Position) -> None:
    if position.holdings:
        view.set(position_key(owner), encode(position))
    else:
        view.delete(position_key(owner))


def get_holding(position: Position, asset: int) -> Holding:
    for holding in position.holdings:
        if holding.asset == asset:
            return holding
    return Holding(asset, 0, 0, INDEX_ONE)


def compute_with_holding(position: Position, holding: Holding) -> Position:
    others = [h for h in position.holdings if h.asset != holding.asset]
    if holding.shares or holding.principal:
        others.append(holding)
        others.sort(key=lambda h: h.asset)
    return Position(others)


# ---------------------------------------------------------------------------
# Market math (pure)


def compute_ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def check_u64(*values: int) -> None:
    # Verify every amount stays a u64.
    if max(values) > U64_MAX:
        raise CallFailed("amount would exceed u64", reason="overflow")


def compute_utilisation(market: Market) -> int:
    """borrows / (cash + borrows - reserves), WAD, rounded down; 0 without borrows."""
    base = market.cash + market.borrows - market.reserves
    if market.borrows == 0 or base <= 0:
        return 0
    return min(market.borrows * WAD // base, WAD)


def compute_borrow_rate(market: Market) -> int:
    """Per block, WAD, rounded up: the kinked (jump-rate) model."""
    u = compute_utilisation(market)
    below = min(u, market.kink)
    above = max(u - market.kink, 0)
    return (market.base_rate + compute_ceil_div(below * market.slope, WAD)
            + compute_ceil_div(above * market.jump, WAD))


def compute_accrued(market: Market, height: int) -> Market:
    """The market after accruing interest up to ``height`` (unchanged when it already has)."""
    if height <= market.last_height:
        return market
    factor = compute_borrow_rate(market) * (height - market.last_height)
    interest = compute_ceil_div(market.borrows * factor, WAD)
    borrows = market.borrows + interest
    reserves = market.reserves + interest * market.reserve_factor // WAD
    check_u64(borrows, reserves)
    index = decode_int(market.borrow_index)
    new_index = index + compute_ceil_div(index * factor, WAD)
    # Verify the index still fits its 32 bytes (a market left at its maximum rate for
    # thousands of blocks; debts would have overflowed first while anything is borrowed).
    if new_index >= INDEX_MAX:
        raise CallFailed("borrow index would exceed 2**255", reason="overflow")
    return msgspec.structs.replace(
        market, borrows=borrows, reserves=reserves, borrow_index=encode_int(new_index),
        last_height=height,
    )


def compute_underlying(market: Market) -> int:
    """What all supply shares are worth: cash + borrows - reserves (never negative)."""
    return max(market.cash + market.borrows - market.reserves, 0)


def compute_shares_value(market: Market, shares: int) -> int:
    """Underlying worth of ``shares``, rounded down."""
    if market.shares == 0:
        return 0
    return shares * compute_underlying(market) // market.shares


def compute_debt(holding: Holding, market: Market) -> int:
    """The holding's debt at the market's index, rounded up."""
    if holding.principal == 0:
        return 0
    return compute_ceil_div(holding.principal * decode_int(market.borrow_index),
                            decode_int(holding.index))


def compute_collateral_value(amount: int, price: Price, factor_wad: int) -> int:
    num, den = price
    return amount * num * factor_wad // (den * WAD)


def compute_debt_value(amount: int, price: Price) -> int:
    num, den = price
    return compute_ceil_div(amount * num, den)


# ---------------------------------------------------------------------------
# Reads with accrual and prices


def get_price(view: StateReader, config: LendingConfig, market: Market,
              height: int) -> Price | None:
    """The market's asset in quote units (Q64 rational), or None without a price."""
    if market.asset == config.quote:
        return Q64, 1
    if not market.price_pool:
        return None
    pool = get_pool(view, market.price_pool)
    if pool is None:
        return None
    return get_twap(view, market.price_pool, pool, market.asset, height)


def get_accrued_market(view: StateReader, asset: int, height: int) -> Market:
    market = get_market(view, asset)
    # Verify the asset has a market.
    if market is None:
        raise CallFailed(f"no market for asset {asset}", reason="no_market")
    return compute_accrued(market, height)


def get_health(view: StateReader, config: LendingConfig, position: Position,
               height: int) -> Health:
    collateral = debt = 0
    for holding in position.holdings:
        market = get_accrued_market(view, holding.asset, height)
        price = get_price(view, config, market, height)
        if holding.shares and price is not None:
            collateral += compute_collateral_value(
                compute_shares_value(market, holding.shares), price, market.collateral_factor)
        owed = compute_debt(holding, market)
        if owed:
            debt += INFINITE if price is None else compute_debt_value(owed, price)
    return Health(collateral, debt)


def get_config_for(view: StateReader, address: bytes) -> LendingConfig:
    config = get_lending_config(view)
    # Verify this shard runs the lending program at that address.
    if config is None or config.address != address:
        raise CallFailed("no lending program at that address", reason="no_lending")
    return config


def check_healthy(view: StateReader, config: LendingConfig, owner: bytes, height: int) -> None:
    health = get_health(view, config, get_position(view, owner), height)
    # Verify the account's collateral still covers its debt.
    if not health.healthy:
        raise CallFailed("collateral would not cover the debt", reason="undercollateralised")


# ---------------------------------------------------------------------------
# Transitions on the lending shard (shared by local calls and receipts)


def process_market_supply(view: StateView, params: ShardParams, address: bytes, owner: bytes,
                          asset: int, amount: int) -> None:
    """Add ``amount`` (already taken from the supplier) to the market; mint shares."""
    get_config_for(view, address)
    market = get_accrued_market(view, asset, params.height)
    underlying = compute_underlying(market)
    minted = amount if market.shares == 0 else amount * market.shares // max(underlying, 1)
    # Verify the amount is worth at least one share.
    if minted == 0:
        raise CallFailed(f"{amount} mints no share", reason="dust")
    position = get_position(view, owner)
    holding = get_holding(position, asset)
    check_u64(market.cash + amount, market.shares + minted, holding.shares + minted)
    put_market(view, msgspec.structs.replace(
        market, cash=market.cash + amount, shares=market.shares + minted))
    put_position(view, owner, compute_with_holding(
        position, msgspec.structs.replace(holding, shares=holding.shares + minted)))


def process_market_repay(view: StateView, params: ShardParams, address: bytes, owner: bytes,
                         asset: int, amount: int) -> int:
    """Repay up to ``amount`` of ``owner``'s debt; return what was repaid."""
    get_config_for(view, address)
    market = get_accrued_market(view, asset, params.height)
    position = get_position(view, owner)
    holding = get_holding(position, asset)
    owed = compute_debt(holding, market)
    # Verify there is a debt to repay.
    if owed == 0:
        raise CallFailed(f"no debt in asset {asset}", reason="no_debt")
    paid = min(amount, owed)
    check_u64(market.cash + paid)
    put_market(view, msgspec.structs.replace(
        market, cash=market.cash + paid, borrows=max(market.borrows - paid, 0)))
    put_position(view, owner, compute_with_holding(position, msgspec.structs.replace(
        holding, principal=owed - paid, index=market.borrow_index)))
    return paid


# ---------------------------------------------------------------------------
# Calls


def process_withdraw(view: StateView, params: ShardParams, sender: bytes, address: bytes,
                     asset: int, amount: int) -> None:
    """Withdraw on the lending shard: burn the shares, credit the sender."""
    process_market_withdraw(view, params, sender, address, asset, amount)
    process_credit(view, sender, asset, amount)


def process_market_withdraw(view: StateView, params: ShardParams, sender: bytes,
                            address: bytes, asset: int, amount: int) -> None:
    """Burn the shares ``amount`` is worth and take it from the market's cash; the
    position must stay healthy. The caller credits ``amount`` (here or by receipt)."""
    config = get_config_for(view, address)
    market = get_accrued_market(view, asset, params.height)
    position = get_position(view, sender)
    holding = get_holding(position, asset)
    underlying = compute_underlying(market)
    # Verify the market has supply to withdraw from.
    if market.shares == 0 or underlying == 0:
        raise CallFailed("nothing supplied", reason="insufficient_shares")
    burnt = compute_ceil_div(amount * market.shares, underlying)
    # Verify the sender owns the shares the amount is worth.
    if burnt > holding.shares:
        raise CallFailed(f"needs {burnt} shares, owns {holding.shares}",
                         reason="insufficient_shares")
    # Verify the market holds the cash.
    if amount > market.cash:
        raise CallFailed(f"market cash {market.cash} < {amount}", reason="insufficient_cash")
    put_market(view, msgspec.structs.replace(
        market, cash=market.cash - amount, shares=market.shares - burnt))
    put_position(view, sender, compute_with_holding(
        position, msgspec.structs.replace(holding, shares=holding.shares - burnt)))
    check_healthy(view, config, sender, params.height)


def process_borrow(view: StateView, params: ShardParams, sender: bytes, address: bytes,
                   asset: int, amount: int) -> None:
    config = get_config_for(view, address)
    market = get_accrued_market(view, asset, params.height)
    # Verify the asset has a price (a debt must be valued).
    if get_price(view, config, market, params.height) is None:
        raise CallFailed(f"asset {asset} has no price", reason="no_price")
    # Verify the market holds the cash.
    if amount > market.cash:
        raise CallFailed(f"market cash {market.cash} < {amount}", reason="insufficient_cash")
    position = get_position(view, sender)
    holding = get_holding(position, asset)
    owed = compute_debt(holding, market) + amount
    check_u64(owed, market.borrows + amount)
    put_market(view, msgspec.structs.replace(
        market, cash=market.cash - amount, borrows=market.borrows + amount))
    put_position(view, sender, compute_with_holding(position, msgspec.structs.replace(
        holding, principal=owed, index=market.borrow_index)))
    process_credit(view, sender, asset, amount)
    check_healthy(view, config, sender, params.height)


def process_liquidate(view: StateView, params: ShardParams, sender: bytes, address: bytes,
                      borrower: bytes, debt_asset: int, amount: int,
                      collateral_asset: int) -> None:
    config = get_config_for(view, address)
    height = params.height
    # Verify the liquidator is not the borrower.
    if borrower == sender:
        raise CallFailed("cannot liquidate oneself", reason="self_liquidation")
    # Verify the collateral and the debt are different markets (shares for a repayment
    # in the same asset would let the liquidator skip the bonus accounting).
    if debt_asset == collateral_asset:
        raise CallFailed("collateral and debt are the same asset", reason="bad_asset")
    position = get_position(view, borrower)
    # Verify the borrower's health factor is below 1.
    if get_health(view, config, position, height).healthy:
        raise CallFailed("the position is healthy", reason="healthy")
    debt_market = get_accrued_market(view, debt_asset, height)
    coll_market = get_accrued_market(view, collateral_asset, height)
    debt_holding = get_holding(position, debt_asset)
    owed = compute_debt(debt_holding, debt_market)
    # Verify the borrower owes that asset.
    if owed == 0:
        raise CallFailed(f"no debt in asset {debt_asset}", reason="no_debt")
    # Verify the repayment is within the close factor.
    if amount > owed * debt_market.close_factor // WAD:
        raise CallFailed(f"repays {amount} of {owed} above the close factor",
                         reason="exceeds_close_factor")
    debt_price = get_price(view, config, debt_market, height)
    coll_price = get_price(view, config, coll_market, height)
    # Verify both assets have a price.
    if debt_price is None or coll_price is None:
        raise CallFailed("an asset has no price", reason="no_price")
    value = amount * debt_price[0] * coll_price[1] * (WAD + coll_market.liquidation_bonus)
    seized = value // (debt_price[1] * coll_price[0] * WAD)
    underlying = compute_underlying(coll_market)
    seized_shares = 0 if underlying == 0 else seized * coll_market.shares // underlying
    # Verify the repayment is worth at least one collateral share.
    if seized_shares == 0:
        raise CallFailed(f"repaying {amount} seizes nothing", reason="dust")
    coll_holding = get_holding(position, collateral_asset)
    # Verify the borrower holds the collateral to seize.
    if seized_shares > coll_holding.shares:
        raise CallFailed(f"seizes {seized_shares} of {coll_holding.shares} shares",
                         reason="insufficient_collateral")
    process_debit(view, sender, debt_asset, amount)
    check_u64(debt_market.cash + amount)
    put_market(view, msgspec.structs.replace(
        debt_market, cash=debt_market.cash + amount,
        borrows=max(debt_market.borrows - amount, 0)))
    put_market(view, coll_market)  # accrued
    position = compute_with_holding(position, msgspec.structs.replace(
        debt_holding, principal=owed - amount, index=debt_market.borrow_index))
    position = compute_with_holding(position, msgspec.structs.replace(
        coll_holding, shares=coll_holding.shares - seized_shares))
    put_position(view, borrower, position)
    mine = get_position(view, sender)
    taken = get_holding(mine, collateral_asset)
    check_u64(taken.shares + seized_shares)
    put_position(view, sender, compute_with_holding(
        mine, msgspec.structs.replace(taken, shares=taken.shares + seized_shares)))


# ---------------------------------------------------------------------------
# Supply and repay: local, or a receipt to the lending shard


def process_lending_request(view: StateView, params: ShardParams, origin: bytes, sender: bytes,
                            kind: int, address: bytes, asset: int, amount: int,
                            outbox: list[Receipt]) -> None:
    """Supply, repay or withdraw. Local: apply (a repayment debits only what it repays).
    Remote: debit ``amount`` and send a SUPPLY or REPAY receipt to the lending shard,
    or, for a withdrawal, a WITHDRAW receipt asking for ``amount`` (carrying none)."""
    dst = shard_of(address, params.num_shards)
    if dst != params.shard:
        withdraw = kind == WITHDRAW
        if not withdraw:
            process_debit(view, sender, asset, amount)
        outbox.append(Receipt(
            src_shard=params.shard, dst_shard=dst, seq=0, kind=kind, origin=origin,
            sender=sender, recipient=sender, asset=asset, amount=0 if withdraw else amount,
            pool=address, min_out=amount if withdraw else 0,
        ))
        return
    if kind == WITHDRAW:
        process_withdraw(view, params, sender, address, asset, amount)
        return
    if kind == SUPPLY:
        process_debit(view, sender, asset, amount)
        process_market_supply(view, params, address, sender, asset, amount)
        return
    paid = process_market_repay(view, params, address, sender, asset, amount)
    process_debit(view, sender, asset, paid)


def process_receipt_lending(view: StateView, params: ShardParams, receipt: Receipt,
                            outbox: list[Receipt],
                            credit_home: Callable[[StateView, Receipt], None]) -> str:
    """SUPPLY / REPAY from another shard: apply, or refund the whole amount (REFUND with
    the reason); a repayment above the debt refunds the excess. WITHDRAW: withdraw for
    the account (which must live on the receipt's source shard) and send what was
    withdrawn home as a CREDIT, or a REFUND of nothing naming the reason. Returns the
    error."""
    attempt = Overlay(view)
    refund: Receipt | None = None
    if receipt.kind == WITHDRAW:
        try:
            # Verify the request comes from the owner's own shard.
            if shard_of(receipt.recipient, params.num_shards) != receipt.src_shard:
                raise CallFailed("the owner lives on another shard", reason="wrong_owner")
            process_market_withdraw(attempt, params, receipt.recipient, receipt.pool,
                                    receipt.asset, receipt.min_out)
        except CallFailed as exc:
            # A REFUND of nothing says why, on the account's shard (like a swap's).
            credit_home(view, get_refund(receipt, params.shard, exc.reason))
            return exc.reason
        attempt.commit()
        credit_home(view, Receipt(
            src_shard=params.shard, dst_shard=receipt.src_shard, seq=0, kind=CREDIT,
            origin=receipt.origin, sender=receipt.sender, recipient=receipt.recipient,
            asset=receipt.asset, amount=receipt.min_out))
        return ""
    try:
        if receipt.kind == SUPPLY:
            process_market_supply(attempt, params, receipt.pool, receipt.recipient,
                                  receipt.asset, receipt.amount)
            paid = receipt.amount
        else:
            paid = process_market_repay(attempt, params, receipt.pool, receipt.recipient,
                                        receipt.asset, receipt.amount)
    except CallFailed as exc:
        refund = get_refund(receipt, params.shard, exc.reason)
        error = exc.reason
    else:
        attempt.commit()
        error = ""
        if paid < receipt.amount:
            refund = msgspec.structs.replace(
                get_refund(receipt, params.shard, "excess_repayment"),
                amount=receipt.amount - paid)
    if refund is not None:
        credit_home(view, refund)
    return error


# ---------------------------------------------------------------------------
# Reports (the node's ``GET /v1/lending/{address}``; read-only, at a height)


def compute_price_float(price: Price | None) -> float | None:
    return None if price is None else price[0] / price[1] / Q64


def get_markets_report(view: StateReader, config: LendingConfig,
                       height: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for asset in config.assets:
        market = get_accrued_market(view, asset, height)
        rows.append({
            "asset": asset, "cash": market.cash, "borrows": market.borrows,
            "reserves": market.reserves, "shares": market.shares,
            "utilisation": compute_utilisation(market) / WAD,
            "borrow_rate_per_block": compute_borrow_rate(market) / WAD,
            "exchange_rate": (compute_underlying(market) / market.shares
                              if market.shares else 1.0),
            "collateral_factor": market.collateral_factor / WAD,
            "price": compute_price_float(get_price(view, config, market, height)),
        })
    return rows


def get_position_report(view: StateReader, owner: bytes,
                        height: int) -> dict[str, object] | None:
    """An account's holdings, debts, values and health factor as of block ``height``
    (interest and prices accrued to it); None when this shard runs no lending."""
    config = get_lending_config(view)
    if config is None:
        return None
    position = get_position(view, owner)
    rows: list[dict[str, object]] = []
    for holding in position.holdings:
        market = get_accrued_market(view, holding.asset, height)
        rows.append({
            "asset": holding.asset, "shares": holding.shares,
            "supplied": compute_shares_value(market, holding.shares),
            "debt": compute_debt(holding, market),
            "price": compute_price_float(get_price(view, config, market, height)),
        })
    health = get_health(view, config, position, height)
    factor = health.factor_wad()
    return {
        "address": owner.hex(), "lending_address": config.address.hex(),
        "quote": config.quote, "positions": rows,
        "collateral_value": health.collateral // Q64,  # quote units, times CF
        "debt_value": compute_ceil_div(health.debt, Q64) if health.debt < INFINITE else None,
        "health_factor": None if factor is None else factor / WAD,
        "liquidatable": not health.healthy,
        "markets": get_markets_report(view, config, height),
    }
