"""Cross-shard evidence: receipt bundles, their verification, and a block's inbound
evidence (docs/PROTOCOL.md section 5).

A receipt leaves shard A only inside a ``ReceiptBundle``: A's certified header
(``SourceHeader``: header + commit certificate), receipts of one destination B, and
an RFC 6962 inclusion proof of each against the header's ``receipts_root``. Anyone
holding the genesis can check a bundle: the certificate carries a quorum of A's
genesis validators, the certificate names the header's hash, every proof verifies.
Nothing else about a receipt is trusted.

A block of B that applies inbound receipts carries the same evidence
(``Block.inbound_proofs`` and ``Block.source_headers``), bound by the header's
``evidence_root``; ``check_block_evidence`` is what every replica of B runs before
voting for such a block and before applying a synced one.

Pure: no clock, no I/O. The verifier is a parameter (real Ed25519 by default).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

import msgspec

from consensus.certificate import (
    CommitCertificate,
    Verifier,
    verify_certificate,
)
from consensus.kernel.codec import WireStruct, decode, encode
from consensus.kernel.crypto import sha256, verify_signature
from consensus.kernel.errors import DecodeError, ShardnetError
from consensus.kernel.limits import BUNDLE_BYTES_MAX, CERTIFICATE_BYTES_MAX
from sharding.block import (
    Block,
    BlockHeader,
    ReceiptProof,
    SourceHeader,
    block_hash,
    compute_evidence_root,
)
from sharding.executor import BLOCK_RECEIPTS_MAX, InvalidBlock
from sharding.merkle import InclusionProof, compute_proofs, is_valid_proof
from sharding.receipts import (
    Receipt,
    compute_receipt_leaves,
    get_receipt_order,
    is_well_formed_receipt,
)

BUNDLE_RECEIPTS_MAX = 2 * BLOCK_RECEIPTS_MAX  # a block's transactions plus its swaps' outputs
CERTIFICATES_REMEMBERED_MAX = 4096


class InvalidBundle(ShardnetError):
    """A bundle (or a block's evidence) that proves nothing; ``reason`` says why."""

    reason = "invalid_bundle"


class ReceiptBundle(WireStruct, frozen=True):
    """Receipts of one source block for one destination, with their evidence."""

    source: SourceHeader
    receipts: Annotated[list[Receipt], msgspec.Meta(max_length=BUNDLE_RECEIPTS_MAX)]
    proofs: Annotated[list[InclusionProof], msgspec.Meta(max_length=BUNDLE_RECEIPTS_MAX)]


@dataclass(frozen=True, slots=True)
class ProvenReceipt:
    """A receipt whose evidence verified: it was emitted by a committed source block."""

    receipt: Receipt
    source: SourceHeader
    source_hash: bytes  # block_hash(source.header)
    proof: InclusionProof

    @property
    def channel_seq(self) -> tuple[int, int]:
        return self.receipt.src_shard, self.receipt.seq


@dataclass(frozen=True, slots=True)
class Validators:
    """What verifying a certificate takes: the chain id and every shard's genesis keys."""

    chain_id: str
    keys: Sequence[Sequence[bytes]]  # keys[shard][index]
    verify: Verifier = verify_signature

    @property
    def num_shards(self) -> int:
        return len(self.keys)


class VerifiedSources:
    """Source headers whose certificate this node already verified (bounded; shared by
    the thread that verifies bundles and the one that validates blocks)."""

    def __init__(self, capacity: int = CERTIFICATES_REMEMBERED_MAX) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(source: SourceHeader, digest: bytes) -> bytes:
        return digest + sha256(source.certificate)

    def __contains__(self, key: bytes) -> bool:
        with self._lock:
            return key in self._keys

    def add(self, key: bytes) -> None:
        with self._lock:
            self._keys[key] = None
            if len(self._keys) > self.capacity:
                self._keys.popitem(last=False)


# ---------------------------------------------------------------------------
# The source side: bundles of a committed block


def compute_bundles(
    header: BlockHeader, certificate: bytes, receipts: Sequence[Receipt]
) -> dict[int, ReceiptBundle]:
    """One bundle per destination of a committed block's outgoing receipts (all of
    them: the proofs need the whole tree)."""
    ordered = sorted(receipts, key=get_receipt_order)
    leaves = compute_receipt_leaves(ordered)
    by_dst: dict[int, list[int]] = {}
    for index, receipt in enumerate(ordered):
        by_dst.setdefault(receipt.dst_shard, []).append(index)
    source = SourceHeader(header, certificate)
    return {
        dst: ReceiptBundle(
            source, [ordered[i] for i in indices], compute_proofs(leaves, indices)
        )
        for dst, indices in sorted(by_dst.items())
    }


def compute_bundle_slice(bundle: ReceiptBundle, first_seq: int, last_seq: int) -> ReceiptBundle:
    """The part of ``bundle`` within a sequence range (proofs stay valid)."""
    keep = [i for i, r in enumerate(bundle.receipts) if first_seq <= r.seq <= last_seq]
    return ReceiptBundle(
        bundle.source, [bundle.receipts[i] for i in keep], [bundle.proofs[i] for i in keep]
    )


# ---------------------------------------------------------------------------
# The destination side: verification


def verify_source_header(
    source: SourceHeader, validators: Validators, cache: VerifiedSources | None = None
) -> bytes:
    """Return the source block's hash once its commit certificate verifies against the
    source shard's genesis validators; raise ``InvalidBundle`` otherwise."""
    header = source.header
    # Verify the source is a shard of this network.
    if not 0 <= header.shard < validators.num_shards:
        raise InvalidBundle(f"source shard {header.shard}", reason="unknown_source")
    digest = block_hash(header)
    key = VerifiedSources.key(source, digest)
    if cache is not None and key in cache:
        return digest
    try:
        cert = decode(source.certificate, CommitCertificate, CERTIFICATE_BYTES_MAX)
    except DecodeError as exc:
        raise InvalidBundle(f"certificate: {exc.detail}", reason="bad_certificate") from None
    # Verify a quorum of the source shard's genesis validators committed this header.
    if not verify_certificate(
        cert,
        validators.chain_id,
        header.shard,
        header.height,
        digest,
        validators.keys[header.shard],
        validators.verify,
    ):
        raise InvalidBundle(
            f"shard {header.shard} height {header.height}", reason="bad_certificate"
        )
    if cache is not None:
        cache.add(key)
    return digest


def check_proven_receipt(
    receipt: Receipt, proof: InclusionProof, header: BlockHeader, dst_shard: int
) -> None:
    """Raise ``InvalidBundle`` unless ``receipt`` is a receipt of ``header``'s block
    for ``dst_shard``."""
    # Verify the receipt has the shape of a receipt.
    if not is_well_formed_receipt(receipt):
        raise InvalidBundle(f"seq {receipt.seq}", reason="malformed_receipt")
    # Verify the receipt names the certified block's shard as its source.
    if receipt.src_shard != header.shard:
        raise InvalidBundle(
            f"receipt from {receipt.src_shard} in a block of {header.shard}",
            reason="wrong_source",
        )
    # Verify the receipt is addressed to this shard.
    if receipt.dst_shard != dst_shard:
        raise InvalidBundle(f"receipt for shard {receipt.dst_shard}", reason="wrong_destination")
    # Verify the receipt is a leaf of the certified receipts_root.
    if not is_valid_proof(encode(receipt), proof, header.receipts_root):
        raise InvalidBundle(f"{receipt.src_shard}->{dst_shard} seq {receipt.seq}",
                            reason="bad_proof")


def verify_bundle(
    bundle: ReceiptBundle,
    dst_shard: int,
    validators: Validators,
    cache: VerifiedSources | None = None,
) -> list[ProvenReceipt]:
    """Every receipt of a bundle addressed to ``dst_shard``, proven; or ``InvalidBundle``."""
    # Verify there is one proof per receipt, and at least one receipt.
    if not bundle.receipts or len(bundle.proofs) != len(bundle.receipts):
        raise InvalidBundle(
            f"{len(bundle.receipts)} receipts, {len(bundle.proofs)} proofs", reason="malformed"
        )
    digest = verify_source_header(bundle.source, validators, cache)
    header = bundle.source.header
    proven = []
    for receipt, proof in zip(bundle.receipts, bundle.proofs, strict=True):
        check_proven_receipt(receipt, proof, header, dst_shard)
        proven.append(ProvenReceipt(receipt, bundle.source, digest, proof))
    return proven


def decode_bundle(data: bytes, max_bytes: int = BUNDLE_BYTES_MAX) -> ReceiptBundle:
    """Decode untrusted bytes; raises only ``DecodeError``."""
    return decode(data, ReceiptBundle, max_bytes)


# ---------------------------------------------------------------------------
# A block's inbound evidence


def attach_evidence(block: Block, proven: Mapping[tuple[int, int], ProvenReceipt]) -> Block:
    """The proposer's step after building: give each inbound receipt of ``block`` its
    proof and source header, and commit to them in ``evidence_root``."""
    sources: list[SourceHeader] = []
    source_index: dict[bytes, int] = {}
    proofs: list[ReceiptProof] = []
    for receipt in block.inbound:
        item = proven[(receipt.src_shard, receipt.seq)]
        index = source_index.get(item.source_hash)
        if index is None:
            index = source_index[item.source_hash] = len(sources)
            sources.append(item.source)
        proofs.append(ReceiptProof(index, item.proof))
    header = msgspec.structs.replace(
        block.header, evidence_root=compute_evidence_root(proofs, sources)
    )
    return msgspec.structs.replace(
        block, header=header, inbound_proofs=proofs, source_headers=sources
    )


def check_block_evidence(
    block: Block, validators: Validators, cache: VerifiedSources | None = None
) -> None:
    """Raise ``InvalidBlock`` unless every inbound receipt of ``block`` is proven by a
    certified source header the block carries, and the header commits to exactly
    that evidence."""
    header = block.header
    # Verify the header commits to the evidence the body carries.
    if header.evidence_root != compute_evidence_root(block.inbound_proofs, block.source_headers):
        raise InvalidBlock("evidence differs from evidence_root", reason="evidence_root_mismatch")
    # Verify there is one proof per inbound receipt.
    if len(block.inbound_proofs) != len(block.inbound):
        raise InvalidBlock(
            f"{len(block.inbound)} receipts, {len(block.inbound_proofs)} proofs",
            reason="bad_proofs",
        )
    # Verify every proof names a carried source header, and every header is used once.
    used = {proof.source for proof in block.inbound_proofs}
    if any(index >= len(block.source_headers) for index in used):
        raise InvalidBlock("proof names a missing source header", reason="bad_proofs")
    if len(used) != len(block.source_headers):
        raise InvalidBlock("a source header no receipt uses", reason="padded_evidence")
    digests = []
    for source in block.source_headers:
        try:
            digests.append(verify_source_header(source, validators, cache))
        except InvalidBundle as exc:
            raise InvalidBlock(exc.detail, reason=exc.reason) from None
    if len(set(digests)) != len(digests):
        raise InvalidBlock("a source header is carried twice", reason="padded_evidence")
    for receipt, proof in zip(block.inbound, block.inbound_proofs, strict=True):
        try:
            check_proven_receipt(
                receipt, proof.inclusion, block.source_headers[proof.source].header, header.shard
            )
        except InvalidBundle as exc:
            raise InvalidBlock(exc.detail, reason=exc.reason) from None
