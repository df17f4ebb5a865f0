"""The fixed world of the multi-shard simulation, its seeded client load, and what
its byzantine replicas build.

``get_world`` builds, once per shape, a genesis with pools on every shard whose
validator keys are the simulation's signers (the fast test signer, or real Ed25519),
the funded accounts of each shard, and per shard an address nobody funds
(``watched``: where a byzantine primary sends fabricated credits). ``make_load``
draws a seed's transactions, signed once with the accounts' real Ed25519 keys:
local transfers, cross-shard transfers and cross-shard swaps in every direction
(some with a ``min_out`` no pool can meet, so their input comes back as a refund).
``make_bad_block`` and ``make_forged_bundle`` are the byzantine primary's and the
bundle forger's handiwork.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import msgspec

from consensus.certificate import CommitCertificate, IndexedSignature, Verifier, quorum_size
from consensus.kernel.codec import encode
from consensus.kernel.crypto import KeyPair, verify_signature
from consensus.sim.doubles import FastSigner, FastVerifier
from consensus.state import Signer
from sharding.accounts import derive_account, shard_of
from sharding.block import (
    EMPTY_EVIDENCE_ROOT,
    Block,
    BlockHeader,
    block_hash,
    compute_inbound_root,
    compute_tx_root,
)
from sharding.crossshard import ProvenReceipt, ReceiptBundle, attach_evidence, compute_bundles
from sharding.executor import process_cursors, process_inbound_receipt
from sharding.genesis import Genesis, load_genesis, make_genesis_dict, total_supply
from sharding.ledger import Ledger
from sharding.merkle import EMPTY_ROOT
from sharding.receipts import CREDIT, Receipt, compute_receipts_root, process_stamp_receipts
from sharding.records import get_in_cursor, get_shard_params
from sharding.state import Overlay
from sharding.tx import Call, SignedTx, Swap, Transfer, TxBody, sign_tx, tx_hash

CHAIN_ID = "shardnet-multisim"
ACCOUNT_SEED = "multisim"
BALANCE = 10**9
RESERVE = 10**9
IMPOSSIBLE_MIN_OUT = 10**18
FABRICATED_AMOUNT = 10**15
# What a byzantine primary puts in its block, and what honest replicas answer.
BYZANTINE_VARIANTS = {
    "fabricated": "bad_certificate",  # a credit never emitted, under a forged certificate
    "unproven": "bad_proofs",  # the same credit with no evidence at all
    "duplicate": "receipt_duplicate",  # a receipt applied before (or twice), real evidence
    "gap": "receipt_gap",  # a real receipt past the next sequence number
}


@dataclass(frozen=True)
class MultiSimConfig:
    seed: int = 0
    shards: int = 2
    replicas: int = 4
    real_signatures: bool = False
    fault_ms: int = 2500
    heal_ms_max: int = 30000
    txs: int = 16
    accounts: int = 16
    batch_txs_max: int = 4
    inbound_budget: int = 6
    block_interval_ms: int = 20
    tick_ms: int = 25
    latency_ms: tuple[int, int] = (1, 8)
    checkpoint_interval: int = 4
    request_timeout_ms: int = 400
    view_change_timeout_ms: int = 400
    retransmit_ms: int = 150
    sync_timeout_ms: int = 200
    pull_interval_ms: int = 300
    pull_receipts_max: int = 16
    faults: tuple[str, ...] | None = None  # None: chosen from the seed
    byzantine: tuple[str, ...] = ()  # "shard/index/mode" placed on top of the seed's choice
    load_ms: int | None = None  # transactions arrive within this window; None: fault phase
    command: str = "shardnet simulate"

    def cli_args(self) -> str:
        """The ``shardnet simulate`` options that rebuild this configuration."""
        args = f"--shards {self.shards} --seeds 1 --start {self.seed} --replicas {self.replicas}"
        if self.real_signatures:
            args += " --real-signatures"
        if self.faults is not None:
            args += f" --faults {','.join(self.faults) or 'none'}"
        if self.byzantine:
            args += f" --byzantine {','.join(self.byzantine)}"
        return args


@dataclass
class MultiSimResult:
    seed: int
    ok: bool
    violations: list[str]
    faults: Counter[str]
    dropped: Counter[str]  # consensus messages and events the replicas dropped
    refused: Counter[str]  # bundles refused, by reason
    relay: Counter[str]  # bundles pushed and served, pulls, receipts pooled
    bad_refusals: Counter[str]  # "variant:reason": honest answers to byzantine blocks
    commits: int
    heights: tuple[int, ...]
    max_view: int
    view_changes: int
    messages: int
    sim_ms: int
    repro: str
    receipts_applied: int
    txs: int
    last_commit_ms: int = 0

    @property
    def height(self) -> int:
        return max(self.heights, default=0)

    def describe(self) -> str:
        status = "ok" if self.ok else "FAILED"
        text = (
            f"seed {self.seed}: {status} heights={list(self.heights)} view={self.max_view} "
            f"view_changes={self.view_changes} txs={self.txs} "
            f"receipts={self.receipts_applied} messages={self.messages} "
            f"sim_ms={self.sim_ms} faults={dict(self.faults)}"
        )
        if not self.ok:
            text += "\n  " + "\n  ".join(self.violations[:10]) + f"\n  reproduce: {self.repro}"
        return text


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
    watched = {s: next(derive_account("fabricated", i).public_key for i in range(10**6)
                       if shard_of(derive_account("fabricated", i).public_key, shards) == s)
               for s in range(shards)}
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


# ---------------------------------------------------------------------------
# What byzantine replicas build


def make_bad_block(rng: random.Random, world: World, ledger: Ledger,
                   seen: Sequence[ProvenReceipt], *, height: int, view: int, time_ms: int,
                   proposer: int) -> tuple[Block, str]:
    """A byzantine primary's block: its header's roots are those of executing what it
    applies (so only the cross-shard rules can refuse it), its inbound receipts are one
    of ``BYZANTINE_VARIANTS``, drawn among those the receipts it has ``seen`` (proven,
    from bundles) make possible."""
    cursor = ledger.in_cursor
    options: dict[str, list[ProvenReceipt]] = {"fabricated": [], "unproven": []}
    # A receipt applied before; or the next one, twice.
    old = [p for p in seen if p.receipt.seq <= cursor(p.receipt.src_shard)]
    ready = [p for p in seen if p.receipt.seq == cursor(p.receipt.src_shard) + 1]
    if old or ready:
        options["duplicate"] = [rng.choice(old)] if old else [ready[0]] * 2
    ahead = [p for p in seen if p.receipt.seq > cursor(p.receipt.src_shard) + 1]
    if ahead:
        options["gap"] = [rng.choice(ahead)]
    variant = rng.choice(sorted(options))
    proven = options[variant]
    if not proven:
        shards = world.genesis.num_shards
        src = rng.choice([s for s in range(shards) if s != ledger.shard])
        fake = Receipt(src_shard=src, dst_shard=ledger.shard, seq=cursor(src) + 1, kind=CREDIT,
                       origin=rng.randbytes(32), sender=world.accounts[src][0].public_key,
                       recipient=world.watched[ledger.shard], asset=0,
                       amount=FABRICATED_AMOUNT)
        proven = [make_forged_evidence(rng, fake, len(world.signers[src]), time_ms)]
    block = make_block_applying(ledger, [p.receipt for p in proven], height=height, view=view,
                                time_ms=time_ms, proposer=proposer)
    if variant == "unproven":
        return block, variant
    return attach_evidence(block, {p.channel_seq: p for p in proven}), variant


def make_forged_evidence(rng: random.Random, receipt: Receipt, validators: int,
                         time_ms: int) -> ProvenReceipt:
    """``receipt`` under a made-up source header whose certificate carries a quorum of
    random signatures."""
    header = BlockHeader(
        shard=receipt.src_shard, height=rng.randint(1, 1000), view=0,
        prev_hash=rng.randbytes(32), time_ms=time_ms, proposer=0, tx_root=EMPTY_ROOT,
        inbound_root=EMPTY_ROOT, receipts_root=compute_receipts_root([receipt]),
        state_root=rng.randbytes(32), evidence_root=EMPTY_EVIDENCE_ROOT)
    digest = block_hash(header)
    signatures = tuple(IndexedSignature(i, rng.randbytes(64))
                       for i in range(quorum_size(validators)))
    forged = CommitCertificate(receipt.src_shard, 0, header.height, digest, signatures)
    (bundle,) = compute_bundles(header, encode(forged), [receipt]).values()
    return ProvenReceipt(receipt, bundle.source, digest, bundle.proofs[0])


def make_block_applying(ledger: Ledger, inbound: list[Receipt], *, height: int, view: int,
                        time_ms: int, proposer: int) -> Block:
    """The block on ``ledger``'s tip that applies ``inbound`` as they are (duplicates and
    gaps included, each channel's cursor moved to the highest sequence applied), with
    every root in its header computed by the executor's own steps."""
    state = ledger.state
    params = get_shard_params(state)
    view_ = Overlay(state)
    outbox: list[Receipt] = []
    cursors: dict[int, int] = {}
    for receipt in inbound:
        _, emitted = process_inbound_receipt(view_, params, receipt)
        outbox.extend(emitted)
        cursors[receipt.src_shard] = max(receipt.seq, cursors.get(receipt.src_shard, 0),
                                         get_in_cursor(state, receipt.src_shard))
    process_cursors(view_, cursors, inbound)
    receipts = process_stamp_receipts(view_, outbox)
    header = BlockHeader(
        shard=params.shard, height=height, view=view, prev_hash=ledger.tip_hash,
        time_ms=time_ms, proposer=proposer, tx_root=compute_tx_root([]),
        inbound_root=compute_inbound_root(inbound),
        receipts_root=compute_receipts_root(receipts),
        state_root=state.prepare(view_.writes).root, evidence_root=EMPTY_EVIDENCE_ROOT)
    return Block(header=header, txs=[], inbound=list(inbound))


def make_forged_bundle(rng: random.Random, bundle: ReceiptBundle, quorum: int
                       ) -> tuple[bytes, str]:
    """A forger's copy of a real bundle: a tampered receipt, a certificate of random
    signatures, or junk bytes; and which."""
    kind = rng.choice(["tampered", "certificate", "junk"])
    if kind == "tampered":
        first = msgspec.structs.replace(bundle.receipts[0],
                                        amount=bundle.receipts[0].amount + FABRICATED_AMOUNT)
        forged = msgspec.structs.replace(bundle, receipts=[first, *bundle.receipts[1:]])
        return encode(forged), kind
    if kind == "certificate":
        header = bundle.source.header
        signatures = tuple(IndexedSignature(i, rng.randbytes(64)) for i in range(quorum))
        cert = CommitCertificate(header.shard, 0, header.height, block_hash(header), signatures)
        source = msgspec.structs.replace(bundle.source, certificate=encode(cert))
        return encode(msgspec.structs.replace(bundle, source=source)), kind
    return rng.randbytes(rng.randint(0, 200)), kind
