"""What a byzantine primary in ``fabricate_inbound`` mode proposes (byzantine.py).

A block on the ledger's committed tip whose inbound receipts are a lie, built with
the executor's own pure steps (``sharding.executor``: apply each receipt, advance the
cursors, stamp the emitted receipts, compute every root), so its header matches what
it applies and only the cross-shard rules can refuse it. The variants and the refusal
an honest replica answers with (``VARIANTS``):

- ``fabricated``: a credit no source shard emitted, to an address nobody funds
  (``fabricated_recipient``), under a made-up source header whose certificate is a
  quorum of random signatures;
- ``unproven``: that credit with no evidence at all;
- ``duplicate``: a receipt applied before, with its real evidence (or the next one,
  twice);
- ``gap``: a real receipt past the channel's next sequence number (the next ones
  skipped), with its real evidence.

Nothing here touches the ledger: it reads the committed state, and the block it
returns is only ever sent, never executed by the byzantine node itself.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

from consensus.certificate import CommitCertificate, IndexedSignature, quorum_size
from consensus.kernel.codec import encode
from consensus.kernel.crypto import sha256
from sharding.accounts import derive_account, shard_of
from sharding.block import (
    EMPTY_EVIDENCE_ROOT,
    Block,
    BlockHeader,
    block_hash,
)
from sharding.crossshard import ProvenReceipt, attach_evidence, compute_bundles
from sharding.executor import finish_block, process_cursors, process_inbound_receipt
from sharding.merkle import EMPTY_ROOT
from sharding.receipts import CREDIT, Receipt, compute_receipts_root
from sharding.records import get_in_cursor, get_shard_params
from sharding.state import Overlay, State

FABRICATED_AMOUNT = 10**15
# What the primary puts in its block -> the reason an honest replica refuses it with.
VARIANTS = {
    "fabricated": "bad_certificate",
    "unproven": "bad_proofs",
    "duplicate": "receipt_duplicate",
    "gap": "receipt_gap",
}


@lru_cache(maxsize=64)
def fabricated_recipient(shard: int, num_shards: int) -> bytes:
    """An address of ``shard`` that nobody funds: where fabricated credits go (a
    simulation checks it holds nothing, anywhere)."""
    for i in range(10**6):
        address = derive_account("fabricated", i).public_key
        if shard_of(address, num_shards) == shard:
            return address
    raise ValueError(f"no fabricated address on shard {shard}")  # pragma: no cover


def get_proven_inbound(block: Block) -> list[ProvenReceipt]:
    """The inbound receipts of a (valid) block with the evidence it carries."""
    out = []
    for receipt, proof in zip(block.inbound, block.inbound_proofs, strict=False):
        source = block.source_headers[proof.source]
        out.append(ProvenReceipt(receipt, source, block_hash(source.header), proof.inclusion))
    return out


def make_bad_block(rng: random.Random, state: State, honest: BlockHeader,
                   seen: Sequence[ProvenReceipt], validators: Sequence[int]
                   ) -> tuple[Block, str]:
    """A block for ``honest``'s slot (height, view, parent, time, proposer kept) whose
    inbound receipts are one of ``VARIANTS``, drawn among those that the receipts the
    node has ``seen`` (proven) make possible. ``validators``: the count per shard."""
    shard = honest.shard

    def cursor(src: int) -> int:
        return get_in_cursor(state, src)

    options: dict[str, list[ProvenReceipt]] = {"fabricated": [], "unproven": []}
    old = [p for p in seen if p.receipt.seq <= cursor(p.receipt.src_shard)]
    ready = [p for p in seen if p.receipt.seq == cursor(p.receipt.src_shard) + 1]
    if old or ready:
        options["duplicate"] = [rng.choice(old)] if old else [ready[0]] * 2
    ahead = [p for p in seen if p.receipt.seq > cursor(p.receipt.src_shard) + 1]
    if ahead:
        options["gap"] = [rng.choice(ahead)]
    # A gap takes two receipts of one channel pooled at once, which is rare: when it
    # is possible, half of the strikes are one.
    variant = "gap" if "gap" in options and rng.random() < 0.5 else rng.choice(sorted(options))
    proven = options[variant]
    if not proven:
        src = rng.choice([s for s in range(len(validators)) if s != shard])
        fake = Receipt(src_shard=src, dst_shard=shard, seq=cursor(src) + 1, kind=CREDIT,
                       origin=rng.randbytes(32), sender=sha256(b"fabricated sender"),
                       recipient=fabricated_recipient(shard, len(validators)), asset=0,
                       amount=FABRICATED_AMOUNT)
        proven = [make_forged_evidence(rng, fake, validators[src], honest.time_ms)]
    block = make_block_applying(state, honest, [p.receipt for p in proven])
    if variant == "unproven":
        return block, variant
    return attach_evidence(block, {p.channel_seq: p for p in proven}), variant


def make_forged_evidence(rng: random.Random, receipt: Receipt, validators: int,
                         time_ms: int) -> ProvenReceipt:
    """``receipt`` under a made-up source header whose certificate carries a quorum
    of random signatures."""
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


def make_block_applying(state: State, honest: BlockHeader, inbound: list[Receipt]) -> Block:
    """The block for ``honest``'s slot that applies ``inbound`` as they are (duplicates
    and gaps included, each channel's cursor moved to the highest sequence applied),
    no transaction, every root computed by the executor's own steps."""
    params = get_shard_params(state)
    view = Overlay(state)
    outbox: list[Receipt] = []
    outcomes = []
    cursors: dict[int, int] = {}
    for receipt in inbound:
        outcome, emitted = process_inbound_receipt(view, params, receipt)
        outcomes.append(outcome)
        outbox.extend(emitted)
        cursors[receipt.src_shard] = max(receipt.seq, cursors.get(receipt.src_shard, 0),
                                         get_in_cursor(state, receipt.src_shard))
    process_cursors(view, cursors, inbound)
    result = finish_block(state, view, [], inbound, [], outcomes, outbox)
    header = BlockHeader(
        shard=params.shard, height=honest.height, view=honest.view,
        prev_hash=honest.prev_hash, time_ms=honest.time_ms, proposer=honest.proposer,
        tx_root=result.tx_root, inbound_root=result.inbound_root,
        receipts_root=result.receipts_root, state_root=result.state_root,
        evidence_root=EMPTY_EVIDENCE_ROOT)
    return Block(header=header, txs=[], inbound=list(inbound))
