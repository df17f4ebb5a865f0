"""The fixed world of the whole-network simulation and its seeded client load.

``get_world`` builds, once per shape, a genesis with pools on every shard whose
validator keys are the simulation's signers (real Ed25519; the fast test signer of
``consensus/sim`` for tests that want it), the funded accounts of each shard, and per
shard the address a ``fabricate_inbound`` primary credits (``watched``: nobody ever
pays it, so it must hold nothing). ``make_load`` draws a seed's transactions, signed
once with the accounts' real Ed25519 keys: local transfers, cross-shard transfers
and cross-shard swaps in every direction (some with a ``min_out`` no pool can meet,
so their input comes back as a refund).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from consensus.certificate import Verifier
from consensus.kernel.crypto import KeyPair, verify_signature
from consensus.sim.doubles import FastSigner, FastVerifier
from consensus.state import Signer
from node.faults.fabricate import fabricated_recipient
from sharding.accounts import derive_account, shard_of
from sharding.genesis import Genesis, load_genesis, make_genesis_dict, total_supply
from sharding.tx import Call, SignedTx, Swap, Transfer, TxBody, sign_tx, tx_hash

CHAIN_ID = "shardnet-multisim"
ACCOUNT_SEED = "multisim"
BALANCE = 10**9
RESERVE = 10**9
IMPOSSIBLE_MIN_OUT = 10**18


@dataclass(frozen=True)
class World:
    genesis: Genesis
    signers: tuple[tuple[Signer, ...], ...]  # [shard][index]
    verify: Verifier
    supply: dict[int, int]
    accounts: tuple[tuple[KeyPair, ...], ...]  # funded accounts per shard
    pools: tuple[tuple[bytes, int, int], ...]  # per shard: (address, asset_a, asset_b)
    watched: dict[int, bytes]  # per shard: an address nobody ever pays


@dataclass(frozen=True, slots=True)
class LoadItem:
    arrival_ms: int
    tx: SignedTx
    digest: bytes
    shard: int
    sender: bytes
    nonce: int


@lru_cache(maxsize=16)
def get_world(shards: int, replicas: int, real_signatures: bool, accounts: int) -> World:
    signers: list[list[Signer]]
    if real_signatures:
        signers = [[KeyPair.derive(f"multisim-validator-{s}", i) for i in range(replicas)]
                   for s in range(shards)]
        verify: Verifier = verify_signature
    else:
        fast = [[FastSigner(f"multisim/{s}/{i}".encode()) for i in range(replicas)]
                for s in range(shards)]
        signers = [list(row) for row in fast]
        verify = FastVerifier([signer for row in fast for signer in row])
    spec = make_genesis_dict(chain_id=CHAIN_ID, num_shards=shards,
                             validators_per_shard=replicas, seed=ACCOUNT_SEED,
                             accounts=accounts, balance=BALANCE, pool_reserve=RESERVE)
    for shard, row in enumerate(spec["validators"]):
        for index, entry in enumerate(row):
            entry["public_key"] = signers[shard][index].public_key.hex()
    genesis = load_genesis(spec)
    keys = [derive_account(ACCOUNT_SEED, i) for i in range(accounts)]
    by_shard = tuple(tuple(k for k in keys if shard_of(k.public_key, shards) == s)
                     for s in range(shards))
    if any(len(row) < 2 for row in by_shard):
        raise ValueError(f"{accounts} accounts leave a shard with fewer than two")
    pools = tuple(
        next((p.address, p.asset_a, p.asset_b) for p in genesis.pools
             if shard_of(p.address, shards) == s)
        for s in range(shards)
    )
    watched = {s: fabricated_recipient(s, shards) for s in range(shards)}
    return World(genesis, tuple(tuple(row) for row in signers), verify, total_supply(genesis),
                 by_shard, pools, watched)


def make_load(rng: random.Random, world: World, count: int, window_ms: int) -> list[LoadItem]:
    """``count`` signed transactions arriving at random times within ``window_ms``."""
    genesis = world.genesis
    shards = genesis.num_shards
    assets = sorted(genesis.assets.values())
    nonces: dict[bytes, int] = {}
    load = []
    for _ in range(count):
        home = rng.randrange(shards)
        key = rng.choice(world.accounts[home])
        far = [s for s in range(shards) if s != home]
        kind = rng.choice(["local", "transfer", "transfer", "swap", "swap"]) if far else "local"
        call: Call
        if kind == "swap":
            pool, asset_a, asset_b = world.pools[rng.choice(far)]
            min_out = 1 if rng.random() < 0.8 else IMPOSSIBLE_MIN_OUT
            call = Swap(pool, rng.choice((asset_a, asset_b)), rng.randint(1, 10_000), min_out)
        else:
            where: Sequence[KeyPair] = world.accounts[home if kind == "local" else rng.choice(far)]
            call = Transfer(rng.choice(where).public_key, rng.choice(assets),
                            rng.randint(1, 1000))
        nonce = nonces.get(key.public_key, 0)
        nonces[key.public_key] = nonce + 1
        tx = sign_tx(key, TxBody(genesis.chain_id, key.public_key, nonce, call))
        load.append(LoadItem(rng.randrange(window_ms), tx, tx_hash(tx), home, key.public_key,
                             nonce))
    return load
