"""Genesis loading, validation (errors name the field), state and supply."""

from __future__ import annotations

import contextlib
import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.kernel.codec import U64_MAX
from sharding.accounts import derive_account, program_address, shard_of
from sharding.audit import compute_audit
from sharding.genesis import (
    GenesisError,
    genesis_state,
    genesis_to_json,
    load_genesis,
    make_genesis_dict,
    total_supply,
)
from sharding.records import get_balance, get_pool, get_shard_params
from sharding.state import State


def spec() -> dict[str, Any]:
    return make_genesis_dict(num_shards=2, validators_per_shard=4, accounts=10, balance=1000)


def test_loads_from_dict_bytes_and_path(tmp_path: Path) -> None:
    genesis = load_genesis(spec())
    path = tmp_path / "genesis.json"
    path.write_bytes(genesis_to_json(genesis))
    assert load_genesis(path) == load_genesis(path.read_bytes()) == genesis
    assert genesis.num_shards == 2 and len(genesis.validators[1]) == 4


def test_pool_address_is_the_program_address_of_its_name() -> None:
    genesis = load_genesis(spec())
    for pool in genesis.pools:
        assert pool.address == program_address(pool.name)


def test_genesis_state_holds_the_shard_accounts_pools_and_parameters() -> None:
    genesis = load_genesis(spec())
    for shard in (0, 1):
        state = genesis_state(genesis, shard)
        params = get_shard_params(state)
        assert (params.chain_id, params.shard, params.num_shards) == (
            "shardnet-local",
            shard,
            2,
        )
        for i in range(10):
            address = derive_account("load", i).public_key
            expected = 1000 if shard_of(address, 2) == shard else 0
            assert get_balance(state, address, 0) == expected
        for pool in genesis.pools:
            record = get_pool(state, pool.address)
            if shard_of(pool.address, 2) == shard:
                assert record is not None
                assert record.shares == math.isqrt(record.reserve_a * record.reserve_b)
            else:
                assert record is None
        assert state.root == State.from_items(state.items()).root


def test_total_supply_matches_the_audit_of_genesis_states() -> None:
    genesis = load_genesis(spec())
    supply = total_supply(genesis)
    assert supply[0] == 10 * 1000 + sum(
        p.reserve_a for p in genesis.pools if p.asset_a == 0
    )
    states = {shard: genesis_state(genesis, shard) for shard in (0, 1)}
    assert compute_audit(states, [], supply).ok


def reject(mutate: Any) -> GenesisError:
    data = copy.deepcopy(spec())
    mutate(data)
    with pytest.raises(GenesisError) as info:
        load_genesis(data)
    assert info.value.reason == "bad_genesis"
    return info.value


def test_rejects_missing_chain_id() -> None:
    assert reject(lambda d: d.pop("chain_id")).field == "chain_id"


def test_rejects_wrong_type_naming_the_path() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["accounts"][0]["count"] = "ten"

    assert reject(mutate).field == "accounts[0].count"


def test_rejects_unknown_field() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["pools"][0]["fee"] = 3

    assert "fee" in str(reject(mutate))


def test_rejects_validator_count_that_is_not_3f_plus_1() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["validators"][1].pop()

    assert reject(mutate).field == "validators[1]"


def test_rejects_validator_index_out_of_place() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["validators"][0][2]["index"] = 7

    assert reject(mutate).field == "validators[0][2].index"


def test_rejects_bad_validator_public_key() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["validators"][0][0]["public_key"] = "abcd"

    assert reject(mutate).field == "validators[0][0].public_key"


@pytest.mark.parametrize("address", ["/ip4/127.0.0.1/tcp/9000", "127.0.0.1", ":9000",
                                     "host:0", "host:65536", "host:http", ""])
@pytest.mark.parametrize("name", ["p2p_address", "api_address"])
def test_rejects_validator_address_that_is_not_host_port(name: str, address: str) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["validators"][1][3][name] = address

    assert reject(mutate).field == f"validators[1][3].{name}"


def test_accepts_dns_names_and_ips_as_validator_hosts() -> None:
    data = copy.deepcopy(spec())
    data["validators"][0][0]["p2p_address"] = "shard0-node0:26600"
    data["validators"][0][1]["p2p_address"] = "10.0.0.7:26602"
    genesis = load_genesis(data)
    assert genesis.validators[0][0].p2p_address == "shard0-node0:26600"


def test_rejects_wrong_number_of_validator_shards() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["num_shards"] = 3

    assert reject(mutate).field == "validators[2]"


def test_rejects_balance_of_unknown_asset() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["accounts"][0]["balances"]["GOLD"] = 1

    assert reject(mutate).field == "accounts[0].balances.GOLD"


def test_rejects_pool_with_unknown_asset() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["pools"][0]["assets"][1] = "GOLD"

    assert reject(mutate).field == "pools[0].assets[1]"


def test_rejects_pool_with_one_zero_reserve() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["pools"][0]["reserves"] = [0, 5]

    assert reject(mutate).field == "pools[0].reserves"


def test_rejects_supply_above_u64() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["accounts"][0]["balances"]["USD"] = U64_MAX // 5

    assert reject(mutate).field == "assets.USD"


def test_rejects_duplicate_asset_name() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["assets"].append({"id": 9, "name": "COIN"})

    assert reject(mutate).field == "assets[3].name"


def test_rejects_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(GenesisError) as info:
        load_genesis(tmp_path / "missing.json")
    assert info.value.field == "genesis"


def test_rejects_invalid_json() -> None:
    with pytest.raises(GenesisError) as info:
        load_genesis(b"{not json")
    assert info.value.field == "genesis"


def test_json_output_is_loadable_json() -> None:
    text = genesis_to_json(load_genesis(spec()))
    assert json.loads(text)["num_shards"] == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_genesis_error(data: bytes) -> None:
    with contextlib.suppress(GenesisError):
        load_genesis(data)


@given(st.data())
def test_mutated_genesis_raises_only_genesis_error(data: st.DataObject) -> None:
    spec_dict = spec()
    section = data.draw(st.sampled_from(sorted(spec_dict)))
    spec_dict[section] = data.draw(json_values)
    with contextlib.suppress(GenesisError):
        load_genesis(json.dumps(spec_dict).encode())
