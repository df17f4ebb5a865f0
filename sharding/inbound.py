"""The inbound pool: proven receipts of other shards waiting to be applied here
(docs/PROTOCOL.md section 5).

Per source shard (channel), receipts by sequence number. Only receipts whose
evidence verified enter (``sharding.crossshard``), so the pool never holds a
fabricated receipt; a receipt at or below the channel's cursor is stale and never
enters again. The proposer takes, per channel, the run that follows the cursor
without a gap, within a per-block budget shared fairly between channels. A pool
whose lowest receipt of a channel sits above ``cursor + 1`` has a gap; the node
asks the source shard for the missing range (``get_gaps``).

Pure and single-threaded: the node owns it on its event loop. Time is an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sharding.crossshard import ProvenReceipt

INBOUND_RECEIPTS_MAX = 200_000

CursorOf = Callable[[int], int]  # source shard -> last seq applied here


@dataclass(frozen=True, slots=True)
class Pooled:
    item: ProvenReceipt
    arrived_ms: int


@dataclass(slots=True)
class AddResult:
    added: int = 0
    duplicate: int = 0  # already pooled
    stale: int = 0  # at or below the cursor: applied before
    full: int = 0  # refused for space (the source serves it again on request)


class InboundPool:
    def __init__(self, receipts_max: int = INBOUND_RECEIPTS_MAX) -> None:
        self.receipts_max = receipts_max
        self._channels: dict[int, dict[int, Pooled]] = {}
        self._known: dict[int, int] = {}  # source -> highest seq ever seen
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, items: Iterable[ProvenReceipt], cursor_of: CursorOf, now_ms: int) -> AddResult:
        result = AddResult()
        for item in items:
            src, seq = item.channel_seq
            self._known[src] = max(self._known.get(src, 0), seq)
            channel = self._channels.setdefault(src, {})
            if seq <= cursor_of(src):
                result.stale += 1
            elif seq in channel:
                result.duplicate += 1
            elif self._size >= self.receipts_max and not self._makes_room(src, seq, cursor_of):
                result.full += 1
            else:
                channel[seq] = Pooled(item, now_ms)
                self._size += 1
                result.added += 1
        return result

    def _makes_room(self, src: int, seq: int, cursor_of: CursorOf) -> bool:
        """A full pool keeps what can be applied soonest: evict the highest sequence of
        the longest channel when the newcomer sits below it."""
        longest = max(self._channels, key=lambda s: len(self._channels[s]))
        channel = self._channels[longest]
        top = max(channel)
        if longest == src and top < seq:
            return False
        del channel[top]
        self._size -= 1
        return True

    def select(self, cursor_of: CursorOf, budget: int) -> list[ProvenReceipt]:
        """What a proposer includes: per channel, the gap-free run after the cursor;
        the budget split round-robin between channels; grouped by source, ascending."""
        runs: dict[int, list[ProvenReceipt]] = {}
        for src in sorted(self._channels):
            channel = self._channels[src]
            seq = cursor_of(src) + 1
            run: list[ProvenReceipt] = []
            while seq in channel and len(run) < budget:
                run.append(channel[seq].item)
                seq += 1
            if run:
                runs[src] = run
        taken = {src: 0 for src in runs}
        left = budget
        while left > 0:
            progressed = False
            for src, run in runs.items():
                if left > 0 and taken[src] < len(run):
                    taken[src] += 1
                    left -= 1
                    progressed = True
            if not progressed:
                break
        return [item for src, run in runs.items() for item in run[: taken[src]]]

    def prune(self, cursor_of: CursorOf) -> int:
        """Drop what has been applied (after a commit); return how many."""
        removed = 0
        for src, channel in self._channels.items():
            cursor = cursor_of(src)
            for seq in [s for s in channel if s <= cursor]:
                del channel[seq]
                removed += 1
        self._size -= removed
        return removed

    def get_gaps(self, cursor_of: CursorOf) -> dict[int, tuple[int, int]]:
        """Per channel with a hole: the first missing sequence range (first, last) after
        the cursor, below a receipt the pool holds."""
        gaps = {}
        for src, channel in sorted(self._channels.items()):
            if not channel:
                continue
            first = self.get_run_end(src, cursor_of(src)) + 1
            above = [seq for seq in channel if seq > first]
            if above:
                gaps[src] = (first, min(above) - 1)
        return gaps

    def get_run_end(self, src: int, cursor: int) -> int:
        """The last sequence of the gap-free run the pool holds after ``cursor``
        (``cursor`` itself when the next one is missing)."""
        channel = self._channels.get(src, {})
        seq = cursor
        while seq + 1 in channel:
            seq += 1
        return seq

    def oldest_ready_ms(self, cursor_of: CursorOf) -> int | None:
        """Arrival time of the oldest receipt that could be applied now (the liveness
        timer: a primary that sits on applicable receipts is replaced)."""
        oldest = None
        for src, channel in self._channels.items():
            head = channel.get(cursor_of(src) + 1)
            if head is not None and (oldest is None or head.arrived_ms < oldest):
                oldest = head.arrived_ms
        return oldest

    def ready(self, cursor_of: CursorOf) -> bool:
        return any(cursor_of(src) + 1 in channel for src, channel in self._channels.items())

    def known_seq(self, src: int) -> int:
        """The highest sequence of ``src`` this node has seen proven (applied or not)."""
        return self._known.get(src, 0)

    def pooled(self, src: int) -> int:
        return len(self._channels.get(src, {}))
