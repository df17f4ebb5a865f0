"""A worker's whole task (``run_job``): check signatures, run its transactions over
a snapshot of their declared keys, stop at the first one that leaves its declaration.
Pure: the process pool calls it in another process."""

from __future__ import annotations

from sharding.executor import TxOutcome, process_tx
from sharding.parallel.jobs import Job, JobResult, TxResult
from sharding.programs import declared_access
from sharding.receipts import Receipt
from sharding.records import ShardParams
from sharding.state import Overlay, StateReader
from sharding.tx import InvalidTx, SignedTx, check_tx_stateless, verify_tx_signature


class Escaped(Exception):
    """A transaction touched a key outside its declaration (not a ShardnetError:
    no program may catch it)."""


class GuardedReader:
    """Reads of the current transaction, limited to its declared keys."""

    __slots__ = ("allowed", "base")

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.allowed: frozenset[bytes] = frozenset()

    def get(self, key: bytes) -> bytes | None:
        if key not in self.allowed:
            raise Escaped(key.hex())
        return self.base.get(key)


class SnapshotReader:
    __slots__ = ("values",)

    def __init__(self, values: dict[bytes, bytes | None]) -> None:
        self.values = values

    def get(self, key: bytes) -> bytes | None:
        if key not in self.values:
            raise Escaped(key.hex())
        return self.values[key]


def run_job(job: Job) -> JobResult:
    """A worker's whole task (pure: the pool calls it in another process)."""
    bad = [
        index
        for index, tx, verify in zip(job.indices, job.txs, job.verify, strict=True)
        if verify and not verify_tx_signature(tx)
    ]
    params = ShardParams(job.chain_id, job.shard, job.num_shards)
    batch = Overlay(SnapshotReader(dict(job.snapshot)))
    guard = GuardedReader(batch)
    known_bad = set(job.known_bad)
    results: list[TxResult] = []
    escaped = -1
    for index, tx, execute in zip(job.indices, job.txs, job.execute, strict=True):
        if not execute:
            continue
        reads, writes = declared_access(tx, params.num_shards)
        guard.allowed = reads
        view = Overlay(guard)
        try:
            result = run_tx(view, params, tx, index, index in known_bad)
        except Exception:  # Escaped, or anything the spec must raise itself
            escaped = index
            break
        if not writes.issuperset(view.writes):
            escaped = index
            break
        batch.writes.update(view.writes)
        results.append(result)
    return JobResult(bad, results, escaped)


def run_tx(view: Overlay, params: ShardParams, tx: SignedTx, index: int, bad: bool) -> TxResult:
    """``process_tx`` on a fresh overlay (signature already checked), as a result."""
    try:
        outcome, receipts = process_tx_known_signature(view, params, tx, bad)
    except InvalidTx as exc:
        return TxResult(index, exc.reason, exc.detail, None, [], [])
    return TxResult(index, "", "", outcome, receipts, list(view.writes.items()))


def process_tx_known_signature(
    view: Overlay, params: ShardParams, tx: SignedTx, bad: bool
) -> tuple[TxOutcome, list[Receipt]]:
    """``process_tx(verify_signature=True)`` when the signature's verdict is known."""
    if bad:
        check_tx_stateless(
            tx, params.chain_id, params.shard, params.num_shards, verify_signatures=False
        )
        raise InvalidTx("signature does not verify", reason="bad_signature")
    return process_tx(view, params, tx, verify_signature=False)

