"""The parallel executor gives the spec's results, byte for byte (issue 7; STYLE.md:
"the sequential executor IS the spec").

Random blocks mix local and cross-shard transfers, local and remote swaps,
liquidity calls, farm calls (stake, unstake, harvest: every staker shares the farm's
key), inbound receipts (credits, swaps, refunds), failing calls and
invalid transactions, with a random number of hot senders. Each block is built
and applied by the spec and by the parallel executor with 1, 2 and 4 workers
(in-process queues, then real worker processes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import sharding.parallel.plan as parallel_plan
import sharding.parallel.worker as parallel_worker
from consensus.kernel.codec import encode
from node.executor_pool import ProcessRunner, available_cores, make_executor, resolve_workers
from sharding.accounts import first_shard_accounts, shard_of
from sharding.block import GENESIS_PREV_HASH, Block
from sharding.executor import (
    BlockResult,
    InvalidBlock,
    Rejected,
    apply_block,
    build_block,
    compute_bad_signatures,
)
from sharding.genesis import genesis_state
from sharding.parallel import InlineRunner, Job, JobRunner, ParallelExecutor, run_job
from sharding.programs import CallContext, declared_access, process_call
from sharding.receipts import CREDIT, SWAP, Receipt
from sharding.records import account_key, get_shard_params
from sharding.state import Overlay, State
from sharding.tx import (
    AddLiquidity,
    Call,
    Harvest,
    RemoveLiquidity,
    SignedTx,
    Stake,
    Swap,
    Transfer,
    Unstake,
)
from tests.support.ledger import (
    BALANCE,
    get_farm_genesis,
    get_genesis,
    get_keys,
    get_pool_on,
    make_tx,
)

KEYS = get_keys(0)
REMOTE = get_keys(1)
# Keys the genesis does not fund: their transactions are invalid (unfunded_sender) until
# a transfer earlier in the block creates their account.
FRESH = tuple(first_shard_accounts("unfunded", 0, 2, 2))
POOL = get_pool_on(0)
REMOTE_POOL = get_pool_on(1)
KINDS = ("local", "local", "cross", "swap", "swap_remote", "add", "remove", "big", "invalid",
         "stake", "unstake", "harvest")
# Blocks of the differential tests run at this height on ``farm_state()``, whose farm
# was staked at height 1: harvests have rewards to pay.
HEIGHT = 5
INVALID = ("nonce_ahead", "nonce_behind", "bad_signature", "wrong_chain", "zero", "wrong_shard",
           "unfunded")


@dataclass(frozen=True)
class Case:
    txs: list[SignedTx]
    inbound: list[Receipt]


def make_call(kind: str, data: st.DataObject, sender: int) -> Call:
    amount = data.draw(st.integers(1, 5_000), label="amount")
    if kind == "local":
        to = (*KEYS, *FRESH)[data.draw(st.integers(0, len(KEYS) + len(FRESH) - 1),
                                       label="to")].public_key
        return Transfer(to, data.draw(st.integers(0, 1)), amount)
    if kind == "cross":
        return Transfer(REMOTE[data.draw(st.integers(0, len(REMOTE) - 1))].public_key, 0, amount)
    if kind == "swap":
        return Swap(POOL.address, data.draw(st.sampled_from((POOL.asset_a, POOL.asset_b))),
                    amount, data.draw(st.sampled_from((0, 0, 10**9))))
    if kind == "swap_remote":
        return Swap(REMOTE_POOL.address, REMOTE_POOL.asset_a, amount, 0)
    if kind == "add":
        return AddLiquidity(POOL.address, amount, amount, 0)
    if kind == "remove":
        return RemoveLiquidity(POOL.address, data.draw(st.integers(1, 1_000)), 0, 0)
    if kind == "stake":
        return Stake(POOL.address, amount)
    if kind == "unstake":
        return Unstake(POOL.address, amount)
    if kind == "harvest":
        return Harvest(POOL.address)
    # More than the sender holds: invalid (insufficient_balance).
    return Transfer(KEYS[(sender + 1) % len(KEYS)].public_key, 0, BALANCE * 2)


def make_invalid(how: str, sender: int, nonce: int, data: st.DataObject) -> SignedTx:
    key = KEYS[sender]
    call = make_call("local", data, sender)
    if how == "nonce_ahead":
        return make_tx(key, nonce + 1, call)
    if how == "nonce_behind":
        return make_tx(key, max(0, nonce - 1) if nonce else nonce + 5, call)
    if how == "bad_signature":
        tx = make_tx(key, nonce, call)
        return msgspec.structs.replace(tx, signature=bytes(64))
    if how == "wrong_chain":
        return make_tx(key, nonce, call, chain_id="other-chain")
    if how == "zero":
        return make_tx(key, nonce, Transfer(KEYS[0].public_key, 0, 0))
    if how == "unfunded":  # valid once a transfer earlier in the block funded the key
        return make_tx(FRESH[sender % len(FRESH)], 0, call)
    return make_tx(REMOTE[0], 0, call)  # the sender lives on shard 1


@st.composite
def cases(draw: st.DrawFn, txs_max: int = 40) -> Case:
    data = draw(st.data())
    hot = draw(st.integers(1, len(KEYS)), label="hot senders")
    nonces = [0] * len(KEYS)
    txs: list[SignedTx] = []
    for _ in range(draw(st.integers(0, txs_max), label="txs")):
        sender = draw(st.integers(0, hot - 1))
        kind = draw(st.sampled_from(KINDS))
        if kind == "invalid":
            txs.append(make_invalid(draw(st.sampled_from(INVALID)), sender, nonces[sender], data))
            continue
        txs.append(make_tx(KEYS[sender], nonces[sender], make_call(kind, data, sender)))
        nonces[sender] += 1
    inbound: list[Receipt] = []
    for seq in range(1, draw(st.integers(0, 6), label="inbound") + 1):
        origin = bytes([seq]) * 32
        remote = REMOTE[draw(st.integers(0, len(REMOTE) - 1))].public_key
        if draw(st.booleans()):
            recipient = KEYS[draw(st.integers(0, hot - 1))].public_key
            inbound.append(Receipt(1, 0, seq, CREDIT, origin, remote, recipient, 0,
                                   draw(st.integers(1, 10_000))))
        else:
            inbound.append(Receipt(1, 0, seq, SWAP, origin, remote, remote, POOL.asset_a,
                                   draw(st.integers(1, 10_000)), POOL.address,
                                   draw(st.sampled_from((0, 10**12)))))
    return Case(txs, inbound)


def fresh_state() -> State:
    return genesis_state(get_genesis(), 0)


@lru_cache(maxsize=1)
def _farm_state_items() -> tuple[tuple[bytes, bytes], ...]:
    state = genesis_state(get_farm_genesis(), 0)
    view = Overlay(state)
    params = get_shard_params(state, 1)
    for key in KEYS:  # LP shares for every sender, some of them staked (nonces untouched)
        for call in (AddLiquidity(POOL.address, 20_000, 20_000, 0), Stake(POOL.address, 10_000)):
            process_call(view, CallContext(params, bytes(32), key.public_key), call)
    state.apply_writes(view.writes)
    return tuple(state.items())


def farm_state() -> State:
    """``fresh_state()`` plus a farm on the pool in which every sender has a stake."""
    return State.from_items(_farm_state_items())


def propose_with(builder: object, state: State, case: Case,
                 txs_max: int = 10_000) -> tuple[Block, BlockResult, list[Rejected]]:
    return builder(  # type: ignore[operator, no-any-return]
        state, case.txs, case.inbound, height=HEIGHT, view=0, prev_hash=GENESIS_PREV_HASH,
        time_ms=1000, proposer=0, txs_max=txs_max,
    )


def assert_same_result(spec: BlockResult, other: BlockResult) -> None:
    assert other == spec
    assert list(other.writes.items()) == list(spec.writes.items())
    assert [encode(r) for r in other.receipts] == [encode(r) for r in spec.receipts]
    assert [encode(o) for o in other.outcomes] == [encode(o) for o in spec.outcomes]
    assert other.prepared.root == spec.prepared.root


def assert_same_apply(state: State, block: Block, executor: ParallelExecutor) -> None:
    try:
        spec = apply_block(state, block)
    except InvalidBlock as exc:
        with pytest.raises(InvalidBlock) as caught:
            executor.apply_block(state, block)
        assert (caught.value.reason, caught.value.tx_index, caught.value.tx_reason) == (
            exc.reason, exc.tx_index, exc.tx_reason)
        return
    assert_same_result(spec, executor.apply_block(state, block))


def check_case(case: Case, executor: ParallelExecutor, inject: int | None = None) -> None:
    state = farm_state()
    block, spec, rejected = propose_with(build_block, state, case)
    other_block, other, other_rejected = propose_with(executor.build_block, state, case)
    assert other_block == block
    event(f"rejected: {min(len(rejected), 3)}+, receipts out: {bool(spec.receipts)}")
    assert_same_result(spec, other)
    assert [(r.tx, r.reason) for r in other_rejected] == [(r.tx, r.reason) for r in rejected]
    assert_same_apply(state, block, executor)
    assert_same_result(apply_block(state, block, verify_signatures=False),
                       executor.apply_block(state, block, verify_signatures=False))
    assert executor.compute_bad_signatures(case.txs) == compute_bad_signatures(case.txs)
    if inject is not None and rejected:
        # A replica must reject a block with an invalid transaction the same way.
        txs = list(block.txs)
        txs.insert(inject % (len(txs) + 1), rejected[inject % len(rejected)].tx)
        assert_same_apply(state, msgspec.structs.replace(block, txs=txs), executor)
    # Limits: the proposer stops at txs_max valid transactions, like the spec.
    if len(block.txs) > 2:
        limit = len(block.txs) // 2
        block_l, spec_l, rejected_l = propose_with(build_block, state, case, limit)
        other_l = propose_with(executor.build_block, state, case, limit)
        assert other_l[0] == block_l
        assert_same_result(spec_l, other_l[1])
        assert [r.tx for r in other_l[2]] == [r.tx for r in rejected_l]


def inline(workers: int, *, overlapped: bool = False) -> ParallelExecutor:
    """Partitioned execution unless ``overlapped``: the spec here while the
    workers check signatures (the default with up to two workers)."""
    return ParallelExecutor(InlineRunner(workers), parallel_txs_min=0, parallel_unsigned=True,
                            overlap_workers_max=workers if overlapped else 0)


# ---------------------------------------------------------------------------
# In-process workers: many examples


@pytest.mark.parametrize("workers", [1, 2, 4])
@settings(max_examples=60)
@given(case=cases(), inject=st.integers(0, 1_000))
def test_parallel_equals_sequential_inline(workers: int, case: Case, inject: int) -> None:
    check_case(case, inline(workers), inject)


@pytest.mark.parametrize("workers", [1, 2])
@settings(max_examples=40)
@given(case=cases(), inject=st.integers(0, 1_000))
def test_overlapped_equals_sequential_inline(workers: int, case: Case, inject: int) -> None:
    check_case(case, inline(workers, overlapped=True), inject)


def test_overlapped_runs_by_default_with_two_workers_and_reports_the_plan() -> None:
    hot = KEYS[0]
    txs = [make_tx(hot, n, Transfer(KEYS[1].public_key, 0, 1)) for n in range(10)]
    txs += [make_tx(KEYS[2 + i], 0, Swap(REMOTE_POOL.address, 0, 5, 0)) for i in range(5)]
    state = fresh_state()
    block, spec, _ = propose_with(build_block, state, Case(txs, []))
    executor = ParallelExecutor(InlineRunner(2), parallel_txs_min=0)
    assert_same_result(spec, executor.apply_block(state, block))
    stats = executor.last_stats
    assert stats is not None
    assert (stats.mode, stats.workers, stats.components) == ("overlapped", 2, 6)
    wide = ParallelExecutor(InlineRunner(4), parallel_txs_min=0)
    assert_same_result(spec, wide.apply_block(state, block))
    assert wide.last_stats is not None and wide.last_stats.mode == "parallel"


@pytest.mark.parametrize("overlapped", [False, True])
def test_bad_signature_wins_over_a_failing_execution(overlapped: bool) -> None:
    """A block whose transaction 3 is invalid and whose transaction 5 is forged is
    rejected for the forgery, as the spec rejects it (signatures first)."""
    state = fresh_state()
    txs = [make_tx(KEYS[0], n, Transfer(KEYS[1].public_key, 0, 1)) for n in range(8)]
    block, _, _ = propose_with(build_block, state, Case(txs, []))
    replayed = block.txs[0]  # nonce 0 again at index 3: invalid (wrong nonce)
    forged = msgspec.structs.replace(block.txs[5], signature=bytes(64))
    broken = msgspec.structs.replace(
        block, txs=[*block.txs[:3], replayed, *block.txs[3:5], forged, *block.txs[6:]])
    with pytest.raises(InvalidBlock) as spec_verdict:
        apply_block(state, broken)
    with pytest.raises(InvalidBlock) as verdict:
        inline(2, overlapped=overlapped).apply_block(state, broken)
    assert (verdict.value.tx_index, verdict.value.tx_reason) == (6, "bad_signature")
    assert (spec_verdict.value.tx_index, spec_verdict.value.tx_reason) == (6, "bad_signature")


@contextmanager
def planned_keys_replaced_by(
    fake: Callable[[SignedTx, int, int], frozenset[bytes]],
) -> Iterator[None]:
    """The planner (which builds the components and the jobs' key sets) sees ``fake``."""
    original = parallel_plan.planned_keys
    parallel_plan.planned_keys = fake  # type: ignore[assignment]
    try:
        yield
    finally:
        parallel_plan.planned_keys = original  # type: ignore[assignment]


def sender_only(tx: SignedTx, shard: int, num_shards: int) -> frozenset[bytes]:
    return frozenset({account_key(tx.body.sender)})


@settings(max_examples=30)
@given(case=cases())
def test_undeclared_access_is_caught_and_reexecuted(case: Case) -> None:
    """A program whose declaration misses keys (here: every key but the sender's)
    still gives the spec's result: the job stops at the first transaction that
    leaves its job's keys and the rest re-executes in order."""
    with planned_keys_replaced_by(sender_only):
        executor = inline(2)
        check_case(case, executor)


def test_escape_is_counted_as_reexecution() -> None:
    a, b = KEYS[0], KEYS[1]
    txs = [make_tx(a, 0, Transfer(b.public_key, 0, 5)), make_tx(b, 0, Transfer(a.public_key, 0, 7))]
    with planned_keys_replaced_by(sender_only):
        executor = inline(2)
        state = fresh_state()
        block, spec, _ = propose_with(build_block, state, Case(txs, []))
        assert_same_result(spec, executor.apply_block(state, block))
    stats = executor.last_stats
    assert stats is not None and stats.mode == "parallel" and stats.reexecutions == 2


def test_a_write_outside_the_job_keys_escapes() -> None:
    """A transaction that writes (without reading) a key outside its job's snapshot
    stops its job there: the job's key set is the guard, for writes as for reads."""
    a, b = KEYS[0], KEYS[1]
    txs = [make_tx(a, 0, Transfer(b.public_key, 0, 5)), make_tx(a, 1, Transfer(b.public_key, 0, 6))]
    state = fresh_state()
    block, _, _ = propose_with(build_block, state, Case(txs, []))
    keys = [account_key(a.public_key), account_key(b.public_key)]
    body_view = state.overlay()
    job = Job("", 0, 2, [0, 1], list(block.txs), [False, False], [True, True], [],
              [(key, body_view.get(key)) for key in keys])
    params = get_shard_params(state)
    job = msgspec.structs.replace(job, chain_id=params.chain_id)
    assert run_job(job).escaped == -1 and len(run_job(job).results) == 2
    # Without b's key in the snapshot, the credit of b (a read) escapes at once.
    assert run_job(msgspec.structs.replace(job, snapshot=job.snapshot[:1])).escaped == 0

    class BlindWriter(parallel_worker.SnapshotReader):
        """Reads of b succeed (as if b's value were known) but b is not in the set."""

        def get(self, key: bytes) -> bytes | None:
            return body_view.get(key) if key == keys[1] else super().get(key)

    original = parallel_worker.SnapshotReader
    parallel_worker.SnapshotReader = BlindWriter  # type: ignore[misc]
    try:
        result = run_job(msgspec.structs.replace(job, snapshot=job.snapshot[:1]))
    finally:
        parallel_worker.SnapshotReader = original  # type: ignore[misc]
    assert result.escaped == 0 and result.results == []


@settings(max_examples=200)
@given(case=cases(txs_max=30))
def test_planned_keys_are_the_declared_keys_of_local_senders(case: Case) -> None:
    """The planner's keys (one memoised shard lookup) equal ``declared_access``
    for every transaction whose sender lives on the shard."""
    for tx in case.txs:
        if shard_of(tx.body.sender, 2) != 0:
            continue
        access = declared_access(tx, 2)
        assert access is not None  # these blocks hold no call that declares None
        reads, writes = access
        assert parallel_plan.planned_keys(tx, 0, 2) == reads | writes
        assert parallel_plan.planned_keys(tx, 0, 2) == reads | writes  # memoised


def test_the_local_address_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel_plan, "LOCAL_CACHE_MAX", 4)
    parallel_plan._local.clear()
    addresses = [bytes([i]) * 32 for i in range(10)]
    for address in addresses:
        assert parallel_plan.is_local(address, 0, 2) == (shard_of(address, 2) == 0)
    assert len(parallel_plan._local) <= 4


def test_telemetry_reports_components_and_hot_keys() -> None:
    hot = KEYS[0]
    txs = [make_tx(hot, n, Transfer(KEYS[1].public_key, 0, 1)) for n in range(10)]
    txs += [make_tx(KEYS[2 + i], 0, Swap(REMOTE_POOL.address, 0, 5, 0)) for i in range(5)]
    executor = inline(2)
    state = fresh_state()
    block, spec, _ = propose_with(build_block, state, Case(txs, []))
    assert_same_result(spec, executor.apply_block(state, block))
    stats = executor.last_stats
    assert stats is not None
    assert (stats.mode, stats.components, stats.workers) == ("parallel", 6, 2)
    assert stats.largest_component_share == pytest.approx(10 / 15)
    assert stats.hot_keys[0][1] == 10
    assert stats.hot_keys[0][0] in (account_key(hot.public_key).hex(),
                                    account_key(KEYS[1].public_key).hex())
    fields = stats.as_log_fields()
    assert fields["components"] == 6 and fields["reexecutions"] == 0


def test_unsigned_blocks_run_the_spec_by_default() -> None:
    executor = ParallelExecutor(InlineRunner(2), parallel_txs_min=0)
    state = fresh_state()
    txs = [make_tx(KEYS[i], 0, Transfer(KEYS[0].public_key, 0, 1)) for i in range(1, 6)]
    block, spec, _ = propose_with(build_block, state, Case(txs, []))
    assert_same_result(spec, executor.apply_block(state, block, verify_signatures=False))
    assert executor.last_stats is not None
    assert (executor.last_stats.mode, executor.last_stats.fallback) == ("sequential",
                                                                        "no_signatures")


def test_small_blocks_run_the_spec() -> None:
    executor = ParallelExecutor(InlineRunner(2))  # default threshold
    state = fresh_state()
    txs = [make_tx(KEYS[0], n, Transfer(KEYS[1].public_key, 0, 1)) for n in range(3)]
    block, spec, _ = propose_with(executor.build_block, state, Case(txs, []))
    assert executor.last_stats is not None and executor.last_stats.mode == "sequential"
    assert_same_result(spec, executor.apply_block(state, block))
    assert executor.last_stats.mode == "sequential"


def test_bad_signature_wins_over_a_later_inbound_gap() -> None:
    """The spec checks signatures before the inbound receipts; so must we."""
    state = fresh_state()
    txs = [make_tx(KEYS[0], n, Transfer(KEYS[1].public_key, 0, 1)) for n in range(4)]
    block, _, _ = propose_with(build_block, state, Case(txs, []))
    gap = Receipt(1, 0, 2, CREDIT, bytes(32), REMOTE[0].public_key, KEYS[0].public_key, 0, 1)
    bad = msgspec.structs.replace(block.txs[2], signature=bytes(64))
    broken = msgspec.structs.replace(block, txs=[*block.txs[:2], bad, *block.txs[3:]],
                                     inbound=[gap])
    with pytest.raises(InvalidBlock) as caught:
        inline(2).apply_block(state, broken)
    assert (caught.value.tx_index, caught.value.tx_reason) == (2, "bad_signature")
    with pytest.raises(InvalidBlock) as gap_only:
        inline(2).apply_block(state, msgspec.structs.replace(block, inbound=[gap]))
    assert gap_only.value.reason == "receipt_gap"


# ---------------------------------------------------------------------------
# Real worker processes: one pool per worker count for the whole module


@pytest.fixture(scope="module")
def pools() -> Iterator[dict[int, ProcessRunner]]:
    runners = {workers: ProcessRunner(workers) for workers in (2, 4)}
    try:
        yield runners
    finally:
        for runner in runners.values():
            runner.close()


@pytest.mark.parametrize(("workers", "overlap_workers_max"), [(2, 0), (2, 2), (4, 2)])
def test_parallel_equals_sequential_in_worker_processes(
    workers: int, overlap_workers_max: int, pools: dict[int, ProcessRunner]
) -> None:
    runner: JobRunner = pools[workers]
    executor = ParallelExecutor(runner, parallel_txs_min=0, parallel_unsigned=True,
                                overlap_workers_max=overlap_workers_max)

    @settings(max_examples=15)
    @given(case=cases(txs_max=60), inject=st.integers(0, 1_000))
    def check(case: Case, inject: int) -> None:
        check_case(case, executor, inject)

    check()


@pytest.mark.parametrize(("overlap_workers_max", "mode"), [(0, "parallel"), (2, "overlapped")])
def test_a_killed_worker_falls_back_to_the_spec_and_is_replaced(
    overlap_workers_max: int, mode: str, pools: dict[int, ProcessRunner],
) -> None:
    runner = pools[2]
    executor = ParallelExecutor(runner, parallel_txs_min=0,
                                overlap_workers_max=overlap_workers_max)
    state = fresh_state()
    txs = [make_tx(KEYS[i % 4], i // 4, Transfer(KEYS[5].public_key, 0, 1)) for i in range(12)]
    block, spec, _ = propose_with(build_block, state, Case(txs, []))
    victim = runner.pids[0]  # the worker that gets the first signature chunk
    os.kill(victim, 9)
    assert_same_result(spec, executor.apply_block(state, block))
    assert executor.last_stats is not None and executor.last_stats.fallback == "RunnerFailed"
    assert victim not in runner.pids
    assert_same_result(spec, executor.apply_block(state, block))
    assert executor.last_stats.mode == mode


def test_worker_count_defaults_to_available_cores() -> None:
    cores = available_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert resolve_workers(0) == cores and resolve_workers(3) == 3
    executor, pool = make_executor(1)
    assert pool is None and executor.workers == 0


def test_ledger_runs_blocks_through_an_injected_executor() -> None:
    from sharding.ledger import Ledger
    from sharding.parallel import ExecutionStats

    seen: list[ExecutionStats] = []
    executors = [ParallelExecutor(InlineRunner(2), parallel_txs_min=0, on_stats=seen.append)
                 for _ in range(2)]
    primary, replica = (Ledger(get_genesis(), 0, executor=e) for e in executors)
    txs = [make_tx(KEYS[i], 0, Transfer(KEYS[0].public_key, 0, 1)) for i in range(1, 6)]
    proposal = primary.propose(txs, [], height=1, view=0, time_ms=1, proposer=0, txs_max=100)
    assert len(proposal.block.txs) == 5
    assert replica.execute(proposal.payload, proposal.block_hash, 1, 0) == ""
    for ledger in (primary, replica):
        committed = ledger.commit(proposal.payload, proposal.block_hash, 1)
        assert committed.result.state_root == proposal.block.header.state_root
    assert [(s.purpose, s.height, s.txs) for s in seen] == [("propose", 1, 5), ("apply", 1, 5)]
    # A replica that missed the pre-prepare (sync replay) executes at commit.
    late = Ledger(get_genesis(), 0, executor=executors[1])
    late.commit(proposal.payload, proposal.block_hash, 1)
    assert seen[-1].purpose == "apply" and seen[-1].mode == "overlapped"


def test_node_exports_block_executed_and_metrics() -> None:
    from types import SimpleNamespace

    import structlog
    from structlog.testing import capture_logs

    from node.main import Node
    from node.metrics import NodeMetrics
    from sharding.parallel import ExecutionStats

    node = SimpleNamespace(metrics=NodeMetrics(), log=structlog.get_logger())
    stats = ExecutionStats("apply", 3, 100, "parallel", 2, 7, 0.5, 4, (("61ab", 9),))
    with capture_logs() as logs:
        Node._on_executed(node, stats)  # type: ignore[arg-type]
    assert logs[0]["event"] == "block.executed" and logs[0]["height"] == 3
    assert logs[0]["components"] == 7 and logs[0]["hot_keys"] == [["61ab", 9]]
    text = node.metrics.render().decode()
    for line in ("shardnet_executor_workers 2.0", "shardnet_executor_components 7.0",
                 "shardnet_executor_largest_component_ratio 0.5",
                 "shardnet_executor_reexecutions_total 4.0"):
        assert line in text


def test_adaptive_executor_runs_the_spec_while_it_is_faster_and_probes() -> None:
    from node.executor_pool import AdaptiveExecutor

    executor = AdaptiveExecutor(InlineRunner(2), parallel_txs_min=0, probe_every=4)
    executor.seconds_per_tx = {"parallel": 10.0, "spec": 1e-9}  # as if measured
    state = fresh_state()
    txs = [make_tx(KEYS[i], 0, Transfer(KEYS[0].public_key, 0, 1)) for i in range(1, 6)]
    block, spec, _ = propose_with(build_block, state, Case(txs, []))
    modes = []
    for _ in range(8):
        assert_same_result(spec, executor.apply_block(state, block))
        assert executor.last_stats is not None
        modes.append((executor.last_stats.mode, executor.last_stats.fallback))
    probe = ("overlapped", "")
    rest = ("sequential", "spec_faster_here")
    assert modes == [rest, rest, rest, probe, rest, rest, rest, probe]


def test_a_hung_worker_times_out_falls_back_and_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import signal

    import node.executor_pool as pool

    monkeypatch.setattr(pool, "COLLECT_TIMEOUT_S", 1.0)
    runner = ProcessRunner(2)
    try:
        executor = ParallelExecutor(runner, parallel_txs_min=0)
        state = fresh_state()
        txs = [make_tx(KEYS[i % 4], i // 4, Transfer(KEYS[5].public_key, 0, 1))
               for i in range(12)]
        block, spec, _ = propose_with(build_block, state, Case(txs, []))
        hung = runner.pids[0]
        os.kill(hung, signal.SIGSTOP)
        assert_same_result(spec, executor.apply_block(state, block))
        assert executor.last_stats is not None and executor.last_stats.fallback == "RunnerFailed"
        assert hung not in runner.pids
        assert_same_result(spec, executor.apply_block(state, block))
        assert executor.last_stats.mode == "overlapped"
    finally:
        runner.close()


def test_signature_chunks_shrink_towards_the_end_and_cover_every_signature() -> None:
    """Guided chunks (the overlapped path): a few large ones first, at least
    SIGNATURE_CHUNK at the end; every signature is checked exactly once and the
    forged ones are found. Unguided, every chunk is SIGNATURE_CHUNK."""
    from sharding.parallel.pump import SIGNATURE_CHUNK, SignaturePump

    class Recording(InlineRunner):
        def __init__(self) -> None:
            super().__init__(2)
            self.sizes: list[int] = []
            self.checked: list[int] = []

        def submit_to(self, worker: int, job: Job) -> None:
            self.sizes.append(len(job.indices))
            self.checked.extend(job.indices)
            super().submit_to(worker, job)

    txs = [make_tx(KEYS[i % len(KEYS)], i, Transfer(KEYS[0].public_key, 0, 1))
           for i in range(600)]
    forged = {5, 333, 599}
    txs = [msgspec.structs.replace(tx, signature=bytes(64)) if i in forged else tx
           for i, tx in enumerate(txs)]
    runner = Recording()
    pump = SignaturePump(runner, get_shard_params(fresh_state()), txs, range(len(txs)),
                         guided=True)
    pump.feed_share(0.5)
    assert runner.sizes == [150, 150]
    assert pump.drain() == sorted(forged)
    assert sorted(runner.checked) == list(range(600))
    tail = runner.sizes[2:]
    assert tail == sorted(tail, reverse=True) and min(tail) <= SIGNATURE_CHUNK
    assert len(runner.sizes) < 600 // SIGNATURE_CHUNK  # fewer frames than fixed chunks
    fixed = Recording()
    assert SignaturePump(fixed, get_shard_params(fresh_state()), txs,
                         range(len(txs))).drain() == sorted(forged)
    assert set(fixed.sizes[:-1]) == {SIGNATURE_CHUNK} and sorted(fixed.checked) == list(range(600))
