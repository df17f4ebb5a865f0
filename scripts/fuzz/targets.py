"""The fuzz targets: one ``Target`` a decoder of untrusted bytes, in ``TARGETS``.

A target names the inputs it is fed (a hypothesis strategy, built on first use) and
``check``, which runs one input the way a node runs it: the decoder, then the pure
checks a node applies next (hashes, stateless transaction checks, signatures,
certificates, a block's inbound evidence), so a decoded but hostile object reaches
them too. ``check`` returns ``None`` (accepted) or a refusal reason, or raises; an
exception that is a ``ShardnetError`` (not an ``InvariantViolation``) is a typed
refusal with its ``reason``, anything else is a finding. Add a target (the HTTP API
later) by adding an entry to ``TARGETS``; ``inputs(seed)`` draws batches of ``batch``
inputs (one hypothesis example each), which need not be bytes: ``show`` and ``parse``
render and read one for the report and ``--replay``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from consensus.actions import Dropped
from consensus.certificate import (
    CommitCertificate,
    verify_certificate,
    verify_checkpoint,
    verify_prepared,
)
from consensus.events import MessageReceived
from consensus.kernel.codec import decode, encode
from consensus.kernel.crypto import verify_signature
from consensus.kernel.errors import DecodeError, InvariantViolation, ShardnetError
from consensus.kernel.limits import CERTIFICATE_BYTES_MAX, MESSAGE_BYTES_MAX, REQUEST_BYTES_MAX
from consensus.messages import (
    _MESSAGE_TYPE,
    NewView,
    PrePrepare,
    ViewChange,
    decode_message,
    payload_digest,
    signing_digest,
)
from consensus.replica import Replica
from consensus.state import ReplicaConfig
from node.api import _read_raw_txs as read_raw_txs
from node.errors import ApiError
from node.finality import STATUS_RESPONSE_BYTES_MAX
from node.p2p.framing import (
    KIND_MSG,
    KIND_PING,
    KIND_PONG,
    KIND_REQ,
    MSG_KINDS,
    REQ_KINDS,
    RESP_KINDS,
    Frame,
    FrameDecoder,
    encode_msg,
    encode_ping,
    encode_pong,
    encode_req,
    encode_resp,
)
from node.relay import RECEIPTS_RESPONSE_BYTES_MAX
from node.service import check_announcement
from node.sync import SYNC_RESPONSE_BYTES_MAX
from node.wire import (
    BlockAnnouncement,
    ReceiptsResponse,
    ReceiptStatusResponse,
    Request,
    SyncResponse,
    TxBatch,
    decode_tx_batch,
)
from scripts.fuzz.corpus import (
    CHAIN,
    DST_SHARD,
    SHARDS,
    VALIDATORS,
    Corpus,
    get_corpus,
    sign_as_sender,
)
from scripts.fuzz.mutations import mutants, random_inputs
from scripts.fuzz.shapes import encoded
from sharding.accounts import derive_account, shard_of
from sharding.block import (
    GENESIS_PREV_HASH,
    Block,
    block_hash,
    compute_evidence_root,
    compute_inbound_root,
    compute_tx_root,
    decode_block,
)
from sharding.crossshard import ReceiptBundle, check_block_evidence, decode_bundle, verify_bundle
from sharding.ledger import Ledger
from sharding.tx import SignedTx, check_tx_stateless, decode_tx, sign_tx, tx_hash

RANDOM_BYTES_MAX = 512
POOL_SHAPED = 24  # shaped encodings drawn for each chunk of inputs
BATCH = 32  # inputs derived from one hypothesis draw
FRAME_BYTES_MAX = 1 << 16
API_BATCH_MAX = 64  # the API's transactions per POST (node/defaults.py's is larger)
TX_BATCH_BYTES_MAX = 1 << 20


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    inputs: Callable[[int], st.SearchStrategy[list[Any]]]  # batches, for a chunk's seed
    check: Callable[[Any], str | None]
    batch: int = BATCH  # inputs in each batch ``inputs`` draws (1 for costly inputs)
    show: Callable[[Any], str] = field(default=lambda data: bytes(data).hex())
    parse: Callable[[str], Any] = field(default=bytes.fromhex)
    needs_node: bool = False  # runs against a node (the API): named, not in ``all``

    def is_typed(self, exc: BaseException) -> bool:
        """A refusal the decoder may give: a ``ShardnetError`` that is not our own bug."""
        return isinstance(exc, ShardnetError) and not isinstance(exc, InvariantViolation)


def draw_pool(strategy: st.SearchStrategy[Any], size: int, seed: int) -> list[Any]:
    """``size`` values of ``strategy``, drawn by a hypothesis run seeded with ``seed``
    (the first is the strategy's simplest value)."""
    pool: list[Any] = []

    @hypothesis_seed(seed)
    @settings(max_examples=size, database=None, deadline=None, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(strategy)
    def collect(value: Any) -> None:
        pool.append(value)

    collect()
    return pool


def mixed(pool: list[bytes]) -> st.SearchStrategy[list[bytes]]:
    """Batches of ``BATCH`` inputs: one random-byte batch for three batches of a pool
    sample and its mutants (spliced with another sample), from a seed hypothesis draws."""
    sources = st.sampled_from(pool)
    seeds = st.integers(0, 2**64 - 1)
    return st.one_of(
        st.builds(mutants, sources, sources, seeds, st.just(BATCH)),
        st.builds(random_inputs, seeds, st.just(BATCH), st.just(RANDOM_BYTES_MAX)),
        st.builds(mutants, sources, sources, seeds, st.just(BATCH)),
        st.builds(mutants, sources, sources, seeds, st.just(BATCH)))


def byte_inputs(samples: Callable[[Corpus], Sequence[bytes]], type_: Any) -> Callable[
        [int], st.SearchStrategy[list[bytes]]]:
    """For one chunk of inputs: the corpus's valid samples and ``POOL_SHAPED`` encodings
    drawn from ``type_``'s shape (drawing shapes is slow; mutating them is not), mixed."""
    def build(seed: int) -> st.SearchStrategy[list[bytes]]:
        pool = list(samples(get_corpus())) + draw_pool(encoded(type_), POOL_SHAPED, seed)
        return mixed(pool)
    return build


# ---------------------------------------------------------------------------
# What a node does with each decoded object


def check_tx(data: bytes) -> str | None:
    tx = decode_tx(data)
    tx_hash(tx)
    check_tx_stateless(tx, CHAIN, shard_of(tx.body.sender, SHARDS), SHARDS)
    return None


def check_block(data: bytes) -> str | None:
    block = decode_block(data)
    block_hash(block)
    compute_tx_root(block.txs)
    compute_inbound_root(block.inbound)
    compute_evidence_root(block.inbound_proofs, block.source_headers)
    check_block_evidence(block, get_corpus().validators)
    return None


def _keys(shard: int) -> Sequence[bytes]:
    keys = get_corpus().validators.keys
    return keys[shard] if shard < len(keys) else ()


def check_message(data: bytes) -> str | None:
    msg = decode_message(data, MESSAGE_BYTES_MAX)
    keys = _keys(msg.shard)
    digest = signing_digest(CHAIN, msg)
    if msg.sender >= len(keys) or not verify_signature(keys[msg.sender], digest, msg.signature):
        return "bad_signature"
    certs: list[CommitCertificate] = []
    if isinstance(msg, PrePrepare):
        if payload_digest(msg.payload) != msg.payload_hash:
            return "bad_payload"
        certs += [msg.prev_cert] if msg.prev_cert is not None else []
    views = list(msg.view_changes) if isinstance(msg, NewView) else []
    views += [msg] if isinstance(msg, ViewChange) else []
    for view_change in views:
        if not verify_checkpoint(view_change.checkpoint, CHAIN, msg.shard, keys):
            return "bad_checkpoint"
        certs += [view_change.last_commit] if view_change.last_commit is not None else []
        prepared = view_change.prepared
        if prepared is not None and not verify_prepared(prepared, CHAIN, msg.shard, keys):
            return "bad_prepared"
    for cert in certs:
        if not verify_certificate(cert, CHAIN, msg.shard, cert.height, cert.block_hash, keys):
            return "bad_certificate"
    return None


REPLICA_INDEX = 3  # the replica the "replica" target feeds: a backup in view 0


def check_replica(data: bytes) -> str | None:
    """A fresh replica of shard 0 (index 3, real Ed25519) steps one received message; a
    message that decodes and names a validator of shard 0 is first re-signed with that
    validator's key, as a byzantine validator would send it. Anything but ``Dropped``
    (an exception escaping ``step``, ``InvariantViolation`` included) is a finding."""
    with contextlib.suppress(DecodeError):
        msg = decode_message(data, MESSAGE_BYTES_MAX)
        if msg.shard == 0 and msg.sender < VALIDATORS:
            data = sign_as_sender(msg)
    corpus = get_corpus()
    config = ReplicaConfig(CHAIN, 0, tuple(corpus.validators.keys[0]), REPLICA_INDEX)
    replica = Replica(config, derive_account("validator-0", REPLICA_INDEX), verify_signature)
    for action in replica.step(MessageReceived(data)):
        if isinstance(action, Dropped):
            return action.reason
    return None


def check_ledger(data: bytes) -> str | None:
    """A block a byzantine primary proposes at height 1 of shard ``DST_SHARD``, executed
    by a fresh ledger. The primary holds keys and computes hashes, so what it cannot
    get wrong by accident is set right before executing: the header fields
    ``Ledger.execute`` checks first (shard, height, parent, view, proposer, time), each
    transaction re-signed by a funded account of the shard (its call, amounts and
    nonce stay hostile), the evidence root. The body then reaches the evidence checks
    and the executor. ``execute``'s safety net for exceptions (``execution_error``)
    counts as a finding: an untrusted block may only be invalid."""
    block = decode_block(data)
    signers = get_corpus().funded
    txs = [sign_tx(signers[i % len(signers)],
                   msgspec.structs.replace(tx.body, chain_id=CHAIN,
                                           sender=signers[i % len(signers)].public_key))
           for i, tx in enumerate(block.txs)]
    header = msgspec.structs.replace(
        block.header, shard=DST_SHARD, height=1, view=0, prev_hash=GENESIS_PREV_HASH,
        proposer=0, time_ms=max(block.header.time_ms, 1), tx_root=compute_tx_root(txs),
        evidence_root=compute_evidence_root(block.inbound_proofs, block.source_headers))
    fixed = msgspec.structs.replace(block, header=header, txs=txs)
    verdict = Ledger(get_corpus().genesis, DST_SHARD).execute(encode(fixed), block_hash(fixed),
                                                             1, 0)
    if verdict.startswith("execution_error"):
        raise AssertionError(f"Ledger.execute: {verdict}")
    return verdict.split(":")[0] or None


def check_bundle(data: bytes) -> str | None:
    verify_bundle(decode_bundle(data), DST_SHARD, get_corpus().validators)
    return None


def check_certificate(data: bytes) -> str | None:
    cert = decode(data, CommitCertificate, CERTIFICATE_BYTES_MAX)
    if not verify_certificate(cert, CHAIN, cert.shard, cert.height, cert.block_hash,
                              _keys(cert.shard)):
        return "bad_certificate"
    return None


def check_tx_batch(data: bytes) -> str | None:
    for raw in decode_tx_batch(data, TX_BATCH_BYTES_MAX).txs:
        check_tx(raw)
    return None


def _decoding(type_: Any, max_bytes: int) -> Callable[[bytes], str | None]:
    def run(data: bytes) -> str | None:
        decode(data, type_, max_bytes)
        return None
    return run


def check_sync_response(data: bytes) -> str | None:
    for synced in decode(data, SyncResponse, SYNC_RESPONSE_BYTES_MAX).blocks:
        decode(synced.certificate, CommitCertificate, CERTIFICATE_BYTES_MAX)
        decode_block(synced.payload)
    return None


def check_receipts_response(data: bytes) -> str | None:
    for raw in decode(data, ReceiptsResponse, RECEIPTS_RESPONSE_BYTES_MAX).bundles:
        check_bundle(raw)
    return None


# ---------------------------------------------------------------------------
# HTTP bodies of POST /v1/txs: the first byte picks the content type (msgpack, JSON, or
# none, read as JSON); node/api.py's body reader runs on the rest, then every
# transaction it yields as ``tx``. Its refusals are ``ApiError``s: a 5xx is a finding.

_CONTENT_TYPES = ("application/msgpack", "application/json", "text/plain")


@dataclass(frozen=True)
class _Body:
    """What ``_read_raw_txs`` reads of an aiohttp request."""

    body: bytes
    content_type: str

    async def read(self) -> bytes:
        return self.body


def check_api_body(data: bytes) -> str | None:
    head, body = (data[0], data[1:]) if data else (0, b"")
    reader = read_raw_txs(cast(Any, _Body(body, _CONTENT_TYPES[head % 3])), API_BATCH_MAX)
    try:
        reader.send(None)
    except StopIteration as done:
        raw_txs: list[bytes] = done.value
    except ApiError as exc:
        if exc.status >= 500:
            raise AssertionError(f"{exc.status} {exc.reason}: {exc.detail}") from None
        raise
    else:
        reader.close()
        raise AssertionError("the body reader waited on something other than the body")
    for raw in raw_txs:
        check_tx(raw)
    return None


def api_body_inputs(seed: int) -> st.SearchStrategy[list[bytes]]:
    txs = get_corpus().txs
    msgpack, json_ = b"\x00", b"\x01"
    hexes = [b'"' + t.hex().encode() + b'"' for t in txs]
    samples = [msgpack + txs[0], msgpack + encode(txs), json_ + b'{"tx": ' + hexes[1] + b"}",
               json_ + b'{"txs": [' + b", ".join(hexes) + b"]}"]
    return mixed(samples)


def check_announcement_target(data: bytes) -> str | None:
    reason, _ = check_announcement(get_corpus().genesis, data)
    return reason or None


# ---------------------------------------------------------------------------
# p2p frames: the first byte picks the stream (messages, requests, responses) and the
# size of the chunks the rest arrives in; decoding in chunks must give what decoding
# it whole gives, and the frames must re-encode to the bytes they came from.

_FRAME_KINDS = (MSG_KINDS, REQ_KINDS, RESP_KINDS)


def _encode_frame(frame: Frame) -> bytes:
    if frame.kind == KIND_MSG:
        return encode_msg(frame.channel, frame.payload)
    if frame.kind == KIND_PING:
        return encode_ping(frame.nonce)
    if frame.kind == KIND_PONG:
        return encode_pong(frame.nonce)
    if frame.kind == KIND_REQ:
        return encode_req(frame.payload)
    return encode_resp(frame.status, frame.payload)


def check_frames(data: bytes) -> str | None:
    head, stream = (data[0], data[1:]) if data else (0, b"")
    kinds, step = _FRAME_KINDS[head % 3], head // 3 % 17 + 1
    whole = FrameDecoder(FRAME_BYTES_MAX, kinds)
    frames = whole.feed(stream)
    pieces = FrameDecoder(FRAME_BYTES_MAX, kinds)
    chunked: list[Frame] = []
    for start in range(0, len(stream), step):
        chunked += pieces.feed(stream[start:start + step])
        if pieces.error is not None:
            break
    whole_reason = whole.error.reason if whole.error else None
    if chunked != frames or (pieces.error.reason if pieces.error else None) != whole_reason:
        raise AssertionError(f"chunks of {step} decode to {len(chunked)} frames "
                             f"({pieces.error}), whole to {len(frames)} ({whole.error})")
    again = b"".join(_encode_frame(f) for f in frames)
    if stream[:len(again)] != again:
        raise AssertionError("decoded frames do not re-encode to their bytes")
    if whole.error is not None:
        raise whole.error
    return None


def frame_inputs(seed: int) -> st.SearchStrategy[list[bytes]]:
    payload = st.binary(max_size=64)
    frame = st.one_of(
        st.builds(encode_msg, st.integers(0, 0xFFFF), payload),
        st.builds(encode_ping, st.integers(0, 2**64 - 1)),
        st.builds(encode_pong, st.integers(0, 2**64 - 1)),
        st.builds(encode_req, payload),
        st.builds(encode_resp, st.integers(0, 255), payload))
    built = st.builds(lambda head, frames: bytes((head,)) + b"".join(frames),
                      st.integers(0, 255), st.lists(frame, max_size=4))
    samples = [bytes((head,)) + f for head, f in enumerate(get_corpus().frames)]
    return mixed(samples + draw_pool(built, POOL_SHAPED, seed))


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("tx", "a signed transaction (sharding/tx.py decode_tx), then check_tx_stateless",
           byte_inputs(lambda c: c.txs, SignedTx), check_tx),
    Target("block", "a block (sharding/block.py decode_block), its roots and inbound evidence",
           byte_inputs(lambda c: c.blocks, Block), check_block),
    Target("message", "a PBFT message (consensus/messages.py decode_message), its signature "
           "and certificates", byte_inputs(lambda c: c.messages, _MESSAGE_TYPE), check_message),
    Target("replica", "a PBFT message, signed by the validator it names, stepped into a "
           "real replica (consensus/replica.py)",
           byte_inputs(lambda c: c.messages, _MESSAGE_TYPE), check_replica),
    Target("ledger", "a block a byzantine primary proposes, executed by a fresh ledger "
           "(sharding/ledger.py Ledger.execute)",
           byte_inputs(lambda c: c.ledger_blocks + c.blocks, Block), check_ledger),
    Target("bundle", "a receipt bundle (sharding/crossshard.py decode_bundle), verified",
           byte_inputs(lambda c: c.bundles, ReceiptBundle), check_bundle),
    Target("frame", "p2p frames (node/p2p/framing.py FrameDecoder), whole and in chunks",
           frame_inputs, check_frames),
    Target("certificate", "a commit certificate (consensus/certificate.py), verified",
           byte_inputs(lambda c: c.certificates, CommitCertificate), check_certificate),
    Target("tx-batch", "a forwarded tx batch (node/wire.py decode_tx_batch), each tx checked",
           byte_inputs(lambda c: c.tx_batches, TxBatch), check_tx_batch),
    Target("request", "a p2p request (node/wire.py Request, as node/node.py decodes it)",
           byte_inputs(lambda c: c.requests, Request),
           _decoding(Request, REQUEST_BYTES_MAX)),
    Target("sync-response", "a block sync answer (node/wire.py SyncResponse), its blocks and "
           "certificates", byte_inputs(lambda c: c.sync_responses, SyncResponse),
           check_sync_response),
    Target("receipts-response", "a receipts pull answer (node/wire.py ReceiptsResponse), its "
           "bundles verified", byte_inputs(lambda c: c.receipts_responses, ReceiptsResponse),
           check_receipts_response),
    Target("status-response", "a receipt status answer (node/wire.py ReceiptStatusResponse)",
           byte_inputs(lambda c: c.status_responses, ReceiptStatusResponse),
           _decoding(ReceiptStatusResponse, STATUS_RESPONSE_BYTES_MAX)),
    Target("announcement", "a block announcement (node/service.py "
           "check_announcement)", byte_inputs(lambda c: c.announcements, BlockAnnouncement),
           check_announcement_target),
    Target("api-body", "a POST /v1/txs body (node/api.py _read_raw_txs: msgpack or JSON), "
           "each transaction as tx", api_body_inputs, check_api_body),
    Target("api", "the HTTP API of a running node (scripts/fuzz/api.py): schemathesis "
           "requests from its /v1/openapi.json, answers checked against it",
           lambda seed: _api().inputs(seed), lambda case: _api().check(case), batch=1,
           show=lambda case: _api().show(case), parse=lambda text: _api().parse(text),
           needs_node=True),
)}


def _api() -> Any:
    """scripts/fuzz/api.py, imported when the api target runs (it needs schemathesis)."""
    from scripts.fuzz import api

    return api

