"""Admission verifies a batch's signatures on the node's verify threads (issue 16,
deliverable 3): the verdicts are ``Ledger.admit``'s, in the batch's order, whichever
thread computed them; ``[executor] verify_threads`` sizes the pool (0: the cores)."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest
import structlog

import node.verify_pool as verify_pool_module
from consensus.kernel.codec import encode
from consensus.kernel.crypto import SignatureCheck, verify_signatures
from consensus.kernel.errors import ShardnetError
from node.admission import Admission, admit_batch
from node.config import parse_config
from node.drops import DropLog
from node.executor_pool import available_cores
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.node import Node
from node.p2p.config import peer_id_from_public_key
from node.p2p.memory import MemoryNetwork
from node.parts import (
    InlineExecutor,
    NodeParts,
    SystemClock,
    sequential_executor,
    thread_offload,
)
from node.store.memory import MemoryStore
from node.verify_pool import VERIFY_PARALLEL_MIN, VerifyPool, resolve_verify_threads
from sharding.accounts import derive_account, first_shard_accounts
from sharding.genesis import load_genesis, make_genesis_dict
from sharding.ledger import Ledger
from sharding.tx import SignedTx, Transfer, check_tx_payable, tx_hash
from tests.support.ledger import get_genesis, get_keys, make_tx

KEYS = get_keys(0)
OTHER_SHARD = get_keys(1)
STRANGER = first_shard_accounts("never-funded", 0, 2, 1)[0]
IDENTITY = (1).to_bytes(32, "little")  # a small-order key


def forge(tx: SignedTx) -> SignedTx:
    signature = bytearray(tx.signature)
    signature[0] ^= 1
    return msgspec.structs.replace(tx, signature=bytes(signature))


def hostile_batch() -> list[bytes]:
    """Every admission verdict, repeated so the batch goes to the threads."""
    raws: list[bytes] = []
    for round_ in range(6):
        good = [make_tx(KEYS[i], round_, Transfer(KEYS[0].public_key, 0, 1))
                for i in range(1, 9)]
        raws += [encode(tx) for tx in good]
        raws += [
            encode(forge(good[0])),  # bad_signature
            encode(make_tx(KEYS[1], round_, Transfer(KEYS[0].public_key, 0, 1),
                           chain_id="other")),  # wrong_chain
            encode(make_tx(OTHER_SHARD[0], 0, Transfer(KEYS[0].public_key, 0, 1))),
            encode(make_tx(KEYS[2], round_, Transfer(KEYS[0].public_key, 0, 0))),  # zero
            encode(make_tx(KEYS[3], round_, Transfer(IDENTITY, 0, 1))),  # small_order_key
            encode(forge(make_tx(KEYS[3], round_, Transfer(IDENTITY, 0, 1)))),
            encode(make_tx(STRANGER, round_, Transfer(KEYS[0].public_key, 0, 1))),  # unfunded
            encode(make_tx(KEYS[4], round_, Transfer(KEYS[0].public_key, 0, 10**15))),
            b"\x93not a transaction",  # malformed
            encode(good[1]),  # a copy within the batch
        ]
    return raws


def reference(ledger: Ledger, raws: list[bytes]) -> list[tuple[str, bytes | None]]:
    """What admission answered before the verify threads: ``Ledger.admit`` one by one."""
    out: list[tuple[str, bytes | None]] = []
    for raw in raws:
        try:
            tx = ledger.admit(raw)
        except ShardnetError as exc:
            out.append((exc.reason, None))
            continue
        try:
            check_tx_payable(ledger.state, tx)
        except ShardnetError as exc:
            out.append((exc.reason, tx_hash(tx)))
            continue
        out.append(("", tx_hash(tx)))
    return out


def verdicts(checked: list[tuple[SignedTx | None, bytes | None, ShardnetError | None]]
             ) -> list[tuple[str, bytes | None]]:
    return [(error.reason if error else "", digest) for _, digest, error in checked]


@pytest.fixture
def verify_threads_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """(thread name, signatures) of every chunk the verify pool checks."""
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def recording(checks: Sequence[SignatureCheck]) -> list[bool]:
        with lock:
            seen.append((threading.current_thread().name, len(checks)))
        return verify_signatures(checks)

    monkeypatch.setattr(verify_pool_module, "verify_signatures", recording)
    yield seen


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_threaded_admission_gives_ledger_admits_verdicts_in_order(threads: int) -> None:
    raws = hostile_batch()
    expected = reference(Ledger(get_genesis(), 0), raws)
    reasons = {reason for reason, _ in expected}
    assert {"", "bad_signature", "wrong_chain", "wrong_shard", "zero_amount", "small_order_key",
            "unfunded_sender", "insufficient_balance", "malformed"} <= reasons
    pool = VerifyPool(threads)
    try:
        assert verdicts(admit_batch(Ledger(get_genesis(), 0), raws, pool.verify_many)) == expected
    finally:
        pool.close()


def test_forged_signature_in_a_batch_is_refused_and_never_cached(
        verify_threads_seen: list[tuple[str, int]]) -> None:
    """The forgery gets bad_signature at its own place in the batch; the honest ones are
    remembered as verified (a block carrying them is not verified again), it is not."""
    ledger = Ledger(get_genesis(), 0)
    honest = [make_tx(KEYS[1 + i % 8], i // 8, Transfer(KEYS[0].public_key, 0, 1))
              for i in range(2 * VERIFY_PARALLEL_MIN)]
    batch = list(honest)
    batch[37] = forge(honest[37])
    pool = VerifyPool(2)
    try:
        checked = admit_batch(ledger, [encode(tx) for tx in batch], pool.verify_many)
    finally:
        pool.close()
    assert [k for k, (_, _, error) in enumerate(checked) if error] == [37]
    assert checked[37][2] is not None and checked[37][2].reason == "bad_signature"
    assert batch[37] not in ledger.verified
    assert all(tx in ledger.verified for k, tx in enumerate(batch) if k != 37)
    assert sorted(n for _, n in verify_threads_seen) == [VERIFY_PARALLEL_MIN] * 2
    assert all(name.startswith("verify") for name, _ in verify_threads_seen)


def test_admission_submits_a_batch_through_the_verify_threads(
        verify_threads_seen: list[tuple[str, int]]) -> None:
    """The call site: ``Admission.submit`` hands the batch's signatures to its verify
    pool (``verify_threads`` threads), not to the admission thread."""
    ledger = Ledger(get_genesis(), 0)
    mempool = Mempool(txs_max=1_000, bytes_max=1 << 22, nonce_window=100, sender_txs_max=100,
                      committed_nonce=ledger.committed_nonce)
    metrics, log, clock = NodeMetrics(), structlog.get_logger(), SystemClock()
    txs = [make_tx(KEYS[1 + i % 8], i // 8, Transfer(KEYS[0].public_key, 0, 1))
           for i in range(3 * VERIFY_PARALLEL_MIN)]
    txs[5] = forge(txs[5])
    with ThreadPoolExecutor(1, thread_name_prefix="admission") as pool:
        admission = Admission(
            ledger=ledger, mempool=mempool, metrics=metrics, log=log, pool=pool, clock=clock,
            drop=DropLog(log, metrics, clock), forward=lambda channel, data: None,
            on_added=lambda: None, peer_batch_bytes_max=1 << 22, frame_bytes_max=1 << 22,
            verify_threads=3)
        try:
            results = asyncio.run(admission.submit([encode(tx) for tx in txs]))
        finally:
            admission.stop()
    assert admission.verify_pool.threads == 3
    assert [r.error for r in results] == [None] * 5 + ["bad_signature"] + [None] * (len(txs) - 6)
    names = {name.rsplit("_", 1)[0] for name, _ in verify_threads_seen}
    assert names == {"verify"} and sum(n for _, n in verify_threads_seen) == len(txs)
    assert len(verify_threads_seen) == 3


def test_a_single_transaction_is_verified_on_the_admission_thread(
        verify_threads_seen: list[tuple[str, int]]) -> None:
    pool = VerifyPool(4)
    try:
        tx = make_tx(KEYS[1], 0, Transfer(KEYS[0].public_key, 0, 1))
        checked = admit_batch(Ledger(get_genesis(), 0), [encode(tx)], pool.verify_many)
    finally:
        pool.close()
    assert checked[0][2] is None
    assert verify_threads_seen == [(threading.current_thread().name, 1)]


def test_verify_threads_default_is_the_cores_the_node_is_given() -> None:
    config = parse_config("[node]\nshard = 0\nindex = 0\n")
    assert config.executor.verify_threads == 0
    assert resolve_verify_threads(0) == available_cores() >= 1
    assert resolve_verify_threads(3) == 3
    configured = parse_config("[node]\nshard = 0\nindex = 0\n[executor]\nverify_threads = 2\n")
    assert configured.executor.verify_threads == 2
    with pytest.raises(ShardnetError):
        parse_config("[node]\nshard = 0\nindex = 0\n[executor]\nverify_threads = -1\n")


def make_admission(pool: Executor, ledger: Ledger, verify_threads: int) -> Admission:
    metrics, log, clock = NodeMetrics(), structlog.get_logger(), SystemClock()
    mempool = Mempool(txs_max=1_000, bytes_max=1 << 22, nonce_window=100, sender_txs_max=100,
                      committed_nonce=ledger.committed_nonce)
    return Admission(ledger=ledger, mempool=mempool, metrics=metrics, log=log, pool=pool,
                     clock=clock, drop=DropLog(log, metrics, clock),
                     forward=lambda channel, data: None, on_added=lambda: None,
                     peer_batch_bytes_max=1 << 22, frame_bytes_max=1 << 22,
                     verify_threads=verify_threads)


def test_a_peers_batch_with_a_forgery_goes_through_the_verify_threads(
        verify_threads_seen: list[tuple[str, int]]) -> None:
    """The other call site: a shard peer's forwarded batch. The forgery is dropped and
    counted as bad_signature; the rest enters the mempool."""
    ledger = Ledger(get_genesis(), 0)
    txs = [make_tx(KEYS[1 + i % 8], i // 8, Transfer(KEYS[0].public_key, 0, 1))
           for i in range(2 * VERIFY_PARALLEL_MIN)]
    txs[9] = forge(txs[9])
    with ThreadPoolExecutor(1) as pool:
        admission = make_admission(pool, ledger, verify_threads=2)
        try:
            asyncio.run(admission._admit_forwarded([encode(tx) for tx in txs]))
        finally:
            admission.stop()
    assert len(admission.mempool) == len(txs) - 1
    assert 'shardnet_peer_txs_total{result="accepted"} 63.0' in admission.metrics.render().decode()
    assert 'reason="bad_signature"' in admission.metrics.render().decode()
    assert {name.rsplit("_", 1)[0] for name, _ in verify_threads_seen} == {"verify"}


def test_inline_offload_keeps_verification_on_the_loops_thread(
        verify_threads_seen: list[tuple[str, int]]) -> None:
    """The simulator's parts run every offloaded call inline: the signatures too."""
    ledger = Ledger(get_genesis(), 0)
    admission = make_admission(InlineExecutor(), ledger, verify_threads=4)
    txs = [make_tx(KEYS[1 + i % 8], i // 8, Transfer(KEYS[0].public_key, 0, 1))
           for i in range(2 * VERIFY_PARALLEL_MIN)]
    try:
        results = asyncio.run(admission.submit([encode(tx) for tx in txs]))
    finally:
        admission.stop()
    assert admission.verify_pool.threads == 1
    assert all(r.accepted for r in results)
    assert verify_threads_seen == [(threading.current_thread().name, len(txs))]


def test_the_node_sizes_the_verify_pool_from_its_config(tmp_path: Path) -> None:
    """``[executor] verify_threads`` reaches the running node's admission."""
    genesis = load_genesis(make_genesis_dict(num_shards=1, validators_per_shard=4, accounts=4))
    keys = [derive_account("validator-0", i) for i in range(4)]
    peers = [peer_id_from_public_key(key.public_key) for key in keys]
    config = parse_config("[node]\nshard = 0\nindex = 0\n[executor]\nverify_threads = 3\n",
                          tmp_path)
    parts = NodeParts(p2p=MemoryNetwork().join(peers[0], peers), store=MemoryStore(),
                      clock=SystemClock(), executor=sequential_executor,
                      offload=thread_offload, rng=random.Random(0), serve_http=False)
    node = Node(config, genesis, keys[0], parts)

    async def threads_of_running_node() -> int:
        await node.start()
        try:
            return node.service.admission.verify_pool.threads
        finally:
            await node.stop()

    assert asyncio.run(threads_of_running_node()) == 3
