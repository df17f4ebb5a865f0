"""Genesis: one JSON file that every node and tool of a testnet shares.

```json
{
  "chain_id": "shardnet-local",
  "num_shards": 2,
  "genesis_time_ms": 0,
  "assets": [{"id": 0, "name": "COIN"}, {"id": 1, "name": "USD"}],
  "validators": [[{"index": 0, "public_key": "<hex>", "p2p_address": "127.0.0.1:9000",
                   "api_address": "127.0.0.1:8000"}, ...], ...],
  "accounts": [{"seed": "load", "count": 1000, "balances": {"COIN": 1000000, "USD": 1000000}}],
  "pools": [{"name": "COIN-USD", "assets": ["COIN", "USD"], "reserves": [1000000, 1000000]}],
  "farms": [{"pool": "COIN-USD", "reward_asset": "COIN", "reward_per_block": 100,
             "budget": 1000000}]
}
```

``validators[s]`` lists shard s's validators, index i at position i, n = 3f + 1.
Account i of a group is ``derive_account(seed, i)`` and lives on its own shard.
A pool's address is ``program_address(name)``. A farm (at most one per pool, on the
pool's shard: sharding/farms.py) holds its reward budget from genesis on, which
counts in the reward asset's supply. Every asset's total supply must fit
in a u64, which is why no balance, reserve or receipt amount can ever overflow.
Errors name the offending field (``GenesisError.field``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec

from consensus.kernel.codec import U64_MAX, encode
from consensus.kernel.errors import ShardnetError
from sharding.accounts import derive_account, program_address, shard_of
from sharding.farms import make_farm, put_farm
from sharding.lending import INDEX_ONE
from sharding.oracle import WINDOW_BLOCKS_MAX, make_oracle
from sharding.records import (
    Account,
    Balance,
    LendingConfig,
    Market,
    Pool,
    ShardParams,
    account_key,
    market_config_key,
    market_key,
    oracle_key,
    pool_key,
    put_shard_params,
)
from sharding.state import Overlay, State

GENESIS_BYTES_MAX = 16 * 1024 * 1024
ACCOUNTS_MAX = 10_000_000
SHARDS_MAX = 1024


class GenesisError(ShardnetError):
    reason = "bad_genesis"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field


class _Spec(msgspec.Struct, forbid_unknown_fields=True):
    pass


class AssetSpec(_Spec):
    id: int
    name: str


class ValidatorSpec(_Spec):
    index: int
    public_key: str
    p2p_address: str
    api_address: str


class AccountsSpec(_Spec):
    seed: str
    count: int
    balances: dict[str, int]


class PoolSpec(_Spec):
    name: str
    assets: list[str]
    reserves: list[int]


class FarmSpec(_Spec):
    pool: str
    reward_asset: str
    reward_per_block: int
    budget: int


WAD = 10**18


class MarketSpec(_Spec):
    """A lending market (sharding/lending.py); fractions and per-block rates in WAD."""

    asset: str
    collateral_factor: int = 750 * 10**15
    close_factor: int = 500 * 10**15
    liquidation_bonus: int = 80 * 10**15
    reserve_factor: int = 100 * 10**15
    base_rate: int = 10**9
    slope: int = 2 * 10**10
    kink: int = 800 * 10**15
    jump: int = 5 * 10**11
    window_blocks: int = 10
    price_pool: str = ""  # "" = the first pool on the lending shard pairing it with the quote


class GenesisSpec(_Spec):
    chain_id: str
    num_shards: int
    assets: list[AssetSpec]
    validators: list[list[ValidatorSpec]]
    accounts: list[AccountsSpec]
    pools: list[PoolSpec] = []
    genesis_time_ms: int = 0
    farms: list[FarmSpec] = []
    lending_shard: int = 0
    lending_quote: str = ""  # "" = the first asset
    markets: list[MarketSpec] = []


@dataclass(frozen=True, slots=True)
class Validator:
    shard: int
    index: int
    public_key: bytes
    p2p_address: str
    api_address: str


@dataclass(frozen=True, slots=True)
class AccountGroup:
    seed: str
    count: int
    balances: tuple[tuple[int, int], ...]  # (asset id, amount), sorted


@dataclass(frozen=True, slots=True)
class GenesisPool:
    name: str
    address: bytes
    asset_a: int
    asset_b: int
    reserve_a: int
    reserve_b: int


@dataclass(frozen=True, slots=True)
class GenesisFarm:
    pool: str  # the pool's name
    address: bytes  # the pool's address: the farm's key (sharding/farms.py)
    reward_asset: int
    reward_per_block: int
    budget: int


@dataclass(frozen=True, slots=True)
class GenesisLending:
    shard: int
    address: bytes  # the lending program's address, on ``shard``
    quote: int
    markets: tuple[Market, ...]
    windows: tuple[tuple[bytes, int], ...]  # (price pool, TWAP window blocks)


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: str
    num_shards: int
    genesis_time_ms: int
    assets: dict[str, int]  # name -> id
    validators: tuple[tuple[Validator, ...], ...]  # per shard, by index
    accounts: tuple[AccountGroup, ...]
    pools: tuple[GenesisPool, ...]
    spec: GenesisSpec
    farms: tuple[GenesisFarm, ...] = ()
    lending: GenesisLending | None = None

    def asset_name(self, asset: int) -> str:
        return next((name for name, id_ in self.assets.items() if id_ == asset), str(asset))


# ---------------------------------------------------------------------------
# Loading and validation


def load_genesis(source: str | Path | bytes | Mapping[str, Any]) -> Genesis:
    """Load a genesis from a path, JSON bytes or a dict; raise ``GenesisError``."""
    if isinstance(source, (str, Path)):
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise GenesisError("genesis", f"cannot read {source}: {exc.strerror}") from None
        return load_genesis(data)
    if isinstance(source, bytes):
        if len(source) > GENESIS_BYTES_MAX:
            raise GenesisError("genesis", f"larger than {GENESIS_BYTES_MAX} bytes")
        try:
            spec = msgspec.json.decode(source, type=GenesisSpec)
        except msgspec.ValidationError as exc:
            raise GenesisError(_field_of(exc), str(exc)) from None
        except msgspec.DecodeError as exc:
            raise GenesisError("genesis", f"not JSON: {exc}") from None
        return validate_genesis(spec)
    try:
        spec = msgspec.convert(dict(source), GenesisSpec)
    except msgspec.ValidationError as exc:
        raise GenesisError(_field_of(exc), str(exc)) from None
    return validate_genesis(spec)


def _field_of(exc: msgspec.ValidationError) -> str:
    # msgspec ends its messages with "- at `$.path`"; keep the path as the field name.
    text = str(exc)
    if "`$." in text:
        return text.rsplit("`$.", 1)[1].rstrip("`")
    if "missing required field" in text:
        return text.split("`")[1] if "`" in text else "genesis"
    return "genesis"


def _require(condition: bool, field: str, detail: str) -> None:
    if not condition:
        raise GenesisError(field, detail)


def validate_genesis(spec: GenesisSpec) -> Genesis:
    _require(0 < len(spec.chain_id) <= 64, "chain_id", "must be 1..64 characters")
    _require(1 <= spec.num_shards <= SHARDS_MAX, "num_shards", f"must be 1..{SHARDS_MAX}")
    _require(0 <= spec.genesis_time_ms <= U64_MAX, "genesis_time_ms", "must be a u64")
    assets: dict[str, int] = {}
    for i, asset in enumerate(spec.assets):
        _require(0 <= asset.id < 2**32, f"assets[{i}].id", "must be a u32")
        _require(bool(asset.name), f"assets[{i}].name", "must not be empty")
        _require(asset.name not in assets, f"assets[{i}].name", f"duplicate {asset.name!r}")
        _require(asset.id not in assets.values(), f"assets[{i}].id", f"duplicate {asset.id}")
        assets[asset.name] = asset.id
    _require(bool(assets), "assets", "must list at least one asset")
    validators = tuple(
        _validate_shard_validators(spec, shard) for shard in range(spec.num_shards)
    )
    _require(
        len(spec.validators) == spec.num_shards,
        "validators",
        f"must list {spec.num_shards} shards, got {len(spec.validators)}",
    )
    groups: list[AccountGroup] = []
    for i, group in enumerate(spec.accounts):
        where = f"accounts[{i}]"
        _require(bool(group.seed), f"{where}.seed", "must not be empty")
        _require(0 <= group.count <= ACCOUNTS_MAX, f"{where}.count", f"must be 0..{ACCOUNTS_MAX}")
        balances: list[tuple[int, int]] = []
        for name, amount in group.balances.items():
            _require(name in assets, f"{where}.balances.{name}", "unknown asset")
            _require(0 <= amount <= U64_MAX, f"{where}.balances.{name}", "must be a u64")
            balances.append((assets[name], amount))
        groups.append(AccountGroup(group.seed, group.count, tuple(sorted(balances))))
    pools: list[GenesisPool] = []
    for i, pool in enumerate(spec.pools):
        pools.append(_validate_pool(pool, f"pools[{i}]", assets, pools))
    farms: list[GenesisFarm] = []
    for i, farm in enumerate(spec.farms):
        farms.append(_validate_farm(farm, f"farms[{i}]", assets, pools, farms))
    genesis = Genesis(
        chain_id=spec.chain_id,
        num_shards=spec.num_shards,
        genesis_time_ms=spec.genesis_time_ms,
        assets=assets,
        validators=validators,
        accounts=tuple(groups),
        pools=tuple(pools),
        spec=spec,
        farms=tuple(farms),
        lending=_validate_lending(spec, assets, pools),
    )
    for asset_id, supply in total_supply(genesis).items():
        _require(
            supply <= U64_MAX,
            f"assets.{genesis.asset_name(asset_id)}",
            "total supply (balances + reserves + farm budgets) must fit in a u64",
        )
    return genesis


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and "/" not in host and port.isdigit() and 1 <= int(port) <= 65535


def _validate_shard_validators(spec: GenesisSpec, shard: int) -> tuple[Validator, ...]:
    where = f"validators[{shard}]"
    _require(shard < len(spec.validators), where, "missing")
    entries = spec.validators[shard]
    _require(len(entries) % 3 == 1, where, f"needs n = 3f + 1 validators, got {len(entries)}")
    validators: list[Validator] = []
    for i, entry in enumerate(entries):
        field = f"{where}[{i}]"
        _require(entry.index == i, f"{field}.index", f"must be {i}")
        try:
            key = bytes.fromhex(entry.public_key)
        except ValueError:
            raise GenesisError(f"{field}.public_key", "not hex") from None
        _require(len(key) == 32, f"{field}.public_key", "must be 32 bytes")
        for name in ("p2p_address", "api_address"):
            _require(_is_host_port(getattr(entry, name)), f"{field}.{name}",
                     "must be host:port (an IP or DNS name, port 1-65535)")
        validators.append(Validator(shard, i, key, entry.p2p_address, entry.api_address))
    return tuple(validators)


def _validate_pool(
    pool: PoolSpec, where: str, assets: dict[str, int], earlier: list[GenesisPool]
) -> GenesisPool:
    _require(bool(pool.name), f"{where}.name", "must not be empty")
    _require(all(p.name != pool.name for p in earlier), f"{where}.name", "duplicate pool name")
    _require(len(pool.assets) == 2, f"{where}.assets", "must name two assets")
    _require(len(pool.reserves) == 2, f"{where}.reserves", "must give two reserves")
    for j, name in enumerate(pool.assets):
        _require(name in assets, f"{where}.assets[{j}]", f"unknown asset {name!r}")
    _require(pool.assets[0] != pool.assets[1], f"{where}.assets", "must differ")
    for j, reserve in enumerate(pool.reserves):
        _require(0 <= reserve <= U64_MAX, f"{where}.reserves[{j}]", "must be a u64")
    _require(
        (pool.reserves[0] == 0) == (pool.reserves[1] == 0),
        f"{where}.reserves",
        "both zero or both positive",
    )
    (id_a, res_a), (id_b, res_b) = sorted(
        zip((assets[n] for n in pool.assets), pool.reserves, strict=True)
    )
    return GenesisPool(pool.name, program_address(pool.name), id_a, id_b, res_a, res_b)


def _validate_farm(
    farm: FarmSpec, where: str, assets: dict[str, int], pools: list[GenesisPool],
    earlier: list[GenesisFarm],
) -> GenesisFarm:
    pool = next((p for p in pools if p.name == farm.pool), None)
    if pool is None:
        raise GenesisError(f"{where}.pool", f"unknown pool {farm.pool!r}")
    _require(all(f.pool != farm.pool for f in earlier), f"{where}.pool",
             "one farm per pool")
    _require(farm.reward_asset in assets, f"{where}.reward_asset",
             f"unknown asset {farm.reward_asset!r}")
    _require(0 < farm.reward_per_block <= U64_MAX, f"{where}.reward_per_block",
             "must be a positive u64")
    _require(0 < farm.budget <= U64_MAX, f"{where}.budget", "must be a positive u64")
    return GenesisFarm(farm.pool, pool.address, assets[farm.reward_asset],
                       farm.reward_per_block, farm.budget)


def lending_address(shard: int, num_shards: int) -> bytes:
    """The lending program's address: ``program_address`` of the first of
    ``lending``, ``lending-1``, ... that lives on ``shard``."""
    return program_address(find_pool_name("lending", shard, num_shards))


def _validate_lending(
    spec: GenesisSpec, assets: dict[str, int], pools: list[GenesisPool]
) -> GenesisLending | None:
    if not spec.markets:
        return None
    shard = spec.lending_shard
    _require(0 <= shard < spec.num_shards, "lending_shard", "must be one of the shards")
    quote_name = spec.lending_quote or next(iter(assets))
    _require(quote_name in assets, "lending_quote", f"unknown asset {quote_name!r}")
    quote = assets[quote_name]
    markets: list[Market] = []
    windows: dict[bytes, int] = {}
    for i, entry in enumerate(spec.markets):
        where = f"markets[{i}]"
        _require(entry.asset in assets, f"{where}.asset", f"unknown asset {entry.asset!r}")
        asset = assets[entry.asset]
        _require(all(m.asset != asset for m in markets), f"{where}.asset", "one market per asset")
        _require(0 <= entry.collateral_factor < WAD, f"{where}.collateral_factor",
                 "must be in [0, 1) (WAD)")
        _require(0 < entry.close_factor <= WAD, f"{where}.close_factor", "must be in (0, 1] (WAD)")
        _require(0 <= entry.liquidation_bonus <= WAD, f"{where}.liquidation_bonus",
                 "must be in [0, 1] (WAD)")
        _require(0 <= entry.reserve_factor <= WAD, f"{where}.reserve_factor",
                 "must be in [0, 1] (WAD)")
        _require(0 <= entry.kink <= WAD, f"{where}.kink", "must be in [0, 1] (WAD)")
        for name in ("base_rate", "slope", "jump"):
            _require(0 <= getattr(entry, name) <= WAD // 100, f"{where}.{name}",
                     "must be a per-block rate in [0, 0.01] (WAD)")
        _require(1 <= entry.window_blocks <= WINDOW_BLOCKS_MAX, f"{where}.window_blocks",
                 f"must be 1..{WINDOW_BLOCKS_MAX}")
        price_pool = b""
        if asset != quote:
            candidates = [
                p for p in pools
                if {p.asset_a, p.asset_b} == {asset, quote} and p.reserve_a > 0
                and shard_of(p.address, spec.num_shards) == shard
                and (not entry.price_pool or p.name == entry.price_pool)
            ]
            _require(bool(candidates) or not entry.price_pool, f"{where}.price_pool",
                     "must be a pool with reserves on the lending shard pairing the asset "
                     "with the quote asset")
            if candidates:
                price_pool = candidates[0].address
                _require(windows.get(price_pool, entry.window_blocks) == entry.window_blocks,
                         f"{where}.window_blocks", "differs from another market on that pool")
                windows[price_pool] = entry.window_blocks
        markets.append(Market(
            asset=asset, cash=0, borrows=0, reserves=0, shares=0, borrow_index=INDEX_ONE,
            last_height=0, collateral_factor=entry.collateral_factor,
            close_factor=entry.close_factor, liquidation_bonus=entry.liquidation_bonus,
            reserve_factor=entry.reserve_factor, base_rate=entry.base_rate, slope=entry.slope,
            kink=entry.kink, jump=entry.jump, price_pool=price_pool,
        ))
    markets.sort(key=lambda m: m.asset)
    return GenesisLending(shard, lending_address(shard, spec.num_shards), quote, tuple(markets),
                          tuple(sorted(windows.items())))


# ---------------------------------------------------------------------------
# Supply and state


@lru_cache(maxsize=64)
def get_group_addresses(seed: str, count: int) -> tuple[bytes, ...]:
    return tuple(derive_account(seed, i).public_key for i in range(count))


def total_supply(genesis: Genesis) -> dict[int, int]:
    supply = dict.fromkeys(genesis.assets.values(), 0)
    for group in genesis.accounts:
        for asset, amount in group.balances:
            supply[asset] += amount * group.count
    for pool in genesis.pools:
        supply[pool.asset_a] += pool.reserve_a
        supply[pool.asset_b] += pool.reserve_b
    for farm in genesis.farms:
        supply[farm.reward_asset] += farm.budget
    return supply


def get_shard_params_of(genesis: Genesis, shard: int) -> ShardParams:
    return ShardParams(genesis.chain_id, shard, genesis.num_shards)


def genesis_state(genesis: Genesis, shard: int) -> State:
    """The state of ``shard`` at height 0."""
    if not 0 <= shard < genesis.num_shards:
        raise ValueError(f"shard {shard} outside 0..{genesis.num_shards - 1}")
    view = Overlay(State())
    put_shard_params(view, get_shard_params_of(genesis, shard))
    balances: dict[bytes, dict[int, int]] = {}
    for group in genesis.accounts:
        for address in get_group_addresses(group.seed, group.count):
            if shard_of(address, genesis.num_shards) != shard:
                continue
            held = balances.setdefault(address, {})
            for asset, amount in group.balances:
                held[asset] = held.get(asset, 0) + amount
    for address, held in balances.items():
        entries = [Balance(asset, amount) for asset, amount in sorted(held.items()) if amount]
        if entries:
            view.set(account_key(address), encode(Account(0, entries)))
    for pool in genesis.pools:
        if shard_of(pool.address, genesis.num_shards) == shard:
            record = Pool(
                pool.asset_a,
                pool.asset_b,
                pool.reserve_a,
                pool.reserve_b,
                math.isqrt(pool.reserve_a * pool.reserve_b),
            )
            view.set(pool_key(pool.address), encode(record))
    for farm in genesis.farms:
        if shard_of(farm.address, genesis.num_shards) == shard:
            put_farm(view, farm.address,
                     make_farm(farm.reward_asset, farm.reward_per_block, farm.budget))
    lending = genesis.lending
    if lending is not None and lending.shard == shard:
        view.set(market_config_key(), encode(LendingConfig(
            lending.address, lending.quote, [m.asset for m in lending.markets])))
        for market in lending.markets:
            view.set(market_key(market.asset), encode(market))
        for pool_address, window in lending.windows:
            view.set(oracle_key(pool_address), encode(make_oracle(window)))
    return State.from_items(
        (key, value) for key, value in view.writes.items() if value is not None
    )


def genesis_to_json(genesis: Genesis) -> bytes:
    return json.dumps(msgspec.to_builtins(genesis.spec), indent=2).encode() + b"\n"


# ---------------------------------------------------------------------------
# Small in-memory genesis for tests, demos and benchmarks


def find_pool_name(prefix: str, shard: int, num_shards: int) -> str:
    """The first of ``prefix``, ``prefix-1``, ... whose pool address lives on ``shard``."""
    suffix = 0
    while True:
        name = prefix if suffix == 0 else f"{prefix}-{suffix}"
        if shard_of(program_address(name), num_shards) == shard:
            return name
        suffix += 1


def make_genesis_dict(
    *,
    chain_id: str = "shardnet-local",
    num_shards: int = 2,
    validators_per_shard: int = 4,
    seed: str = "load",
    accounts: int = 100,
    balance: int = 10**12,
    assets: tuple[str, ...] = ("COIN", "USD", "ETH"),
    pool_reserve: int = 10**12,
    pools_per_shard: int = 1,
    farm_budget: int = 0,
    farm_reward_per_block: int = 1000,
    markets: bool = False,
) -> dict[str, Any]:
    """A genesis dict: validators with keys ``derive_account(f"validator-{s}", i)`` on
    local ports, one account group, and ``pools_per_shard`` pools on every shard
    pairing the first asset with the others in turn; with ``farm_budget``, a farm on
    each shard's first pool rewarding the first asset; with ``markets``, a lending
    market per asset on shard 0, priced in the first asset."""
    validators = [
        [
            {
                "index": i,
                "public_key": derive_account(f"validator-{shard}", i).public_key.hex(),
                "p2p_address": f"127.0.0.1:{9000 + 100 * shard + i}",
                "api_address": f"127.0.0.1:{8000 + 100 * shard + i}",
            }
            for i in range(validators_per_shard)
        ]
        for shard in range(num_shards)
    ]
    pools = []
    for shard in range(num_shards):
        for k in range(pools_per_shard):
            pair = [assets[0], assets[1 + k % (len(assets) - 1)]]
            name = find_pool_name(f"{pair[0]}-{pair[1]}-s{shard}", shard, num_shards)
            pools.append({"name": name, "assets": pair, "reserves": [pool_reserve] * 2})
    farms = [
        {"pool": pool["name"], "reward_asset": assets[0],
         "reward_per_block": farm_reward_per_block, "budget": farm_budget}
        for pool in pools[::pools_per_shard]
    ] if farm_budget and pools_per_shard else []
    return {
        "chain_id": chain_id,
        "num_shards": num_shards,
        "genesis_time_ms": 0,
        "assets": [{"id": i, "name": name} for i, name in enumerate(assets)],
        "validators": validators,
        "accounts": [{"seed": seed, "count": accounts, "balances": dict.fromkeys(assets, balance)}],
        "pools": pools,
        **({"farms": farms} if farms else {}),
        **({"lending_shard": 0, "markets": [{"asset": name} for name in assets]}
           if markets else {}),
    }
