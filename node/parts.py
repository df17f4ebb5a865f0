"""What a node is made of: the parts it receives instead of building them.

``Node`` (``node/main.py``) takes a ``NodeParts``: the p2p endpoint, the store, the
clock, block execution, the thread pools it offloads CPU work to, a seeded random
source and whether to serve HTTP. Production parts (libp2p, SQLite, worker
processes, one thread per pool) come from ``build_production_parts``; a simulation
gives ``MemoryP2P``, ``MemoryStore``, a simulated clock, ``sequential_executor``
and ``inline_offload`` so that a whole network runs on one thread of one loop.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar

from node.executor_pool import make_executor
from node.p2p.api import P2PAPI
from node.store import StoreAPI
from sharding.parallel import ParallelExecutor, StatsSink

_P = ParamSpec("_P")
_T = TypeVar("_T")

OFFLOAD_POOLS = ("ledger", "admission", "relay")


class Clock(Protocol):
    """Every time the node reads. ``monotonic_ms`` orders and times events (timers,
    expiry, rates); ``wall_ms`` is what goes into block headers and latencies
    measured against them."""

    def monotonic_ms(self) -> int: ...

    def wall_ms(self) -> int: ...


class SystemClock:
    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


class InlineExecutor(Executor):
    """Runs each call at once in the caller: offloaded work stays on the loop's
    thread, in submission order (the simulator's deterministic offload)."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
               ) -> Future[_T]:
        future: Future[_T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


Offload = Callable[[str], Executor]
"""Called once per pool name (``OFFLOAD_POOLS``); the node shuts each down on stop."""


def thread_offload(name: str) -> Executor:
    """Production: one thread per pool (ledger work is serial; admission and relay
    work must not wait behind a block)."""
    return ThreadPoolExecutor(1, thread_name_prefix=name)


def inline_offload(name: str) -> Executor:
    return InlineExecutor()


class BlockExecution(Protocol):
    """Block execution for the ledger: ``(executor or None for the sequential spec,
    close)``; ``on_stats`` receives each block's telemetry."""

    def __call__(self, on_stats: StatsSink) -> tuple[ParallelExecutor | None,
                                                     Callable[[], None]]: ...


def process_executor(workers: int) -> BlockExecution:
    """Production: ``[executor] workers`` worker processes (``node/executor_pool.py``)."""

    def build(on_stats: StatsSink) -> tuple[ParallelExecutor | None, Callable[[], None]]:
        executor, pool = make_executor(workers, on_stats=on_stats)
        return executor, (pool.close if pool is not None else _nothing)

    return build


def sequential_executor(on_stats: StatsSink) -> tuple[ParallelExecutor | None,
                                                      Callable[[], None]]:
    """Simulation: the sequential spec in the caller (no telemetry)."""
    return None, _nothing


def _nothing() -> None:
    return None


@dataclass(slots=True)
class NodeParts:
    p2p: P2PAPI
    """Peer ids are ``node.p2p.config.peer_id_from_public_key`` of genesis keys."""
    store: StoreAPI
    """Open; the node initialises it from genesis or resumes from it, and closes it."""
    clock: Clock
    executor: BlockExecution
    offload: Offload
    rng: random.Random
    serve_http: bool
