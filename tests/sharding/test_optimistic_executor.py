"""The optimistic mode (Block-STM, issue 18 deliverable 4) gives the spec's results.

Differential tests over the mixed blocks of ``test_parallel_executor`` (transfers,
swaps, liquidity calls, inbound receipts, invalid and forged transactions): the
mode forced on every block, with 1/2/4 in-process workers and small round limits
so that worker rounds, aborts, re-executions and the scheduler's own finishing all
happen; high-contention blocks (every transaction on one pool); calls that cannot
declare their keys routed to the mode; the multi-version memory against a model;
and two real worker processes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sharding.parallel.plan as parallel_plan
from consensus.kernel.crypto import KeyPair
from node.executor_pool import ProcessRunner
from sharding.block import GENESIS_PREV_HASH
from sharding.executor import apply_block, build_block
from sharding.parallel import ExecutionStats, InlineRunner, JobRunner, ParallelExecutor
from sharding.parallel.jobs import Task
from sharding.parallel.mvmemory import BASE, ESTIMATE, MVMemory
from sharding.parallel.worker import BLOCKED, MISSING, RAN, run_tasks
from sharding.programs import declared_access
from sharding.records import account_key, get_shard_params, pool_key
from sharding.state import State
from sharding.tx import (
    AddLiquidity,
    Borrow,
    Call,
    Liquidate,
    RemoveLiquidity,
    Repay,
    SignedTx,
    Supply,
    Swap,
    Transfer,
    Withdraw,
)
from tests.sharding.test_lending import COIN, LOCAL, MARKET, POOLS, USD, Chain, make_borrower
from tests.sharding.test_parallel_executor import (
    KEYS,
    POOL,
    Case,
    assert_same_apply,
    assert_same_result,
    cases,
    check_case,
    fresh_state,
    propose_with,
)
from tests.support.ledger import make_tx


def optimistic(runner: JobRunner, *, rounds_max: int = 3, tasks_min: int = 0,
               mode: str = "always") -> ParallelExecutor:
    return ParallelExecutor(runner, parallel_txs_min=0, parallel_unsigned=True,
                            overlap_workers_max=0, optimistic=mode,
                            optimistic_rounds_max=rounds_max,
                            optimistic_round_tasks_min=tasks_min)


def hot_pool_txs(count: int, seed: int) -> list[SignedTx]:
    """Every transaction swaps on one pool: each conflicts with all the others."""
    rng = random.Random(seed)
    nonces = [0] * len(KEYS)
    txs = []
    for _ in range(count):
        sender = rng.randrange(len(KEYS))
        asset = rng.choice((POOL.asset_a, POOL.asset_b))
        txs.append(make_tx(KEYS[sender], nonces[sender],
                           Swap(POOL.address, asset, rng.randint(1, 5_000), 0)))
        nonces[sender] += 1
    return txs


# ---------------------------------------------------------------------------
# Differential: forced on every block


@pytest.mark.parametrize(("workers", "rounds_max"), [(1, 3), (2, 3), (4, 3), (2, 1), (3, 0)])
@settings(max_examples=25)
@given(case=cases(), inject=st.integers(0, 1_000))
def test_optimistic_equals_sequential_inline(workers: int, rounds_max: int, case: Case,
                                             inject: int) -> None:
    """Propose (windows, txs_max, rejected), apply (valid, invalid, forged, unsigned):
    all byte-identical to the spec. ``rounds_max=0``: the scheduler runs everything
    itself; 1: one speculative round, then it validates and finishes."""
    check_case(case, optimistic(InlineRunner(workers), rounds_max=rounds_max), inject)


@pytest.mark.parametrize("workers", [2, 4])
@settings(max_examples=10)
@given(seed=st.integers(0, 2**32), count=st.integers(20, 80))
def test_high_contention_equals_sequential_and_counts_aborts(workers: int, seed: int,
                                                             count: int) -> None:
    """One hot pool: the first round's later jobs all read a stale pool, so they
    abort (on the pool's keys, or a repeated sender's account) and run again,
    grouped in one job."""
    state = fresh_state()
    block, spec, _ = propose_with(build_block, state, Case(hot_pool_txs(count, seed), []))
    executor = optimistic(InlineRunner(workers))
    assert_same_result(spec, executor.apply_block(state, block))
    stats = executor.last_stats
    assert stats is not None and stats.mode == "optimistic"
    assert stats.aborts > 0 and stats.reexecutions > 0 and stats.rounds >= 2
    touched = {key.hex() for tx in block.txs
               for key in parallel_plan.planned_keys(tx, 0, 2) or ()}
    assert stats.abort_keys and {key for key, _ in stats.abort_keys} <= touched
    fields = stats.as_log_fields()
    assert fields["aborts"] == stats.aborts and fields["rounds"] == stats.rounds


def test_the_hot_pool_is_the_abort_key() -> None:
    """Distinct senders, one pool: the pool (with the keys a swap writes beside it)
    is what every abort names."""
    state = fresh_state()
    txs = [make_tx(key, 0, Swap(POOL.address, POOL.asset_a, 100 + i, 0))
           for i, key in enumerate(KEYS)]
    block, spec, _ = propose_with(build_block, state, Case(txs, []))
    executor = optimistic(InlineRunner(2))
    assert_same_result(spec, executor.apply_block(state, block))
    stats = executor.last_stats
    assert stats is not None and stats.aborts == len(KEYS) - -(-len(KEYS) // 2)
    assert pool_key(POOL.address).hex() in dict(stats.abort_keys)
    assert all(n == stats.aborts for _, n in stats.abort_keys)


def test_independent_transactions_commit_in_one_round_without_aborts() -> None:
    """Distinct senders paying distinct recipients: no conflicts, one round."""
    state = fresh_state()
    half = len(KEYS) // 2
    txs = [make_tx(KEYS[i], 0, Transfer(KEYS[half + i].public_key, 0, 7)) for i in range(half)]
    block, spec, _ = propose_with(build_block, state, Case(txs, []))
    executor = optimistic(InlineRunner(2))
    assert_same_result(spec, executor.apply_block(state, block))
    stats = executor.last_stats
    assert stats is not None
    assert (stats.mode, stats.rounds, stats.aborts, stats.reexecutions) == ("optimistic", 1, 0, 0)


def test_the_first_invalid_transaction_decides_after_a_conflict() -> None:
    """A replayed nonce behind a conflicting swap: the block is invalid at the
    replay's index, as in the spec (nonce checks happen in execution order)."""
    state = fresh_state()
    txs = hot_pool_txs(30, 5)
    block, _, _ = propose_with(build_block, state, Case(txs, []))
    broken = msgspec.structs.replace(block, txs=[*block.txs[:20], block.txs[3],
                                                 *block.txs[20:]])
    assert_same_apply(state, broken, optimistic(InlineRunner(2)))


# ---------------------------------------------------------------------------
# Calls that cannot declare their keys


def undeclared_liquidity(tx: SignedTx, num_shards: int
                         ) -> tuple[frozenset[bytes], frozenset[bytes]] | None:
    """``declared_access`` as it is for a liquidation: liquidity calls declare None."""
    if isinstance(tx.body.call, (AddLiquidity, RemoveLiquidity)):
        return None
    return declared_access(tx, num_shards)


@contextmanager
def liquidity_undeclared() -> Iterator[None]:
    original = getattr(parallel_plan, "declared_access")  # noqa: B009
    setattr(parallel_plan, "declared_access", undeclared_liquidity)  # noqa: B010
    try:
        yield
    finally:
        setattr(parallel_plan, "declared_access", original)  # noqa: B010


@settings(max_examples=25)
@given(case=cases())
def test_undeclared_calls_run_optimistic_and_equal_the_spec(case: Case) -> None:
    """``auto``: a block (or proposal window) holding a call that cannot declare its
    keys runs optimistic, every other partitioned; all equal the spec."""
    modes: list[str] = []
    with liquidity_undeclared():
        executor = ParallelExecutor(InlineRunner(2), parallel_txs_min=0,
                                    parallel_unsigned=True, overlap_workers_max=0,
                                    on_stats=lambda stats: modes.append(stats.mode))
        check_case(case, executor)
    undeclared = any(isinstance(tx.body.call, (AddLiquidity, RemoveLiquidity))
                     for tx in case.txs)
    assert ("optimistic" in modes) == undeclared
    assert set(modes) <= {"optimistic", "parallel"}


def test_the_plan_serialises_undeclared_calls_with_everything() -> None:
    """The partitioned mode's fallback for None: one component, the transaction's
    keys unknown; the optimistic mode gets its sender's account as first hint."""
    txs = [make_tx(KEYS[0], 0, Transfer(KEYS[1].public_key, 0, 1)),
           make_tx(KEYS[2], 0, Transfer(KEYS[3].public_key, 0, 1)),
           make_tx(KEYS[4], 0, AddLiquidity(POOL.address, 10, 10, 0))]
    with liquidity_undeclared():
        plan = parallel_plan.compute_plan(txs, 0, 2)
    assert plan.undeclared == [2] and len(plan.components) == 1
    assert plan.declared()[2] is None and plan.declared()[0] == plan.keys[0]
    assert all(key != parallel_plan.UNDECLARED for key, _ in plan.hot_keys)
    with liquidity_undeclared():
        assert parallel_plan.compute_plan(txs[:2], 0, 2).undeclared == []
        assert len(parallel_plan.compute_plan(txs[:2], 0, 2).components) == 2


# ---------------------------------------------------------------------------
# The pieces


@settings(max_examples=100)
@given(ops=st.lists(st.tuples(st.integers(0, 9), st.sets(st.integers(0, 3), max_size=3),
                              st.booleans()), max_size=40),
       probe=st.integers(0, 10))
def test_mvmemory_reads_the_highest_lower_writer(
        ops: list[tuple[int, set[int], bool]], probe: int) -> None:
    """Against a model: per index the latest incarnation's write set; an abort
    turns them into ESTIMATEs; a read sees the highest writer below the reader."""
    base = State.from_items([(bytes([k]), b"base%d" % k) for k in range(4)])
    memory = MVMemory(base)
    model: dict[int, tuple[int, dict[int, bytes], bool]] = {}  # index -> inc, writes, aborted
    for index, keys, abort in ops:
        incarnation = model[index][0] + 1 if index in model else 0
        writes = {k: b"%d.%d.%d" % (index, incarnation, k) for k in sorted(keys)}
        memory.record(index, incarnation, [(bytes([k]), v) for k, v in writes.items()])
        model[index] = (incarnation, writes, False)
        if abort:
            memory.mark_estimates(index)
            model[index] = (incarnation, writes, True)
    for key in range(4):
        writers = [i for i in sorted(model) if i < probe and key in model[i][1]]
        version, value = memory.read(bytes([key]), probe)
        if not writers:
            assert (version, value) == (BASE, b"base%d" % key)
            continue
        incarnation, writes, aborted = model[writers[-1]]
        assert version == (writers[-1], ESTIMATE if aborted else incarnation)
        assert value == writes[key]
    # Cleared (about to run again): a reader sees what lies below it.
    top = max(model, default=None)
    if top is not None and top < probe:
        below = memory.read(bytes([0]), top)
        memory.clear(top)
        assert memory.read(bytes([0]), probe) == below and memory.written(top) == []


def test_a_task_stops_on_a_missing_key_and_on_an_estimate() -> None:
    state = fresh_state()
    params = get_shard_params(state)
    sender, to = KEYS[0], KEYS[1]
    tx = make_tx(sender, 0, Transfer(to.public_key, 0, 5))
    sender_key, to_key = account_key(sender.public_key), account_key(to.public_key)
    full = [(sender_key, state.get(sender_key), -1, 0), (to_key, state.get(to_key), -1, 0)]
    ran, = run_tasks(params, [Task(0, 0, tx, False, full)])
    assert ran.status == RAN and ran.result is not None and not ran.result.invalid
    assert sorted(ran.reads) == sorted([(sender_key, -1, 0), (to_key, -1, 0)])
    missing, = run_tasks(params, [Task(0, 0, tx, False, full[:1])])
    assert (missing.status, missing.key) == (MISSING, to_key)
    estimate = [full[0], (to_key, state.get(to_key), 7, ESTIMATE)]
    blocked, = run_tasks(params, [Task(9, 1, tx, False, estimate)])
    assert (blocked.status, blocked.key) == (BLOCKED, to_key)
    # A job's earlier task supplies its fresh write over the snapshot's ESTIMATE.
    first = make_tx(KEYS[2], 0, Transfer(to.public_key, 0, 1))
    first_key = account_key(KEYS[2].public_key)
    job = [Task(7, 1, first, False, [(first_key, state.get(first_key), -1, 0), full[1]]),
           Task(9, 1, tx, False, estimate)]
    results = run_tasks(params, job)
    assert [r.status for r in results] == [RAN, RAN]
    assert (to_key, 7, 1) in results[1].reads


def test_node_exports_aborts_and_abort_keys() -> None:
    from types import SimpleNamespace

    import structlog
    from structlog.testing import capture_logs

    from node.main import Node
    from node.metrics import NodeMetrics
    from sharding.parallel import ExecutionStats

    node = SimpleNamespace(metrics=NodeMetrics(), log=structlog.get_logger())
    stats = ExecutionStats("apply", 3, 100, "optimistic", 2, 1, 1.0, 60, (), "", 2, 55,
                           (("70ab", 50),))
    with capture_logs() as logs:
        Node._on_executed(node, stats)  # type: ignore[arg-type]
    assert logs[0]["mode"] == "optimistic" and logs[0]["aborts"] == 55
    assert logs[0]["rounds"] == 2 and logs[0]["abort_keys"] == [["70ab", 50]]
    assert "shardnet_executor_aborts_total 55.0" in node.metrics.render().decode()


# ---------------------------------------------------------------------------
# Worker processes


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessRunner]:
    runner = ProcessRunner(2)
    try:
        yield runner
    finally:
        runner.close()


def test_optimistic_equals_sequential_in_worker_processes(pool: ProcessRunner) -> None:
    executor = optimistic(pool)

    @settings(max_examples=12)
    @given(case=cases(txs_max=60), inject=st.integers(0, 1_000))
    def check(case: Case, inject: int) -> None:
        check_case(case, executor, inject)

    check()
    state = fresh_state()
    block, spec, _ = propose_with(build_block, state, Case(hot_pool_txs(150, 1), []))
    assert_same_result(spec, executor.apply_block(state, block))
    assert executor.last_stats is not None and executor.last_stats.aborts > 0
    assert_same_result(apply_block(state, block, verify_signatures=False),
                       executor.apply_block(state, block, verify_signatures=False))


def test_a_killed_worker_mid_block_falls_back_to_the_spec(pool: ProcessRunner) -> None:
    import os

    executor = optimistic(pool)
    state = fresh_state()
    block, spec, _ = propose_with(build_block, state, Case(hot_pool_txs(60, 3), []))
    victim = pool.pids[1]
    os.kill(victim, 9)
    assert_same_result(spec, executor.apply_block(state, block))
    assert executor.last_stats is not None and executor.last_stats.fallback == "RunnerFailed"
    assert victim not in pool.pids
    assert_same_result(spec, executor.apply_block(state, block))
    assert executor.last_stats.mode == "optimistic"


# ---------------------------------------------------------------------------
# Lending calls (declared None: known only while they run)


@lru_cache(maxsize=1)
def lending_chain() -> tuple[Chain, KeyPair]:
    """Shard 0 of the lending genesis after a supply and a borrow (not mutated)."""
    chain = Chain()
    return chain, make_borrower(chain)


@settings(max_examples=20)
@given(data=st.data())
def test_lending_blocks_run_optimistic_and_equal_the_spec(data: st.DataObject) -> None:
    """After a supply and a borrow, a block of swaps that move the price, supplies,
    borrows, repayments, withdrawals and liquidations (of the borrower, at random
    amounts): the optimistic mode (auto: the lending calls declare None; and
    forced) gives the spec's block, result and rejections, proposing and applying."""
    chain, alice = lending_chain()
    state = chain.states[0]
    nonces = dict(chain.nonces)
    height = chain.height + data.draw(st.integers(1, 300), label="blocks later")
    calls: list[tuple[int, Call]] = []
    for _ in range(data.draw(st.integers(1, 30), label="txs")):
        who = data.draw(st.integers(1, 7), label="sender")
        amount = data.draw(st.sampled_from((1, 500, 20_000, 300_000)), label="amount")
        asset = data.draw(st.sampled_from((COIN, USD)), label="asset")
        kind = data.draw(st.sampled_from(("swap", "supply", "borrow", "repay", "withdraw",
                                          "liquidate", "transfer")), label="kind")
        choices: dict[str, Call] = {
            "swap": Swap(POOLS[USD], asset, amount, 0),
            "supply": Supply(MARKET, asset, amount),
            "borrow": Borrow(MARKET, asset, amount),
            "repay": Repay(MARKET, asset, amount),
            "withdraw": Withdraw(MARKET, asset, amount),
            "liquidate": Liquidate(MARKET, alice.public_key, COIN, amount, USD),
            "transfer": Transfer(LOCAL[0].public_key, asset, amount),
        }
        calls.append((who, choices[kind]))
    txs = []
    for who, call in calls:
        sender = LOCAL[who]
        nonce = nonces.get(sender.public_key, 0)
        nonces[sender.public_key] = nonce + 1
        txs.append(make_tx(sender, nonce, call))
    spec_block, spec, rejected = build_block(
        state, txs, [], height=height, view=0, prev_hash=GENESIS_PREV_HASH, time_ms=height,
        proposer=0)
    for mode in ("auto", "always"):
        modes: list[str] = []

        def sink(stats: ExecutionStats, modes: list[str] = modes) -> None:
            modes.append(stats.mode)

        executor = ParallelExecutor(InlineRunner(2), parallel_txs_min=0, parallel_unsigned=True,
                                    overlap_workers_max=0, optimistic=mode,
                                    optimistic_round_tasks_min=0,
                                    on_stats=sink)
        block, result, other_rejected = executor.build_block(
            state, txs, [], height=height, view=0, prev_hash=GENESIS_PREV_HASH,
            time_ms=height, proposer=0)
        assert block == spec_block
        assert_same_result(spec, result)
        assert [(r.tx, r.reason) for r in other_rejected] == [(r.tx, r.reason) for r in rejected]
        if spec_block.txs:
            assert_same_result(spec, executor.apply_block(state, spec_block))
        undeclared = any(not isinstance(tx.body.call, (Swap, Transfer, Supply, Repay))
                         for tx in txs)
        assert ("optimistic" in modes) == (undeclared or mode == "always")
