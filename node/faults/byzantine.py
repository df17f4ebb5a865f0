"""Byzantine modes: real misbehaviour of one node, in the node shell around the
replica and the ledger (neither knows about it). Each act is logged
(``faults.byzantine_act``) and counted (``acts``, ``shardnet_fault_byzantine_acts_total``).

- ``equivocate``: as primary, every PRE-PREPARE this node sends goes as signed to
  the first half of the other replicas and, to the second half, a second properly
  signed PRE-PREPARE for the same view and height naming another valid block (the
  same block, its time 1 ms later).
- ``withhold_votes``: no PREPARE, COMMIT or CHECKPOINT vote leaves the node.
- ``wrong_roots``: as primary, every PRE-PREPARE names a block whose header carries a
  wrong ``state_root`` (re-hashed and signed properly).
- ``forge_receipts``: after each commit with outgoing receipts, instead of the honest
  push, bundles go to every node of the destination with (a) a receipt's amount
  inflated under the real proof and certificate, (b) a fabricated receipt at the
  next sequence number in a fabricated source header under the real certificate and
  (c) junk bytes; and every answer to a receipt pull carries the inflated copies of
  the bundles asked for (refused like the pushed ones: the puller asks another node).
- ``duplicate_receipts``: after each commit, the bundles pushed before (the last
  ``DUPLICATES_KEPT``) go again to every node of their destination, beside this
  block's own, each sent twice; and the oldest kept receipt is replayed under the
  next sequence number of its channel (with its old proof and certificate).
- ``tamper_sync``: sync answers keep certified headers and certificates but carry
  tampered bodies (the last transaction, or inbound receipt, left out).
- ``fabricate_inbound``: as primary, in some slots (a seeded draw per slot, likelier
  once it has seen real receipts) the PRE-PREPARE names, instead of the honest block,
  a block applying fabricated, unproven, duplicated or skipped inbound receipts
  (``fabricate.py``: built on the committed state with the executor's own steps,
  every root matching, re-hashed and signed properly); the other slots are honest.

- ``censor``: as primary, the sender of the first transaction this node is asked to
  put in a block once in this mode is censored from then on: every block it proposes
  leaves that sender's transactions out (the rest is proposed honestly, every root
  right). The replicas' request timer replaces it (PROTOCOL.md 4, "View change").

``invalid_blocks`` keeps the digests of the invalid blocks sent (``wrong_roots``,
``fabricate_inbound``) with what each is: no honest replica may vote for one.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import msgspec

from consensus.certificate import pre_prepare_digest
from consensus.kernel.codec import decode, encode
from consensus.kernel.crypto import KeyPair, sha256
from consensus.kernel.errors import DecodeError
from consensus.messages import PrePrepare, Vote, decode_message, payload_digest
from node.faults.fabricate import get_proven_inbound, make_bad_block
from node.faults.state import (
    CENSOR,
    DUPLICATE_RECEIPTS,
    EQUIVOCATE,
    FABRICATE_INBOUND,
    FORGE_RECEIPTS,
    TAMPER_SYNC,
    WITHHOLD_VOTES,
    WRONG_ROOTS,
    FaultState,
)
from node.wire import ReceiptsResponse, SyncedBlockWire, SyncResponse
from sharding.block import Block, block_hash, decode_block
from sharding.crossshard import ProvenReceipt, ReceiptBundle, decode_bundle
from sharding.inbound import InboundPool
from sharding.ledger import Ledger, Proposal
from sharding.tx import SignedTx

CONSENSUS_MODES = frozenset({EQUIVOCATE, WITHHOLD_VOTES, WRONG_ROOTS, FABRICATE_INBOUND})
RELAY_MODES = frozenset({FORGE_RECEIPTS, DUPLICATE_RECEIPTS})
VARIANTS_KEPT = 64  # altered PRE-PREPAREs remembered (a retransmission sends the same)
DUPLICATES_KEPT = 16  # bundles remembered for re-sending
SYNC_ANSWER_BYTES_MAX = 64 * 1024 * 1024
SEEN_KEPT = 256  # proven receipts a fabricating primary remembers (to duplicate or skip)
INVALID_KEPT = 4096  # digests of invalid blocks sent, with their variant
STRIKE_CHANCE = 0.2  # per slot, before it has seen a real receipt
STRIKE_CHANCE_SEEN = 0.6  # per slot, once it holds receipts to duplicate or skip
JUNK_BYTES_MAX = 200


class Byzantine:
    """The acts of one node's byzantine mode (``state.byzantine`` says which)."""

    def __init__(self, state: FaultState, *, key: KeyPair, chain_id: str, shard: int,
                 me: int, validators: int, message_bytes_max: int, block_bytes_max: int,
                 log: Any, count: Any = None) -> None:
        self.state = state
        self.key = key
        self.chain_id = chain_id
        self.shard = shard
        self.me = me
        self.validators = validators
        self.message_bytes_max = message_bytes_max
        self.block_bytes_max = block_bytes_max
        self.log = log
        self._count = count  # prometheus counter with a mode label, or None
        self.acts: Counter[str] = Counter()
        self._variants: dict[tuple[str, bytes], bytes] = {}
        self._pushed: deque[tuple[int, ReceiptBundle]] = deque(maxlen=DUPLICATES_KEPT)
        self.invalid_blocks: dict[bytes, str] = {}  # digest -> what is wrong with it
        self._seen: dict[tuple[int, int], ProvenReceipt] = {}
        self._ledger: Ledger | None = None
        self._pool: InboundPool | None = None
        self._validators_per_shard: list[int] = []
        self.censored: bytes | None = None  # ``censor``: the sender left out

    def attach(self, ledger: Ledger, pool: InboundPool) -> None:
        """The node's ledger and inbound pool (read only), for ``fabricate_inbound``."""
        self._ledger = ledger
        self._pool = pool
        self._validators_per_shard = [len(keys) for keys in ledger.validators.keys]
        honest_propose = ledger.propose

        def propose(txs: list[SignedTx], inbound: list[ProvenReceipt], **fields: Any
                    ) -> Proposal:
            if self.state.byzantine == CENSOR:
                txs, fields["tx_hashes"] = self._censor(txs, fields.get("tx_hashes"))
            return honest_propose(txs, inbound, **fields)

        ledger.propose = propose  # type: ignore[method-assign]

    def _censor(self, txs: list[SignedTx], hashes: list[bytes] | None
                ) -> tuple[list[SignedTx], list[bytes] | None]:
        """``txs`` (and their hashes) without the censored sender's; the first sender
        offered becomes the censored one."""
        if self.censored is None and txs:
            self.censored = txs[0].body.sender
        keep = [i for i, tx in enumerate(txs) if tx.body.sender != self.censored]
        if len(keep) < len(txs):
            self._act(CENSOR, sender=(self.censored or b"").hex(), left_out=len(txs) - len(keep),
                      proposed=len(keep))
        return [txs[i] for i in keep], None if hashes is None else [hashes[i] for i in keep]

    @property
    def mode(self) -> str:
        return self.state.byzantine

    @property
    def relays_byzantine(self) -> bool:
        return self.state.byzantine in RELAY_MODES

    def _act(self, mode: str, **fields: Any) -> None:
        self.acts[mode] += 1
        if self._count is not None:
            self._count.labels(mode=mode).inc()
        self.log.info("faults.byzantine_act", mode=mode, **fields)

    # -- consensus (the node's send path) --------------------------------------------------

    def consensus_out(self, index: int, data: bytes) -> bytes | None:
        """What goes to replica ``index`` instead of ``data`` (None: nothing)."""
        mode = self.state.byzantine
        if mode not in CONSENSUS_MODES:
            return data
        try:
            message = decode_message(data, self.message_bytes_max)
        except DecodeError:
            return data
        if mode == WITHHOLD_VOTES:
            if isinstance(message, Vote):
                self._act(mode, phase=message.phase, height=message.height, to=index)
                return None
            return data
        if not isinstance(message, PrePrepare) or message.sender != self.me:
            return data
        if mode == EQUIVOCATE:
            others = [i for i in range(self.validators) if i != self.me]
            if index in others[:len(others) // 2]:
                return data
        if mode == FABRICATE_INBOUND:
            return self._fabricated(message, data, index)
        return self._variant(mode, message, index)

    def _remember_invalid(self, digest: bytes, what: str) -> None:
        if len(self.invalid_blocks) >= INVALID_KEPT:
            self.invalid_blocks.pop(next(iter(self.invalid_blocks)))
        self.invalid_blocks[digest] = what

    def _cache(self, key: tuple[str, bytes], data: bytes) -> bytes:
        if len(self._variants) >= VARIANTS_KEPT:
            self._variants.clear()
        self._variants[key] = data
        return data

    def _see(self, proven: list[ProvenReceipt]) -> None:
        for item in proven:
            self._seen.pop(item.channel_seq, None)
            self._seen[item.channel_seq] = item
        while len(self._seen) > SEEN_KEPT:
            self._seen.pop(next(iter(self._seen)))

    def _fabricated(self, message: PrePrepare, data: bytes, index: int) -> bytes:
        """The PRE-PREPARE of this slot as sent to everyone: the honest one, or (a
        seeded draw, once per slot) one naming a block with lying inbound receipts."""
        key = (FABRICATE_INBOUND, message.block_hash)
        cached = self._variants.get(key)
        if cached is not None:
            return cached
        ledger, pool = self._ledger, self._pool
        if (ledger is None or pool is None or ledger.height + 1 != message.height
                or len(self._validators_per_shard) < 2):  # one shard: no inbound to lie about
            return data
        honest = decode_block(message.payload, self.block_bytes_max)
        self._see(get_proven_inbound(honest))
        self._see(pool.select(ledger.in_cursor, SEEN_KEPT))
        rng = self.state.rng
        chance = STRIKE_CHANCE_SEEN if self._seen else STRIKE_CHANCE
        if rng.random() >= chance:
            return self._cache(key, data)
        block, variant = make_bad_block(rng, ledger.state, honest.header,
                                        list(self._seen.values()), self._validators_per_shard)
        altered, digest = self._resigned(message, block)
        self._remember_invalid(digest, variant)
        self._act(FABRICATE_INBOUND, variant=variant, height=message.height,
                  view=message.view, to=index, honest_block=message.block_hash.hex(),
                  sent_block=digest.hex(), inbound=len(block.inbound))
        return self._cache(key, altered)

    def _resigned(self, message: PrePrepare, block: Block) -> tuple[bytes, bytes]:
        """``message`` carrying ``block`` instead, signed by this (primary) node as a real
        PRE-PREPARE is: the encoded message and the block's hash."""
        payload = encode(block)
        digest, payload_hash = block_hash(block), payload_digest(payload)
        signature = self.key.sign(pre_prepare_digest(
            self.chain_id, message.shard, message.view, message.height, digest, payload_hash))
        return encode(msgspec.structs.replace(
            message, block_hash=digest, payload_hash=payload_hash, payload=payload,
            signature=signature)), digest

    def _variant(self, mode: str, message: PrePrepare, index: int) -> bytes:
        key = (mode, message.block_hash)
        cached = self._variants.get(key)
        if cached is not None:
            return cached
        block = decode_block(message.payload, self.block_bytes_max)
        header = block.header
        if mode == EQUIVOCATE:  # another valid block for the same slot
            header = msgspec.structs.replace(header, time_ms=header.time_ms + 1)
        else:  # WRONG_ROOTS: a state root execution will not reproduce
            header = msgspec.structs.replace(header, state_root=sha256(header.state_root))
        data, digest = self._resigned(message, msgspec.structs.replace(block, header=header))
        self._cache(key, data)
        if mode == WRONG_ROOTS:
            self._remember_invalid(digest, mode)
        self._act(mode, height=message.height, view=message.view, to=index,
                  honest_block=message.block_hash.hex(), sent_block=digest.hex())
        return data

    # -- the relay's push -----------------------------------------------------------------

    def relay_out(self, bundles: dict[int, ReceiptBundle]) -> list[tuple[int, bytes]]:
        """(destination shard, encoded bundle) to push to every node of it, in place of
        the honest push of a commit's ``bundles``."""
        mode = self.state.byzantine
        out: list[tuple[int, bytes]] = []
        if mode == FORGE_RECEIPTS:
            for dst, bundle in sorted(bundles.items()):
                out.extend((dst, encode(forged)) for forged in forge_bundles(bundle))
                junk = self.state.rng.randbytes(self.state.rng.randint(0, JUNK_BYTES_MAX))
                out.append((dst, junk))
            if out:
                self._act(mode, bundles=len(out), height=_height(bundles))
        elif mode == DUPLICATE_RECEIPTS:
            fresh = sorted(bundles.items())
            again = [*self._pushed, *fresh, *fresh]
            out = [(dst, encode(bundle)) for dst, bundle in again]
            if self._pushed:
                out.append(replay_bundle(self._pushed[0], [*self._pushed, *fresh]))
            if out:
                self._act(mode, bundles=len(out), again=len(self._pushed),
                          height=_height(bundles))
            self._pushed.extend(fresh)
        return out

    # -- receipt pull answers -------------------------------------------------------------

    def receipts_answer(self, answer: bytes) -> bytes:
        """``answer`` (an encoded ``ReceiptsResponse``) with each bundle's first receipt
        inflated under its real proof (``forge_receipts``)."""
        if self.state.byzantine != FORGE_RECEIPTS:
            return answer
        response = decode(answer, ReceiptsResponse, SYNC_ANSWER_BYTES_MAX)
        forged = []
        for raw in response.bundles:
            lies = forge_bundles(decode_bundle(raw, SYNC_ANSWER_BYTES_MAX))
            forged.append(encode(lies[0]) if lies else raw)
        if forged:
            self._act(FORGE_RECEIPTS, served=len(forged))
        return encode(ReceiptsResponse(forged, response.out_seq))

    # -- sync answers ---------------------------------------------------------------------

    def sync_answer(self, answer: bytes) -> bytes:
        """``answer`` (an encoded ``SyncResponse``) with every body tampered."""
        if self.state.byzantine != TAMPER_SYNC:
            return answer
        response = decode(answer, SyncResponse, SYNC_ANSWER_BYTES_MAX)
        blocks = [SyncedBlockWire(b.height, b.block_hash, self._tamper(b.payload),
                                  b.certificate) for b in response.blocks]
        if blocks:
            self._act(TAMPER_SYNC, first=blocks[0].height, last=blocks[-1].height)
        return encode(SyncResponse(blocks))

    def _tamper(self, payload: bytes) -> bytes:
        block = decode_block(payload, self.block_bytes_max)
        if block.txs:
            return encode(msgspec.structs.replace(block, txs=block.txs[:-1]))
        if block.inbound:
            return encode(msgspec.structs.replace(block, inbound=block.inbound[:-1]))
        return encode(msgspec.structs.replace(block, txs=[], inbound=[], inbound_proofs=[],
                                              source_headers=list(block.source_headers) * 2))


def _height(bundles: dict[int, ReceiptBundle]) -> int:
    return next(iter(bundles.values())).source.header.height if bundles else 0


def replay_bundle(old: tuple[int, ReceiptBundle], known: list[tuple[int, ReceiptBundle]]
                  ) -> tuple[int, bytes]:
    """``old``'s first receipt again, under the next sequence number of its channel
    that ``known`` shows, with its old proof and source."""
    dst, bundle = old
    receipt = bundle.receipts[0]
    last = max(r.seq for d, b in known if d == dst for r in b.receipts)
    replayed = msgspec.structs.replace(receipt, seq=last + 1)
    return dst, encode(ReceiptBundle(bundle.source, [replayed], [bundle.proofs[0]]))


def forge_bundles(bundle: ReceiptBundle) -> list[ReceiptBundle]:
    """Two lies about one real bundle: an inflated amount under the real proof, and a
    fabricated next receipt in a fabricated source header under the real certificate."""
    if not bundle.receipts:
        return []
    first = bundle.receipts[0]
    inflated = msgspec.structs.replace(first, amount=first.amount * 1000 + 1)
    last = bundle.receipts[-1]
    invented = msgspec.structs.replace(last, seq=last.seq + 1, amount=10**12,
                                       origin=sha256(b"forged" + last.origin))
    header = bundle.source.header
    fake_header = msgspec.structs.replace(header, receipts_root=sha256(header.receipts_root))
    return [
        ReceiptBundle(bundle.source, [inflated], [bundle.proofs[0]]),
        ReceiptBundle(msgspec.structs.replace(bundle.source, header=fake_header), [invented],
                      [bundle.proofs[-1]]),
    ]
