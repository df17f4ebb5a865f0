"""Farms: stake a pool's LP shares, earn a reward asset per block (PROTOCOL.md, Farms).

One farm per pool, created at genesis on the pool's shard with a reward asset, a
reward per block and a budget of the reward asset that the genesis funds (the
farm holds it: it is part of the asset's supply). The accounting is MasterChef's:

* ``acc_reward_per_share`` (``acc``) sums, over the blocks since genesis, the
  reward allocated in a block divided by the LP shares staked then, in fixed
  point scaled by ``ACC_SCALE = 2**64`` (a u128: it never exceeds
  ``budget * 2**64``);
* a farm *accrues* to the block's height (``ShardParams.height``) before any call
  touches it: ``reward = min(blocks * reward_per_block, budget)`` for the blocks
  since the last accrual, nothing while nothing is staked (the budget keeps it);
  ``acc += reward * ACC_SCALE // staked`` (rounded down) and the budget loses only
  what the increment lets stakers claim, ``ceil(increment * staked / ACC_SCALE)``
  (at most ``reward``);
* a stake remembers the ``acc`` it was last settled at and a ``carry`` (scaled,
  below ``ACC_SCALE``): its pending reward is
  ``(shares * (acc - snapshot) + carry) // ACC_SCALE``, the remainder is carried.

Every rounding is in the farm's favour, so the rewards paid never exceed the
budget allocated, which never exceeds the budget funded: ``Farm.rewards`` (what
the farm holds) never goes negative. Once the budget is spent rewards stop; a
harvest then gets what was accrued before (``budget_exhausted`` when that is
nothing). Unstaking everything forfeits the carried dust (below one unit) to the
farm. Calls are local to the pool's shard and declare their keys from their
arguments (farm, stake, LP shares, account): the partitioned executor runs them;
the farm's key is every staker's hot spot.
"""

from __future__ import annotations

from collections.abc import Iterable

from consensus.kernel.codec import U64_MAX, WireStruct, decode, encode
from consensus.kernel.errors import check
from consensus.kernel.limits import RECORD_BYTES_MAX
from sharding.records import (
    KEY_FARM,
    KEY_STAKE,
    CallFailed,
    get_lp_shares,
    process_credit,
    put_lp_shares,
)
from sharding.state import StateReader, StateView

ACC_SCALE = 2**64
U128_BYTES = 16


class Farm(WireStruct, frozen=True):
    reward_asset: int
    reward_per_block: int
    budget: int  # funded and not yet allocated to stakers
    rewards: int  # reward asset the farm holds: budget + allocated and not paid
    staked: int  # LP shares staked in the farm
    acc_reward_per_share: bytes  # u128 big-endian, scaled by ACC_SCALE
    last_height: int  # the height the farm last accrued to


class FarmStake(WireStruct, frozen=True):
    shares: int
    acc_snapshot: bytes  # the farm's acc_reward_per_share at the last settlement
    carry: int  # scaled reward below one unit, not yet paid (< ACC_SCALE)


# -- keys and records


def farm_key(pool: bytes) -> bytes:
    return KEY_FARM + pool


def stake_key(pool: bytes, owner: bytes) -> bytes:
    return KEY_STAKE + pool + owner


def encode_u128(value: int) -> bytes:
    check(0 <= value < 2**128, "acc_reward_per_share out of u128")
    return value.to_bytes(U128_BYTES, "big")


def decode_u128(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def make_farm(reward_asset: int, reward_per_block: int, budget: int) -> Farm:
    """A farm as genesis creates it: funded, nothing staked, accrued to height 0."""
    return Farm(reward_asset, reward_per_block, budget, budget, 0, encode_u128(0), 0)


def get_farm(view: StateReader, pool: bytes) -> Farm | None:
    raw = view.get(farm_key(pool))
    return None if raw is None else decode(raw, Farm, RECORD_BYTES_MAX, canonical=False)


def put_farm(view: StateView, pool: bytes, farm: Farm) -> None:
    view.set(farm_key(pool), encode(farm))


def get_stake(view: StateReader, pool: bytes, owner: bytes) -> FarmStake | None:
    raw = view.get(stake_key(pool, owner))
    return None if raw is None else decode(raw, FarmStake, RECORD_BYTES_MAX, canonical=False)


def put_stake(view: StateView, pool: bytes, owner: bytes, stake: FarmStake) -> None:
    if stake.shares == 0:
        view.delete(stake_key(pool, owner))  # the carried dust is forfeited to the farm
    else:
        view.set(stake_key(pool, owner), encode(stake))


# -- accounting (pure)


def compute_accrual(farm: Farm, height: int) -> Farm:
    """The farm accrued to ``height``: the reward of the blocks since its last accrual
    (bounded by the budget) spread over the shares staked during them."""
    check(height >= farm.last_height, f"farm accrual back to {height} < {farm.last_height}")
    blocks = height - farm.last_height
    if farm.staked == 0 or farm.budget == 0 or blocks == 0:
        return _with(farm, last_height=height)
    reward = min(blocks * farm.reward_per_block, farm.budget)
    increment = reward * ACC_SCALE // farm.staked  # down: the farm's favour
    allocated = -(-increment * farm.staked // ACC_SCALE)  # up, and still <= reward
    check(allocated <= reward, "farm allocated more than the block reward")
    acc = decode_u128(farm.acc_reward_per_share) + increment
    return _with(farm, budget=farm.budget - allocated, acc_reward_per_share=encode_u128(acc),
                 last_height=height)


def compute_pending(farm: Farm, stake: FarmStake) -> tuple[int, int]:
    """(reward payable now, scaled remainder carried) of ``stake`` in an accrued farm."""
    acc = decode_u128(farm.acc_reward_per_share)
    earned = stake.shares * (acc - decode_u128(stake.acc_snapshot)) + stake.carry
    return earned // ACC_SCALE, earned % ACC_SCALE


def compute_pending_reward(farm: Farm, stake: FarmStake | None, height: int) -> int:
    """What a harvest at ``height`` would pay (a read for wallets: ``shardnet account``)."""
    if stake is None:
        return 0
    return compute_pending(compute_accrual(farm, max(height, farm.last_height)), stake)[0]


def _with(farm: Farm, **changes: int | bytes) -> Farm:
    fields = {name: getattr(farm, name) for name in Farm.__struct_fields__}
    fields.update(changes)
    return Farm(**fields)


# -- calls (state transitions)


def get_existing_farm(view: StateReader, pool: bytes) -> Farm:
    farm = get_farm(view, pool)
    # Verify the pool has a farm.
    if farm is None:
        raise CallFailed(f"no farm for pool {pool.hex()[:16]}", reason="no_farm")
    return farm


def process_settle(
    view: StateView, pool: bytes, owner: bytes, farm: Farm, stake: FarmStake, shares: int
) -> tuple[Farm, int]:
    """Pay ``owner`` the pending reward of ``stake`` (farm accrued), then give the stake
    ``shares``; return (farm after, reward paid)."""
    paid, carry = compute_pending(farm, stake)
    check(paid <= farm.rewards, "farm owes more than it holds")
    if paid:
        process_credit(view, owner, farm.reward_asset, paid)
    put_stake(view, pool, owner, FarmStake(shares, farm.acc_reward_per_share, carry))
    return _with(farm, rewards=farm.rewards - paid), paid


def process_stake(view: StateView, pool: bytes, owner: bytes, shares: int, height: int) -> None:
    """Move ``shares`` LP shares of ``owner`` into the farm (paying what was pending)."""
    farm = compute_accrual(get_existing_farm(view, pool), height)
    owned = get_lp_shares(view, pool, owner)
    # Verify the owner holds the LP shares it stakes.
    if owned < shares:
        raise CallFailed(f"owns {owned} shares < {shares}", reason="insufficient_shares")
    stake = get_stake(view, pool, owner) or FarmStake(0, farm.acc_reward_per_share, 0)
    check(farm.staked + shares <= U64_MAX, "staked shares exceed the pool's")
    farm, _ = process_settle(view, pool, owner, farm, stake, stake.shares + shares)
    put_lp_shares(view, pool, owner, owned - shares)
    put_farm(view, pool, _with(farm, staked=farm.staked + shares))


def process_harvest(view: StateView, pool: bytes, owner: bytes, height: int) -> int:
    """Pay ``owner`` its pending reward; return it."""
    farm = compute_accrual(get_existing_farm(view, pool), height)
    stake = get_stake(view, pool, owner)
    # Verify the owner has something staked.
    if stake is None:
        raise CallFailed("nothing staked in this farm", reason="nothing_staked")
    paid, carry = compute_pending(farm, stake)
    # Verify there is a reward to pay: exhausted budget, nothing accrued, or dust.
    if paid == 0 and farm.budget == 0:
        raise CallFailed("reward budget exhausted", reason="budget_exhausted")
    if paid == 0 and carry == stake.carry:
        raise CallFailed("nothing accrued since the last settlement", reason="nothing_pending")
    if paid == 0:
        raise CallFailed("pending reward rounds to zero", reason="dust")
    farm, paid = process_settle(view, pool, owner, farm, stake, stake.shares)
    put_farm(view, pool, farm)
    return paid


def process_unstake(view: StateView, pool: bytes, owner: bytes, shares: int, height: int) -> None:
    """Move ``shares`` staked shares back to ``owner``'s LP shares (paying what was pending)."""
    farm = compute_accrual(get_existing_farm(view, pool), height)
    stake = get_stake(view, pool, owner)
    staked = 0 if stake is None else stake.shares
    # Verify the owner has the shares staked.
    if stake is None or staked < shares:
        raise CallFailed(f"staked {staked} shares < {shares}", reason="insufficient_stake")
    farm, _ = process_settle(view, pool, owner, farm, stake, staked - shares)
    put_lp_shares(view, pool, owner, get_lp_shares(view, pool, owner) + shares)
    put_farm(view, pool, _with(farm, staked=farm.staked - shares))


def get_liquidity_of(
    view: StateReader, pools: Iterable[tuple[str, bytes]], owner: bytes, height: int
) -> dict[str, dict[str, int]]:
    """``owner``'s LP shares, stake and pending farm reward (at ``height``) per pool
    name, for the pools given that it holds or stakes anything in (wallet reads)."""
    found: dict[str, dict[str, int]] = {}
    for name, pool in pools:
        shares = get_lp_shares(view, pool, owner)
        stake = get_stake(view, pool, owner)
        farm = get_farm(view, pool)
        if shares == 0 and stake is None:
            continue
        entry = {"lp_shares": shares, "staked": 0 if stake is None else stake.shares}
        if farm is not None:
            entry["pending_reward"] = compute_pending_reward(farm, stake, height)
            entry["reward_asset"] = farm.reward_asset
        found[name] = entry
    return found
