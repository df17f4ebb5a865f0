"""Planning (pure): the transactions' components under "declares a common key",
their assignment to workers, and the jobs that carry them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sharding.accounts import shard_of
from sharding.parallel.jobs import Job
from sharding.programs import declared_access
from sharding.records import ShardParams, account_key, oracle_key, pool_key
from sharding.state import StateReader
from sharding.tx import SignedTx, Swap, Transfer

SIGNATURE_COST = 1.0  # relative cost of one Ed25519 verification ...
EXECUTION_COST = 0.3  # ... and of executing one transaction in a job (measured)
HOT_KEYS_MAX = 3


# The planner's stand-in key of a transaction that cannot declare its accesses
# (``declared_access`` returns None): it shares this key with every other, so in
# the partitioned mode such transactions are serialised with everything (a job
# without their keys escapes at them and this process runs the spec from there).
# The executor runs blocks holding one in the optimistic mode instead.
UNDECLARED = b""


@dataclass(frozen=True, slots=True)
class Plan:
    components: list[list[int]]  # indices into the transactions, each in block order
    hot_keys: list[tuple[bytes, int]]  # the most shared keys and their transaction counts
    keys: list[frozenset[bytes]]  # declared reads | writes per transaction
    # Indices whose call cannot declare its accesses (``planned_keys`` None).
    undeclared: list[int] = field(default_factory=list)

    def declared(self) -> list[frozenset[bytes] | None]:
        """Per transaction its declared keys, None where it has none."""
        missing = set(self.undeclared)
        return [None if i in missing else keys for i, keys in enumerate(self.keys)]


# Which addresses live on this shard, remembered across blocks (the same accounts
# recur): a plan otherwise spends most of its time on ``shard_of``'s hash. Pure
# memoisation of a pure function, bounded: cleared when full.
LOCAL_CACHE_MAX = 1 << 16
_local: dict[tuple[bytes, int, int], bool] = {}


def is_local(address: bytes, shard: int, num_shards: int) -> bool:
    """``shard_of(address, num_shards) == shard``, memoised."""
    entry = (address, shard, num_shards)
    local = _local.get(entry)
    if local is None:
        if len(_local) >= LOCAL_CACHE_MAX:
            _local.clear()
        local = _local[entry] = shard_of(address, num_shards) == shard
    return local


def planned_keys(tx: SignedTx, shard: int, num_shards: int) -> frozenset[bytes] | None:
    """``declared_access``'s reads | writes for a transaction whose sender lives on
    ``shard``, with one (memoised) shard lookup instead of two: a sender elsewhere
    makes the transaction invalid before it reads anything, so its keys only steer
    the partition. Correctness never rests on these keys: a job checks that each
    transaction stays inside the job's keys (``worker.run_job``). None: the call
    cannot declare its keys (known only while it runs)."""
    sender = tx.body.sender
    call = tx.body.call
    if isinstance(call, Transfer):
        if call.to != sender and is_local(call.to, shard, num_shards):
            return frozenset((account_key(sender), account_key(call.to)))
        return frozenset((account_key(sender),))
    if isinstance(call, Swap):
        if is_local(call.pool, shard, num_shards):
            # The pool's price oracle (``T``) is written with it (issue 18).
            return frozenset((account_key(sender), pool_key(call.pool), oracle_key(call.pool)))
        return frozenset((account_key(sender),))
    access = declared_access(tx, num_shards)
    if access is None:
        return None
    reads, writes = access
    return reads | writes


def compute_plan(txs: Sequence[SignedTx], shard: int, num_shards: int) -> Plan:
    """Connected components of the transactions under "declares a common key"."""
    parent = list(range(len(txs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[bytes, int] = {}
    counts: dict[bytes, int] = {}
    keys: list[frozenset[bytes]] = []
    undeclared: list[int] = []
    for index, tx in enumerate(txs):
        planned = planned_keys(tx, shard, num_shards)
        if planned is None:
            undeclared.append(index)
            keys.append(frozenset())
            touched: Iterable[bytes] = (UNDECLARED,)
        else:
            keys.append(planned)
            touched = planned
        for key in touched:
            first = owner.setdefault(key, index)
            if first != index:
                counts[key] = counts.get(key, 1) + 1
                a, b = find(first), find(index)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    if undeclared:  # conflicts with everything
        for index in range(len(txs)):
            a, b = find(undeclared[0]), find(index)
            if a != b:
                parent[max(a, b)] = min(a, b)
    for index in range(len(txs)):
        groups.setdefault(find(index), []).append(index)
    # Ties go to the key declared first (the order of first declaration).
    counts.pop(UNDECLARED, None)
    hot = sorted(counts.items(), key=lambda item: (-item[1], owner[item[0]]))[:HOT_KEYS_MAX]
    return Plan(list(groups.values()), hot, keys, undeclared)


def compute_assignment(
    plan: Plan, workers: int, to_check: Sequence[int]
) -> list[tuple[list[int], list[int]]]:
    """Per worker: (indices to execute, indices whose signature to check).

    Components go largest first to the worker with the least execution; then the
    signature checks in ``to_check`` fill every worker up to an equal total cost,
    so a block whose transactions all conflict still checks its signatures on
    every worker.
    """
    executes: list[list[int]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for component in sorted(plan.components, key=len, reverse=True):
        job = loads.index(min(loads))
        executes[job].extend(component)
        loads[job] += EXECUTION_COST * len(component)
    for indices in executes:
        indices.sort()
    share = (sum(loads) + SIGNATURE_COST * len(to_check)) / workers
    checks: list[list[int]] = []
    position = 0
    for job in range(workers):
        room = max(0, round((share - loads[job]) / SIGNATURE_COST))
        if job == workers - 1:
            room = len(to_check) - position
        checks.append(list(to_check[position : position + room]))
        position += len(checks[-1])
    if position < len(to_check):  # rounding: the last worker takes the rest
        checks[-1].extend(to_check[position:])
    return [(e, c) for e, c in zip(executes, checks, strict=True)]


def make_jobs(
    params: ShardParams,
    view: StateReader,
    txs: Sequence[SignedTx],
    plan: Plan,
    assignment: Sequence[tuple[Sequence[int], Sequence[int]]],
    known_bad: Iterable[int] = (),
    *,
    leaves: bool = False,
) -> list[Job]:
    bad = sorted(set(known_bad))
    jobs: list[Job] = []
    for execute_indices, check_indices in assignment:
        executed, checked = set(execute_indices), set(check_indices)
        indices = sorted(executed | checked)
        snapshot: dict[bytes, bytes | None] = {}
        for index in execute_indices:
            for key in plan.keys[index]:
                if key not in snapshot:
                    snapshot[key] = view.get(key)
        jobs.append(
            Job(
                chain_id=params.chain_id,
                shard=params.shard,
                num_shards=params.num_shards,
                indices=indices,
                txs=[txs[i] for i in indices],
                verify=[i in checked for i in indices],
                execute=[i in executed for i in indices],
                known_bad=[i for i in bad if i in executed],
                snapshot=list(snapshot.items()),
                leaves=leaves,
                height=params.height,
            )
        )
    return jobs


def make_signature_jobs(
    params: ShardParams, txs: Sequence[SignedTx], chunks: Sequence[Sequence[int]]
) -> list[Job]:
    """Signature checks only: job k checks ``chunks[k]``."""
    return [
        Job(
            params.chain_id,
            params.shard,
            params.num_shards,
            list(chunk),
            [txs[i] for i in chunk],
            [True] * len(chunk),
            [False] * len(chunk),
            [],
            [],
        )
        for chunk in chunks
    ]

