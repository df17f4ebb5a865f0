"""Valid, signed encodings of everything a decoder target reads: the samples the
mutations start from. Deterministic (derived keys, fixed fields), built once.

The network is 2 shards of 4 validators (``derive_account(f"validator-{s}", i)``, as
``make_genesis_dict`` makes them); the source block is shard 0's height 1, emitting
receipts to shard 1, certified by validators 0..2; its bundle for shard 1 verifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import msgspec

from consensus.certificate import (
    GENESIS_CHECKPOINT,
    PHASE_COMMIT,
    PHASE_PREPARE,
    CommitCertificate,
    PreparedCertificate,
    pre_prepare_digest,
    sorted_signatures,
    vote_digest,
)
from consensus.kernel.codec import decode, encode
from consensus.kernel.crypto import KeyPair
from consensus.kernel.limits import MESSAGE_BYTES_MAX
from consensus.messages import (
    CertNotice,
    Message,
    NewView,
    PrePrepare,
    ViewChange,
    Vote,
    payload_digest,
    signing_digest,
)
from node.p2p.framing import encode_msg, encode_ping, encode_pong, encode_req, encode_resp
from node.wire import (
    BlockAnnouncement,
    ReceiptRef,
    ReceiptsRequest,
    ReceiptsResponse,
    ReceiptStatus,
    ReceiptStatusRequest,
    ReceiptStatusResponse,
    SyncedBlockWire,
    SyncRequest,
    SyncResponse,
    encode_tx_batch,
)
from sharding.accounts import derive_account, shard_of
from sharding.block import (
    EMPTY_EVIDENCE_ROOT,
    GENESIS_PREV_HASH,
    Block,
    BlockHeader,
    ReceiptProof,
    block_hash,
    compute_evidence_root,
    compute_inbound_root,
    compute_tx_root,
)
from sharding.crossshard import Validators, compute_bundles, verify_bundle
from sharding.genesis import Genesis, load_genesis, make_genesis_dict
from sharding.ledger import Ledger
from sharding.merkle import EMPTY_ROOT
from sharding.receipts import (
    CREDIT,
    REFUND,
    REPAY,
    SUPPLY,
    SWAP,
    WITHDRAW,
    Receipt,
    compute_receipts_root,
)
from sharding.tx import (
    AddLiquidity,
    Borrow,
    Call,
    Harvest,
    Liquidate,
    RemoveLiquidity,
    Repay,
    Stake,
    Supply,
    Swap,
    Transfer,
    TxBody,
    Unstake,
    Withdraw,
    sign_tx,
)

CHAIN = "shardnet-local"
SHARDS = 2
VALIDATORS = 4
QUORUM = (0, 1, 2)
DST_SHARD = 1


@dataclass(frozen=True)
class Corpus:
    genesis: Genesis
    validators: Validators
    txs: list[bytes]
    blocks: list[bytes]
    messages: list[bytes]
    bundles: list[bytes]
    certificates: list[bytes]
    headers: list[bytes]
    frames: list[bytes]
    tx_batches: list[bytes]
    requests: list[bytes]
    sync_responses: list[bytes]
    receipts_responses: list[bytes]
    status_responses: list[bytes]
    announcements: list[bytes]
    ledger_blocks: list[bytes]  # valid proposals at height 1 of shard DST_SHARD
    funded: list[KeyPair]  # genesis accounts of shard DST_SHARD


def _validator(shard: int, index: int) -> KeyPair:
    return derive_account(f"validator-{shard}", index)


def _certify(header: BlockHeader, phase: int = PHASE_COMMIT, view: int = 0,
             signers: tuple[int, ...] = QUORUM) -> CommitCertificate:
    digest = block_hash(header)
    vote = vote_digest(CHAIN, header.shard, view, header.height, digest, phase)
    signatures = {i: _validator(header.shard, i).sign(vote) for i in signers}
    return CommitCertificate(header.shard, view, header.height, digest,
                             sorted_signatures(signatures))


def _signed(msg: Message, sender: int, shard: int = 0) -> bytes:
    signature = _validator(shard, sender).sign(signing_digest(CHAIN, msg))
    return encode(msgspec.structs.replace(msg, signature=signature))


def sign_as_sender(msg: Message) -> bytes:
    """``msg`` signed by the validator it names (of its shard): what a byzantine
    validator, which holds a real key, can send."""
    return _signed(msg, msg.sender, msg.shard)


@cache
def get_corpus() -> Corpus:
    genesis = load_genesis(make_genesis_dict(num_shards=SHARDS, validators_per_shard=VALIDATORS,
                                             accounts=8))
    validators = Validators(CHAIN, [[v.public_key for v in vs] for vs in genesis.validators])
    alice, bob = derive_account("load", 0), derive_account("load", 1)
    pool = genesis.pools[0].address
    market = bytes(range(32))
    # One call of every kind (tags 0-11), so every variant's decoding is a mutation seed.
    calls: list[Call] = [Transfer(bob.public_key, 0, 100), Swap(pool, 1, 50, 1),
             AddLiquidity(pool, 10, 20, 1), RemoveLiquidity(pool, 5, 1, 1),
             Supply(market, 0, 1000), Withdraw(market, 0, 10), Borrow(market, 1, 20),
             Repay(market, 1, 5), Liquidate(market, bob.public_key, 1, 5, 0),
             Stake(pool, 10), Harvest(pool), Unstake(pool, 4)]
    signed = [sign_tx(alice, TxBody(CHAIN, alice.public_key, n, call))
              for n, call in enumerate(calls)]
    txs = [encode(tx) for tx in signed]

    receipts = [
        Receipt(0, DST_SHARD, 1, CREDIT, bytes(32), alice.public_key, bob.public_key, 0, 100),
        Receipt(0, DST_SHARD, 2, SWAP, bytes(32), alice.public_key, bob.public_key, 1, 50,
                pool, 1),
        Receipt(0, DST_SHARD, 3, REFUND, bytes(32), alice.public_key, alice.public_key, 0, 7,
                error="slippage"),
        Receipt(0, DST_SHARD, 4, SUPPLY, bytes(32), alice.public_key, alice.public_key, 0, 9,
                market),
        Receipt(0, DST_SHARD, 5, REPAY, bytes(32), alice.public_key, alice.public_key, 1, 3,
                market),
        Receipt(0, DST_SHARD, 6, WITHDRAW, bytes(32), alice.public_key, alice.public_key, 0, 0,
                market, 4),
    ]
    header = BlockHeader(0, 1, 0, GENESIS_PREV_HASH, 1000, 0, compute_tx_root(signed), EMPTY_ROOT,
                         compute_receipts_root(receipts), bytes(32), EMPTY_EVIDENCE_ROOT)
    cert = _certify(header)
    cert_bytes = encode(cert)
    bundle = compute_bundles(header, cert_bytes, receipts)[DST_SHARD]
    bundles = [encode(bundle)]

    proofs = [ReceiptProof(0, p) for p in bundle.proofs]
    inbound = list(bundle.receipts)
    dst_header = BlockHeader(DST_SHARD, 1, 0, GENESIS_PREV_HASH, 1000, 0, compute_tx_root([]),
                             compute_inbound_root(inbound), EMPTY_ROOT, bytes(32),
                             compute_evidence_root(proofs, [bundle.source]))
    blocks = [encode(Block(header, signed, [])),
              encode(Block(dst_header, [], inbound, proofs, [bundle.source]))]

    h = block_hash(header)
    payload = blocks[0]
    pre_prepare = PrePrepare(0, 0, 1, h, payload_digest(payload), 0, b"", payload, None)
    pp_signature = _validator(0, 0).sign(
        pre_prepare_digest(CHAIN, 0, 0, 1, h, payload_digest(payload)))
    prepared = PreparedCertificate(0, 1, h, payload_digest(payload), pp_signature,
                                   _certify(header, PHASE_PREPARE, signers=(1, 2)).signatures)
    # View 1 (primary 1): validators 0, 2 and 3 prepared height 1 in view 0; the primary
    # re-proposes it.
    view_changes = [_signed(ViewChange(0, 1, s, GENESIS_CHECKPOINT, None, prepared, b"", payload),
                            s) for s in (0, 2, 3)]
    relayed = tuple(msgspec.structs.replace(decode(vc, ViewChange, MESSAGE_BYTES_MAX), payload=b"")
                    for vc in view_changes)
    reproposal = decode(_signed(msgspec.structs.replace(pre_prepare, view=1, sender=1), 1),
                        PrePrepare, MESSAGE_BYTES_MAX)
    messages = [
        _signed(pre_prepare, 0),
        _signed(Vote(0, PHASE_PREPARE, 0, 1, h, 1, b""), 1),
        _signed(Vote(0, PHASE_COMMIT, 0, 1, h, 2, b""), 2),
        view_changes[1],
        _signed(NewView(0, 1, 1, relayed, reproposal, b""), 1),
        _signed(CertNotice(0, 1, cert, b""), 1),
    ]

    requests = [encode(SyncRequest(0, 1, 8)), encode(ReceiptsRequest(DST_SHARD, 1, 3)),
                encode(ReceiptStatusRequest(bytes(32), 0, [1, 2, 3]))]
    frames = [
        encode_msg(1, messages[1]) + encode_ping(7) + encode_msg(2, txs[0]) + encode_pong(7),
        encode_req(requests[0]) + encode_req(requests[2]),
        encode_resp(0, bundles[0][:64]) + encode_resp(1, b"not_found"),
    ]
    # Shard 1's first block: local transfers, a swap and a deposit on its pool, and the
    # bundle's receipts with their evidence, proposed by its ledger.
    local = [k for k in (derive_account("load", i) for i in range(8))
             if shard_of(k.public_key, SHARDS) == DST_SHARD]
    local_pool = next(p.address for p in genesis.pools
                      if shard_of(p.address, SHARDS) == DST_SHARD)
    local_calls: list[Call] = [Transfer(local[1].public_key, 0, 10),
                               Swap(local_pool, 0, 100, 1), AddLiquidity(local_pool, 50, 50, 1)]
    local_txs = [sign_tx(k, TxBody(CHAIN, k.public_key, 0, call))
                 for k, call in zip(local, local_calls, strict=False)]
    proven = verify_bundle(bundle, DST_SHARD, validators)
    ledger_blocks = [
        Ledger(genesis, DST_SHARD).propose(txs, inbound_, height=1, view=0, time_ms=1000,
                                           proposer=0, txs_max=100).payload
        for txs, inbound_ in ((local_txs, proven), (local_txs, []), ([], proven))]
    return Corpus(
        genesis=genesis,
        validators=validators,
        txs=txs,
        blocks=blocks,
        messages=messages,
        bundles=bundles,
        certificates=[cert_bytes],
        headers=[encode(header), encode(dst_header)],
        frames=frames,
        tx_batches=[encode_tx_batch(txs), encode_tx_batch([])],
        requests=requests,
        sync_responses=[encode(SyncResponse([SyncedBlockWire(1, h, payload, cert_bytes)]))],
        receipts_responses=[encode(ReceiptsResponse(bundles, 3))],
        status_responses=[encode(ReceiptStatusResponse(DST_SHARD, [
            ReceiptStatus(1, True, 4, 5000, [ReceiptRef(0, 9)]),
            ReceiptStatus(2, False, 0, 0, [])]))],
        announcements=[encode(BlockAnnouncement(0, 1, h, encode(header), cert_bytes))],
        ledger_blocks=ledger_blocks,
        funded=local,
    )
