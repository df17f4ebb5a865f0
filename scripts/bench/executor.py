"""``shardnet bench executor``: the parallel executor against the spec and py-evm.

For each workload and account count it builds one block of ``--txs`` signed
transactions on shard 0 of a 2-shard genesis whose first N shard-0 accounts send
them, then times, interleaved, ``--reps`` times each: the sequential executor
(``apply_block``, signatures included: what a replica does with a block it has
not seen before) and the parallel executor with each worker count (worker
processes started once, before timing). Figures are medians; tx/s = txs / time.

Workloads: ``transfers`` (recipients uniform over the N accounts, 10% to the other
shard), ``swaps20`` (the same with 20% swaps over 3 pools on shard 0), ``zipf``
(senders and recipients drawn Zipf(1.2) over the N accounts), ``swaps_hot`` (every
transaction a swap on one pool: every transaction conflicts whatever N), ``farms``
(the transfers with 20% farm calls, harvest/stake/unstake, on the shard's farm: low
contention) and ``farms_hot`` (every transaction a farm call on that farm: the farm's
accumulator is every call's common key). Farm workloads start from a state where
every sender holds LP shares of the 3 pools and has staked half of those of the
farmed one (issue 18). ``lending`` (the transfers with 20% lending calls: supplies,
borrows, repayments, withdrawals, liquidations of healthy positions) and
``lending_hot`` (every transaction a lending call: all read the same markets; the
borrows, withdrawals and liquidations declare no keys, so both run in the optimistic
mode) start from a state where every sender has supplied USD and COIN and borrowed
some COIN. With 2 accounts every transaction conflicts; with 10,000 almost none do.

``--optimistic`` runs every block in the optimistic mode (Block-STM, issue 18:
``ParallelExecutor(optimistic="always")``, never overlapped); its rows add the
worker rounds, aborts and re-executions per block.

The py-evm baseline executes the same number of plain value transfers (signed
legacy transactions, 100 senders, Berlin rules, sender recovery included) with
``VM.apply_all_transactions`` on one core. One extra row (``transfers_unsigned``)
times blocks whose signatures were checked beforehand (the node's cache), which
is why the node runs such blocks with the spec.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from consensus.kernel.crypto import KeyPair, verify_signature
from node.executor_pool import ProcessRunner, available_cores
from scripts.bench.common import cpu_seconds, machine_facts, report
from scripts.cli.params import rng_seed_option
from sharding.accounts import derive_account, shard_of
from sharding.block import GENESIS_PREV_HASH, Block
from sharding.executor import BlockResult, apply_block, build_block
from sharding.genesis import genesis_state, load_genesis, make_genesis_dict
from sharding.parallel import ParallelExecutor
from sharding.programs import CallContext, process_call
from sharding.records import get_shard_params
from sharding.state import Overlay, State
from sharding.tx import (
    AddLiquidity,
    Borrow,
    Call,
    Harvest,
    Liquidate,
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

SHARD = 0
NUM_SHARDS = 2
SEED = "bench-executor"
ACCOUNTS = (2, 10, 100, 1_000, 10_000)
WORKLOADS = ("transfers", "swaps20", "zipf", "swaps_hot", "farms", "farms_hot", "lending",
             "lending_hot")
FARM_WORKLOADS = ("farms", "farms_hot")
LENDING_WORKLOADS = ("lending", "lending_hot")
LENDING_SHARE = 0.2
FARM_SHARE = 0.2
WORKERS = (1, 2, 4)
CROSS_SHARE = 0.1
SWAP_SHARE = 0.2
ZIPF_S = 1.2
PYEVM_SENDERS = 100


@dataclass
class Setup:
    state: State
    chain_id: str
    local: list[KeyPair]
    remote: list[bytes]
    pools: list[tuple[bytes, int, int]]
    market: bytes = b""  # the lending program (shard 0 of the genesis: issue 18)


def make_setup(accounts: int) -> Setup:
    local: list[KeyPair] = []
    remote: list[bytes] = []
    index = 0
    while len(local) < accounts:
        key = derive_account(SEED, index)
        if shard_of(key.public_key, NUM_SHARDS) == SHARD:
            local.append(key)
        elif len(remote) < 100:
            remote.append(key.public_key)
        index += 1
    genesis = load_genesis(make_genesis_dict(
        num_shards=NUM_SHARDS, validators_per_shard=1, seed=SEED, accounts=index,
        balance=10**12, pool_reserve=10**14, pools_per_shard=3,
        assets=("COIN", "USD", "ETH", "BTC"), farm_budget=10**15, markets=True,
    ))
    pools = [(p.address, p.asset_a, p.asset_b) for p in genesis.pools
             if shard_of(p.address, NUM_SHARDS) == SHARD]
    market = genesis.lending.address if genesis.lending is not None else b""
    return Setup(genesis_state(genesis, SHARD), genesis.chain_id, local, remote, pools, market)


def make_lending_setup(setup: Setup) -> Setup:
    """``setup`` where every sender has supplied USD (collateral) and COIN (the cash
    others borrow) and borrowed some COIN, at height 1 (prices exist from the first
    block on; the benchmark's block, also at height 1, accrues nothing more: issue 18)."""
    view = Overlay(setup.state)
    params = get_shard_params(setup.state, 1)
    for key in setup.local:
        ctx = CallContext(params, bytes(32), key.public_key)
        process_call(view, ctx, Supply(setup.market, 1, 10**9))
        process_call(view, ctx, Supply(setup.market, 0, 10**9))
        process_call(view, ctx, Borrow(setup.market, 0, 10**6))
    state = State.from_items(setup.state.items())
    state.apply_writes(view.writes)
    return Setup(state, setup.chain_id, setup.local, setup.remote, setup.pools, setup.market)


def make_lending_call(setup: Setup, rng: random.Random) -> Call:
    """Supplies and repayments (declared keys), borrows, withdrawals and liquidations
    (declared None: the optimistic mode runs the block); the liquidations of healthy
    positions fail ``healthy`` after reading every market of the borrower."""
    roll = rng.random()
    if roll < 0.3:
        return Supply(setup.market, 1, rng.randint(1_000, 10_000))
    if roll < 0.6:
        return Borrow(setup.market, 0, rng.randint(1, 1_000))
    if roll < 0.8:
        return Repay(setup.market, 0, rng.randint(1, 1_000))
    if roll < 0.9:
        return Withdraw(setup.market, 1, rng.randint(1, 1_000))
    borrower = setup.local[rng.randrange(len(setup.local))]
    return Liquidate(setup.market, borrower.public_key, 0, rng.randint(1, 1_000), 1)


def make_farm_setup(setup: Setup) -> Setup:
    """``setup`` with every sender holding LP shares of each local pool, half of them
    staked in its farm (at height 0: a block at height 1 accrues one block). Only the
    first pool of a shard has a farm in ``make_genesis_dict``: stakes go there."""
    view = Overlay(setup.state)
    params = get_shard_params(setup.state, 0)
    for key in setup.local:
        ctx = CallContext(params, bytes(32), key.public_key)
        for pool, _, _ in setup.pools:
            process_call(view, ctx, AddLiquidity(pool, 100_000, 100_000, 0))
        process_call(view, ctx, Stake(setup.pools[0][0], 50_000))
    state = State.from_items(setup.state.items())
    state.apply_writes(view.writes)
    return Setup(state, setup.chain_id, setup.local, setup.remote, setup.pools)


def make_farm_call(pool: bytes, rng: random.Random) -> Call:
    roll = rng.random()
    if roll < 0.5:
        return Harvest(pool)
    if roll < 0.75:
        return Stake(pool, rng.randint(1, 1_000))
    return Unstake(pool, rng.randint(1, 1_000))


def zipf_weights(n: int) -> list[float]:
    return [1 / (rank**ZIPF_S) for rank in range(1, n + 1)]


def make_block(setup: Setup, workload: str, txs_count: int, rng: random.Random) -> Block:
    n = len(setup.local)
    weights = zipf_weights(n) if workload == "zipf" else None
    nonces: dict[bytes, int] = {}

    def pick() -> KeyPair:
        if weights is None:
            return setup.local[rng.randrange(n)]
        return rng.choices(setup.local, weights)[0]

    txs = []
    for _ in range(txs_count):
        sender = pick()
        nonce = nonces.get(sender.public_key, 0)
        nonces[sender.public_key] = nonce + 1
        call: Call
        if workload == "lending_hot" or (workload == "lending" and
                                         rng.random() < LENDING_SHARE):
            call = make_lending_call(setup, rng)
        elif workload == "farms_hot" or (workload == "farms" and rng.random() < FARM_SHARE):
            call = make_farm_call(setup.pools[0][0], rng)
        elif workload == "swaps_hot":
            pool, asset_a, asset_b = setup.pools[0]
            call = Swap(pool, rng.choice((asset_a, asset_b)), rng.randint(1, 1000), 0)
        elif workload == "swaps20" and rng.random() < SWAP_SHARE:
            pool, asset_a, asset_b = rng.choice(setup.pools)
            call = Swap(pool, rng.choice((asset_a, asset_b)), rng.randint(1, 1000), 0)
        elif rng.random() < CROSS_SHARE:
            call = Transfer(rng.choice(setup.remote), 0, rng.randint(1, 1000))
        else:
            call = Transfer(pick().public_key, 0, rng.randint(1, 1000))
        txs.append(sign_tx(sender, TxBody(setup.chain_id, sender.public_key, nonce, call)))
    block, _, rejected = build_block(
        setup.state, txs, [], height=1, view=0, prev_hash=GENESIS_PREV_HASH, time_ms=1000,
        proposer=0, verify_signatures=False,
    )
    if rejected:
        raise click.ClickException(f"benchmark built an invalid tx: {rejected[0].reason}")
    return block


def timed(run: Callable[[], BlockResult]) -> tuple[float, BlockResult]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


SPIN = "import time\nt = time.perf_counter()\nx = 0\nfor i in range(3_000_000): x += i\n" \
       "print(time.perf_counter() - t)"


def measure_capacity(processes: int = 2) -> float:
    """Cores' worth of CPU the machine delivers right now: one spin loop's time x
    ``processes`` / the time of ``processes`` loops run at once (2.0 on two idle
    cores; a shared VM may give 1.0 while showing two CPUs)."""
    def spin(count: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE)
                 for _ in range(count)]
        return max(float(p.communicate()[0]) for p in procs)

    alone = statistics.median(spin(1) for _ in range(3))
    together = statistics.median(spin(processes) for _ in range(3))
    return processes * alone / together


def measure_gil(runner: ProcessRunner, count: int = 1_000) -> dict[str, float]:
    """Ed25519 verifications per second: one thread, two threads, the worker processes."""
    key = KeyPair.derive(SEED, 10**6)
    items = [(key.public_key, b"m%d" % i, key.sign(b"m%d" % i)) for i in range(count)]

    def verify(chunk: list[tuple[bytes, bytes, bytes]]) -> None:
        for public_key, message, signature in chunk:
            verify_signature(public_key, message, signature)

    rates: dict[str, list[float]] = {"one_thread": [], "two_threads": [], "processes": []}
    txs = [sign_tx(key, TxBody("x", key.public_key, i, Transfer(key.public_key, 0, 1)))
           for i in range(count)]
    executor = ParallelExecutor(runner, parallel_txs_min=0)
    for _ in range(3):
        started = time.perf_counter()
        verify(items)
        rates["one_thread"].append(count / (time.perf_counter() - started))
        halves = [items[: count // 2], items[count // 2 :]]
        threads = [threading.Thread(target=verify, args=(half,)) for half in halves]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rates["two_threads"].append(count / (time.perf_counter() - started))
        started = time.perf_counter()
        executor.compute_bad_signatures(txs)
        rates["processes"].append(count / (time.perf_counter() - started))
    result = {name: statistics.median(values) for name, values in rates.items()}
    result["process_workers"] = runner.workers
    return result


def bench_block(setup: Setup, block: Block, executors: dict[int, ParallelExecutor], reps: int,
                verify: bool) -> dict[str, Any]:
    seq: list[float] = []
    seq_cpu: list[float] = []
    par: dict[int, list[float]] = {w: [] for w in executors}
    main_cpu: dict[int, list[float]] = {w: [] for w in executors}
    workers_cpu: dict[int, list[float]] = {w: [] for w in executors}
    stats: dict[int, Any] = {}
    for _ in range(reps):
        cpu = time.process_time()
        elapsed, spec = timed(lambda: apply_block(setup.state, block, verify_signatures=verify))
        seq_cpu.append(time.process_time() - cpu)
        seq.append(elapsed)
        for workers, executor in executors.items():
            pids = executor.runner.pids  # type: ignore[attr-defined]
            before = [cpu_seconds(pid) for pid in pids]
            cpu = time.process_time()
            elapsed, result = timed(
                lambda e=executor: e.apply_block(setup.state, block,  # type: ignore[misc]
                                                 verify_signatures=verify))
            main_cpu[workers].append(time.process_time() - cpu)
            workers_cpu[workers].append(
                sum(cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)))
            if result != spec or list(result.writes.items()) != list(spec.writes.items()):
                raise click.ClickException("parallel result differs from the spec")
            par[workers].append(elapsed)
            stats[workers] = executor.last_stats
    cpu_ms = {"seq": seq_cpu, "main": main_cpu, "workers": workers_cpu}
    return {"rows": block_rows(len(block.txs), seq, par, cpu_ms, stats)}


def cpu_bound(seq_cpu: float, main_cpu: float, workers_cpu: float, cpus: int = 2) -> float:
    """Spec CPU / the least wall time the parallel run's CPU can take on ``cpus``."""
    floor = max(main_cpu, (main_cpu + workers_cpu) / cpus)
    return round(seq_cpu / floor, 3) if floor > 0 else 0.0


def block_rows(txs: int, seq: list[float], par: dict[int, list[float]],
               cpu: dict[str, Any], stats: dict[int, Any]) -> list[dict[str, Any]]:
    """One row per worker count: medians of the timed runs, and the executor's stats."""
    seq_s = statistics.median(seq)
    rows = []
    for workers, times in par.items():
        par_s = statistics.median(times)
        s = stats[workers]
        rows.append({
            "workers": workers,
            "seq_tps": txs / seq_s,
            "par_tps": txs / par_s,
            "speedup": seq_s / par_s,
            "mode": s.mode,
            "components": s.components,
            "largest_component_share": s.largest_component_share,
            "reexecutions": s.reexecutions,
            "rounds": s.rounds,
            "aborts": s.aborts,
            "abort_keys": [list(k) for k in s.abort_keys],
            "hot_keys": [list(k) for k in s.hot_keys],
            "seq_cpu_ms": round(statistics.median(cpu["seq"]) * 1e3, 1),
            "par_main_cpu_ms": round(statistics.median(cpu["main"][workers]) * 1e3, 1),
            "par_workers_cpu_ms": round(statistics.median(cpu["workers"][workers]) * 1e3, 1),
            # The speedup the CPU accounting allows on two delivered CPUs: the spec's
            # CPU over max(the calling process, everything / 2). Comparable across
            # loaded runs, where the wall-clock speedup is not (issue 16).
            "cpu_bound_speedup_2cpus": cpu_bound(statistics.median(cpu["seq"]),
                                                 statistics.median(cpu["main"][workers]),
                                                 statistics.median(cpu["workers"][workers])),
            "seq_ms": [round(t * 1e3, 2) for t in seq],
            "par_ms": [round(t * 1e3, 2) for t in times],
        })
    return rows


# ---------------------------------------------------------------------------
# py-evm baseline


def bench_pyevm(txs_count: int, reps: int) -> dict[str, Any]:
    try:
        from eth import constants
        from eth.chains.base import MiningChain
        from eth.db.atomic import AtomicDB
        from eth.vm.forks.berlin import BerlinVM
        from eth_keys import keys  # type: ignore[attr-defined]
        from eth_keys.backends import get_backend
    except ImportError as exc:
        return {"seq_tps": None, "error": f"py-evm is not installed ({exc.name}): "
                "pip install -e '.[dev]' adds it"}
    private = [keys.PrivateKey((i + 1).to_bytes(32, "big")) for i in range(PYEVM_SENDERS)]
    addresses = [key.public_key.to_canonical_address() for key in private]
    genesis_params: dict[str, Any] = {"difficulty": 1, "timestamp": 1,
                                      "gas_limit": txs_count * 21_000 + 100_000}
    alloc: dict[Any, Any] = {a: {"balance": 10**24, "nonce": 0, "code": b"", "storage": {}}
                             for a in addresses}
    chain_class = MiningChain.configure(
        __name__="BenchChain",
        vm_configuration=((constants.GENESIS_BLOCK_NUMBER, BerlinVM),),
    )

    def fresh_vm() -> Any:
        return chain_class.from_genesis(AtomicDB(), genesis_params, alloc).get_vm()

    vm = fresh_vm()
    txs = []
    for i in range(txs_count):
        sender = i % PYEVM_SENDERS
        unsigned = vm.create_unsigned_transaction(
            nonce=i // PYEVM_SENDERS, gas_price=1, gas=21_000,
            to=addresses[(sender + 1) % PYEVM_SENDERS], value=1, data=b"",
        )
        txs.append(unsigned.as_signed_transaction(private[sender]))
    times, cpu_times = [], []
    for _ in range(reps):
        vm = fresh_vm()
        started, cpu = time.perf_counter(), time.process_time()
        vm.apply_all_transactions(txs, vm.get_header())
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu)
    return {
        "seq_tps": txs_count / statistics.median(times),
        "seq_cpu_tps": txs_count / statistics.median(cpu_times),
        "ecc_backend": type(get_backend()).__name__,
        "ms": [round(t * 1e3, 1) for t in times],
    }


# ---------------------------------------------------------------------------
# The command


def measure_grid(runners: dict[int, ProcessRunner], accounts: tuple[int, ...],
                 workloads: tuple[str, ...], txs: int, reps: int, seed: int,
                 log: Callable[[str], None], partitioned: bool,
                 optimistic: bool = False) -> list[dict[str, Any]]:
    """One row per (workload, accounts, workers), and the unsigned transfers at the
    largest account count."""
    # The node's choice (overlapped with up to two workers), or always partitioned.
    overlap: dict[str, Any] = {"overlap_workers_max": 0} if partitioned else {}
    if optimistic:  # Block-STM for every block (issue 18)
        overlap = {"overlap_workers_max": 0, "optimistic": "always"}
    executors = {w: ParallelExecutor(r, **overlap) for w, r in runners.items()}
    rows: list[dict[str, Any]] = []
    for count in accounts:
        base = make_setup(count)
        staked = make_farm_setup(base) if set(workloads) & set(FARM_WORKLOADS) else base
        lent = make_lending_setup(base) if set(workloads) & set(LENDING_WORKLOADS) else base
        for workload in workloads:
            setup = (staked if workload in FARM_WORKLOADS else
                     lent if workload in LENDING_WORKLOADS else base)
            block = make_block(setup, workload, txs, random.Random(seed))
            measured = bench_block(setup, block, executors, reps, verify=True)
            load = round(os.getloadavg()[0], 2)
            for row in measured["rows"]:
                rows.append({"workload": workload, "accounts": count, "loadavg": load, **row})
            best = max(measured["rows"], key=lambda r: r["speedup"])
            log(f"{workload:>10} {count:>6} accounts: seq {best['seq_tps']:,.0f} tx/s, "
                f"best x{best['speedup']:.2f} with {best['workers']} workers")
        if count == max(accounts):
            setup = base
            block = make_block(setup, "transfers", txs, random.Random(seed))
            unsigned = {w: ParallelExecutor(r, parallel_unsigned=True, **overlap)
                        for w, r in runners.items()}
            measured = bench_block(setup, block, unsigned, reps, verify=False)
            for row in measured["rows"]:
                rows.append({"workload": "transfers_unsigned", "accounts": count, **row})
    return rows


def run(accounts: tuple[int, ...], workloads: tuple[str, ...], workers: tuple[int, ...],
        txs: int, reps: int, seed: int, pyevm_reps: int, log: Callable[[str], None],
        partitioned: bool = False, optimistic: bool = False) -> dict[str, Any]:
    load_before = os.getloadavg()
    capacity_before = measure_capacity()
    log(f"CPU capacity: {capacity_before:.2f} cores (two spin loops vs one)")
    runners = {w: ProcessRunner(w) for w in workers}
    try:
        gil = measure_gil(runners[max(runners)])
        log(f"Ed25519 verify/s: one thread {gil['one_thread']:,.0f}, two threads "
            f"{gil['two_threads']:,.0f}, {gil['process_workers']} processes "
            f"{gil['processes']:,.0f}")
        rows = measure_grid(runners, accounts, workloads, txs, reps, seed, log, partitioned,
                            optimistic)
    finally:
        for runner in runners.values():
            runner.close()
    log("py-evm baseline ...")
    pyevm = bench_pyevm(txs, pyevm_reps)
    rows.append({"workload": "pyevm_transfer", "accounts": PYEVM_SENDERS, "workers": 1,
                 "seq_tps": pyevm["seq_tps"], "par_tps": None, "speedup": None,
                 **{k: v for k, v in pyevm.items() if k != "seq_tps"}})
    facts = machine_facts()
    return {
        "machine": {
            "cores_available": available_cores(),
            "cpu_count": facts.pop("cpus"),
            **facts,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "cpu_capacity_before": round(capacity_before, 2),
            "cpu_capacity_after": round(measure_capacity(), 2),
        },
        "ed25519_verify_per_s": gil,
        "params": {"txs_per_block": txs, "reps": reps, "seed": seed, "accounts": accounts,
                   "workloads": workloads, "workers": workers,
                   "strategy": ("optimistic" if optimistic
                                else "partitioned" if partitioned else "auto")},
        "rows": rows,
    }


def make_table(result: dict[str, Any]) -> Table:
    params, machine = result["params"], result["machine"]
    workers = params["workers"]
    table = Table(title=(
        f"executor ({params['strategy']}): {params['txs_per_block']:,}-tx blocks, "
        f"median of {params['reps']} "
        f"(cores {machine['cores_available']}, delivering {machine['cpu_capacity_before']:.1f}"
        f"->{machine['cpu_capacity_after']:.1f}, load {machine['loadavg_before'][0]:.1f}"
        f"->{machine['loadavg_after'][0]:.1f}, python {machine['python']})"))
    for header in ("workload", "accounts", "seq tx/s"):
        table.add_column(header, justify="right")
    for w in workers:
        table.add_column(f"par tx/s w={w}", justify="right")
        table.add_column(f"x w={w}", justify="right")
    table.add_column("comps", justify="right")
    table.add_column("largest", justify="right")
    table.add_column("mode per w", justify="left")
    table.add_column("aborts/rounds per w", justify="left")
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in result["rows"]:
        groups.setdefault((row["workload"], row["accounts"]), []).append(row)
    for (workload, accounts), rows in groups.items():
        if workload == "pyevm_transfer":
            tps = rows[0]["seq_tps"]
            cells = [f"{tps:,.0f}" if tps else rows[0].get("error", "n/a")]
            table.add_row(workload, str(accounts), *cells, *[""] * (2 * len(workers) + 4))
            continue
        by_workers = {r["workers"]: r for r in rows}
        seq_tps = statistics.median(r["seq_tps"] for r in rows)
        cells = []
        for w in workers:
            r = by_workers.get(w)
            cells += ["", ""] if r is None else [f"{r['par_tps']:,.0f}", f"{r['speedup']:.2f}"]
        modes = "/".join(by_workers[w]["mode"] for w in workers if w in by_workers)
        aborts = " ".join(f"{by_workers[w]['aborts']}/{by_workers[w]['rounds']}"
                          for w in workers if w in by_workers)
        table.add_row(workload, f"{accounts:,}", f"{seq_tps:,.0f}", *cells,
                      str(rows[0]["components"]), f"{rows[0]['largest_component_share']:.2f}",
                      modes, aborts)
    return table


def to_json_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON file: a list of rows (issue 7), each carrying the run's machine facts."""
    run = {**result["machine"], "ed25519_verify_per_s": result["ed25519_verify_per_s"],
           "txs_per_block": result["params"]["txs_per_block"], "reps": result["params"]["reps"],
           "strategy": result["params"]["strategy"]}
    return [{**row, "run": run} for row in result["rows"]]


def parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def pyevm_comparison(result: dict[str, Any]) -> str:
    """The spec against py-evm per core, or why py-evm did not run."""
    pyevm_row = next(r for r in result["rows"] if r["workload"] == "pyevm_transfer")
    if pyevm_row["seq_tps"] is None:
        return f"[yellow]{pyevm_row['error']}[/yellow]"
    transfers = [r for r in result["rows"] if r["workload"] == "transfers"]
    if not transfers:
        return "no transfers row: py-evm is compared with the transfers workload"
    seq = statistics.median(r["seq_tps"] for r in transfers)
    txs = result["params"]["txs_per_block"]
    seq_cpu = statistics.median(txs / r["seq_cpu_ms"] * 1e3 for r in transfers)
    return (f"per core (one core each, signatures included): spec {seq:,.0f} tx/s vs py-evm "
            f"{pyevm_row['seq_tps']:,.0f} tx/s ({pyevm_row['ecc_backend']}): "
            f"x{seq / pyevm_row['seq_tps']:.1f}; by CPU time {seq_cpu:,.0f} vs "
            f"{pyevm_row['seq_cpu_tps']:,.0f}: x{seq_cpu / pyevm_row['seq_cpu_tps']:.1f}")


@click.command("executor")
@click.option("--quick", is_flag=True,
              help="2 and 10,000 accounts, transfers, 2 workers, 3 reps (under a minute).")
@click.option("--accounts", default=",".join(map(str, ACCOUNTS)), show_default=True,
              help="Comma-separated sender account counts.")
@click.option("--workloads", default=",".join(WORKLOADS), show_default=True)
@click.option("--workers", default=",".join(map(str, WORKERS)), show_default=True,
              help="Comma-separated worker counts.")
@click.option("--txs", default=2_000, show_default=True, help="Transactions per block.")
@click.option("--reps", default=5, show_default=True, help="Timed runs per executor.")
@rng_seed_option(help="Seed of the generated blocks.", name="seed")
@click.option("--partitioned", is_flag=True,
              help="Always conflict-partitioned execution (default: overlapped with <= 2 "
                   "workers, as the node runs).")
@click.option("--optimistic", is_flag=True,
              help="Always the optimistic mode (Block-STM, issue 18), never overlapped.")
@click.option("--out", "out_path", default="bench-results/executor.json", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="JSON output file.")
def bench_executor(quick: bool, accounts: str, workloads: str, workers: str, txs: int,
                   reps: int, seed: int, partitioned: bool, optimistic: bool,
                   out_path: Path) -> None:
    """Sequential vs parallel executor tx/s on 2,000-tx blocks, and a py-evm baseline."""
    console = Console(width=max(Console().width, 150))
    if quick:
        grid: tuple[tuple[int, ...], tuple[str, ...], tuple[int, ...]] = (
            (2, 10_000), ("transfers",), (2,))
        reps, pyevm_reps = 3, 1
    else:
        names = tuple(w.strip() for w in workloads.split(",") if w.strip())
        unknown = set(names) - set(WORKLOADS)
        if unknown:
            raise click.BadParameter(f"unknown workloads {sorted(unknown)}")
        grid = (parse_ints(accounts), names, parse_ints(workers))
        pyevm_reps = 3
    if txs < 1 or reps < 1 or min(grid[0]) < 1 or min(grid[2]) < 1:
        raise click.BadParameter("--txs, --reps, --accounts and --workers must be >= 1")
    if partitioned and optimistic:
        raise click.BadParameter("--partitioned and --optimistic exclude each other")
    result = run(*grid, txs, reps, seed, pyevm_reps, console.print, partitioned, optimistic)
    console.print(make_table(result))
    console.print(pyevm_comparison(result))
    report(console, [], out_path, to_json_rows(result))
