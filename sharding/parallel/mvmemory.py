"""Block-STM's multi-version memory (Gelashvili et al. 2022, arXiv 2203.06871,
section 3): per key, the value written by each transaction's latest incarnation,
keyed by (key, transaction index). Owned by the calling process (the scheduler):
the workers receive the values a transaction would read (``Task.snapshot``) and
return what they read and wrote. Pure and deterministic.

A read by transaction ``i`` sees the write of the highest index below ``i``, or
the block's base (``BASE`` version) when none wrote the key. An aborted
incarnation's writes become ESTIMATEs (incarnation ``ESTIMATE``): a reader of one
depends on a transaction that will run again.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable

from sharding.state import StateReader

ESTIMATE = -1  # the incarnation of an aborted write
BASE_WRITER = -1  # the writer index of a value read from the block's base
Version = tuple[int, int]  # (writer index, writer incarnation)
BASE: Version = (BASE_WRITER, 0)


class MVMemory:
    """Writes per key and transaction index, over ``base`` (the block's overlay after
    its inbound receipts: what transaction 0 sees)."""

    __slots__ = ("_base_values", "_values", "_writers", "_written", "base")

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self._base_values: dict[bytes, bytes | None] = {}
        self._writers: dict[bytes, list[int]] = {}  # key -> writer indices, ascending
        self._values: dict[tuple[bytes, int], tuple[int, bytes | None]] = {}
        self._written: dict[int, list[bytes]] = {}  # index -> keys of its latest write set

    def read_base(self, key: bytes) -> bytes | None:
        if key not in self._base_values:
            self._base_values[key] = self.base.get(key)
        return self._base_values[key]

    def read(self, key: bytes, index: int) -> tuple[Version, bytes | None]:
        """What transaction ``index`` reads: (version, value); the version's
        incarnation is ``ESTIMATE`` when its writer was aborted."""
        writers = self._writers.get(key)
        if writers:
            position = bisect_left(writers, index)
            if position:
                writer = writers[position - 1]
                incarnation, value = self._values[(key, writer)]
                return (writer, incarnation), value
        return BASE, self.read_base(key)

    def version(self, key: bytes, index: int) -> Version:
        return self.read(key, index)[0]

    def changed(self, index: int, reads: Iterable[tuple[bytes, int, int]]) -> list[bytes]:
        """The keys of ``reads`` (key, writer, incarnation) whose version for
        ``index`` is no longer the one read, or is an ESTIMATE (validation)."""
        writers_of, values = self._writers, self._values
        changed = []
        for key, writer, incarnation in reads:
            writers = writers_of.get(key)
            position = bisect_left(writers, index) if writers else 0
            if position:
                current = writers[position - 1]  # type: ignore[index]
                if (current != writer or incarnation == ESTIMATE
                        or values[(key, current)][0] != incarnation):
                    changed.append(key)
            elif writer != BASE_WRITER:
                changed.append(key)
        return changed

    def record(self, index: int, incarnation: int,
               writes: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Install an incarnation's write set; keys its previous incarnation wrote and
        this one does not are removed (Block-STM's ``record``)."""
        new: list[bytes] = []
        for key, value in writes:
            if (key, index) not in self._values:
                insort(self._writers.setdefault(key, []), index)
            self._values[(key, index)] = (incarnation, value)
            new.append(key)
        kept = set(new)
        for key in self._written.get(index, ()):
            if key not in kept:
                del self._values[(key, index)]
                writers = self._writers[key]
                writers.pop(bisect_left(writers, index))
        self._written[index] = new

    def clear(self, index: int) -> None:
        """Remove the writes of ``index`` (it is about to run again: what a reader
        sees meanwhile is what lies below it, and a reader of its old writes fails
        validation whatever the new incarnation writes)."""
        self.record(index, 0, ())

    def mark_estimates(self, index: int) -> None:
        """Abort: the writes of ``index``'s incarnation become ESTIMATEs."""
        for key in self._written.get(index, ()):
            self._values[(key, index)] = (ESTIMATE, self._values[(key, index)][1])

    def written(self, index: int) -> list[bytes]:
        return self._written.get(index, [])


class ExactReader:
    """What transaction ``index`` reads once every lower index is final: the
    calling process runs such a transaction itself (its result is the spec's)."""

    __slots__ = ("index", "memory", "reads")

    def __init__(self, memory: MVMemory, index: int) -> None:
        self.memory, self.index = memory, index
        self.reads: dict[bytes, Version] = {}

    def get(self, key: bytes) -> bytes | None:
        version, value = self.memory.read(key, self.index)
        self.reads.setdefault(key, version)
        return value
