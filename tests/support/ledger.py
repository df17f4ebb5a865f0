"""Shared fixtures of the ledger tests: a small 2-shard genesis and signing helpers."""

from __future__ import annotations

from functools import lru_cache

from consensus.kernel.crypto import KeyPair
from sharding.accounts import derive_account, shard_of
from sharding.block import GENESIS_PREV_HASH, Block
from sharding.executor import BlockResult, Rejected, build_block
from sharding.genesis import Genesis, GenesisPool, load_genesis, make_genesis_dict
from sharding.receipts import Receipt
from sharding.state import State
from sharding.tx import Call, SignedTx, TxBody, sign_tx

SEED = "load"
ACCOUNTS = 24
BALANCE = 1_000_000
RESERVE = 10_000_000


@lru_cache(maxsize=4)
def get_genesis(num_shards: int = 2) -> Genesis:
    return load_genesis(
        make_genesis_dict(
            num_shards=num_shards,
            validators_per_shard=1,
            seed=SEED,
            accounts=ACCOUNTS,
            balance=BALANCE,
            pool_reserve=RESERVE,
        )
    )


@lru_cache(maxsize=8)
def get_keys(shard: int, num_shards: int = 2) -> tuple[KeyPair, ...]:
    keys = (derive_account(SEED, i) for i in range(ACCOUNTS))
    return tuple(k for k in keys if shard_of(k.public_key, num_shards) == shard)


def get_pool_on(shard: int, num_shards: int = 2) -> GenesisPool:
    pools = get_genesis(num_shards).pools
    return next(p for p in pools if shard_of(p.address, num_shards) == shard)


def make_tx(key: KeyPair, nonce: int, call: Call, chain_id: str = "shardnet-local") -> SignedTx:
    return sign_tx(key, TxBody(chain_id=chain_id, sender=key.public_key, nonce=nonce, call=call))


def propose(
    state: State, txs: list[SignedTx], inbound: list[Receipt] | None = None, height: int = 1
) -> tuple[Block, BlockResult, list[Rejected]]:
    return build_block(
        state,
        txs,
        inbound or [],
        height=height,
        view=0,
        prev_hash=GENESIS_PREV_HASH,
        time_ms=1000 * height,
        proposer=0,
    )


# -- farms (issue 18): the same genesis plus a farm on each shard's pool

FARM_BUDGET = 10_000
FARM_REWARD_PER_BLOCK = 100


@lru_cache(maxsize=4)
def get_farm_genesis(num_shards: int = 2, budget: int = FARM_BUDGET,
                     reward_per_block: int = FARM_REWARD_PER_BLOCK) -> Genesis:
    return load_genesis(
        make_genesis_dict(
            num_shards=num_shards,
            validators_per_shard=1,
            seed=SEED,
            accounts=ACCOUNTS,
            balance=BALANCE,
            pool_reserve=RESERVE,
            farm_budget=budget,
            farm_reward_per_block=reward_per_block,
        )
    )
