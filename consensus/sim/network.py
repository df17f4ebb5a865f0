"""The simulators' faulty network: one seeded model of drops, delays, duplicates,
reordering, partitions, commit-loss windows and crashes on a simulated clock.

Shared by the PBFT simulator (``consensus/sim/simulator.py``) and the whole-network
simulator (``node/sim/faults.py``): the same seed draws the same faults in each.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from consensus.certificate import (
    PHASE_COMMIT,
)
from consensus.kernel.errors import DecodeError
from consensus.kernel.limits import OBSERVED_MESSAGE_BYTES_MAX
from consensus.messages import (
    CertNotice,
    Vote,
    decode_message,
)

NETWORK_FAULTS = ("drop", "delay", "duplicate", "reorder", "partition", "commit_loss", "crash")


class FaultyNetwork:
    """The simulated clock, event queue and network of a run, shared by the
    single-shard simulator here and the whole-network one (``node/sim/faults.py``).

    Node ids are opaque (an index here, ``(shard, index)`` there). Until ``healed``,
    a message may be cut by a partition or a commit-loss window, dropped, delayed,
    reordered or duplicated, each decided by the seeded ``rng`` in a fixed order
    (so a seed replays exactly). ``is_commit_news`` tells which messages a
    commit-loss window cuts.
    """

    def __init__(
        self,
        rng: random.Random,
        kinds: set[str],
        latency_ms: tuple[int, int],
        drop_p: float,
        dup_p: float,
        is_commit_news: Callable[[Any], bool],
    ) -> None:
        self.rng = rng
        self.kinds = kinds
        self.latency_ms = latency_ms
        self.drop_p = drop_p
        self.dup_p = dup_p
        self.is_commit_news = is_commit_news
        self.now = 0
        self.healed = False
        self.queue: list[tuple[int, int, str, Any]] = []
        self.seq = 0
        self.faults: Counter[str] = Counter()
        self.partition: list[set[Any]] | None = None
        self.commit_loss: Any = None  # the one node that still hears commit news

    def push(self, at: int, kind: str, data: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, data))

    def pop(self) -> tuple[int, str, Any]:
        at, _, kind, data = heapq.heappop(self.queue)
        self.now = at
        return at, kind, data

    def send(self, src: Any, dst: Any, data: Any) -> None:
        """Deliver ``data`` later as a ``"deliver"`` event ``(src, dst, data)``, or not."""
        for delay in self.route(src, dst, data):
            self.push(self.now + delay, "deliver", (src, dst, data))

    def route(self, src: Any, dst: Any, data: Any) -> list[int]:
        """The delay in ms of each copy of ``data`` that arrives: none when it is cut
        or dropped, two when duplicated. Also what the whole-network simulator
        (``node/sim``) asks for each message of its in-memory network."""
        rng = self.rng
        faulty = not self.healed
        if (
            faulty
            and self.partition is not None
            and not any(src in g and dst in g for g in self.partition)
        ):
            self.faults["partition_drop"] += 1
            return []
        if (
            faulty
            and self.commit_loss is not None
            and dst != self.commit_loss
            and self.is_commit_news(data)
            and rng.random() < 0.9
        ):
            self.faults["commit_loss"] += 1
            return []
        if faulty and self.drop_p and rng.random() < self.drop_p:
            self.faults["drop"] += 1
            return []
        delay = rng.randint(*self.latency_ms)
        if faulty and "delay" in self.kinds and rng.random() < 0.1:
            delay += rng.randint(50, 600)
            self.faults["delay"] += 1
        if faulty and "reorder" in self.kinds and rng.random() < 0.2:
            delay += rng.randint(0, 40)
            self.faults["reorder"] += 1
        delays = [delay]
        if faulty and self.dup_p and rng.random() < self.dup_p:
            self.faults["duplicate"] += 1
            delays.append(delay + rng.randint(0, 100))
        return delays

    def schedule_faults(self, nodes: Sequence[Any], fault_ms: int) -> None:
        """Partition, commit-loss and crash windows within the fault phase, then the
        ``"heal"`` event. A window names its node(s); the shell carries it out."""
        rng = self.rng
        if "partition" in self.kinds:
            for _ in range(rng.randint(1, 3)):
                start = rng.randrange(fault_ms)
                self.push(start, "partition", rng.randint(200, 1200))
        if "commit_loss" in self.kinds:
            for _ in range(rng.randint(1, 3)):
                start = rng.randrange(fault_ms)
                lucky = nodes[rng.randrange(len(nodes))]
                self.push(start, "commit_loss", (lucky, rng.randint(100, 800)))
        if "crash" in self.kinds:
            for _ in range(rng.randint(1, 2)):
                start = rng.randrange(fault_ms)
                victim = nodes[rng.randrange(len(nodes))]
                self.push(start, "crash", (victim, rng.randint(50, 1000)))
        self.push(fault_ms, "heal", None)

    def start_partition(self, nodes: Sequence[Any], duration: int) -> None:
        """Split ``nodes`` in two random groups for ``duration`` ms (not once healed)."""
        if self.healed:
            return
        members = list(nodes)
        self.rng.shuffle(members)
        cut = self.rng.randint(1, len(members) - 1)
        self.partition = [set(members[:cut]), set(members[cut:])]
        self.faults["partition"] += 1
        self.push(self.now + duration, "unpartition", None)

    def start_commit_loss(self, lucky: Any, duration: int) -> None:
        """For a while, COMMITs and CERT notices reach only ``lucky``: the window in
        which a block is committed somewhere while the others change view."""
        if self.healed:
            return
        self.commit_loss = lucky
        self.push(self.now + duration, "commit_loss_end", None)

    def heal(self) -> None:
        self.healed = True
        self.partition = None
        self.commit_loss = None


def is_commit_news(data: bytes) -> bool:
    try:
        msg = decode_message(data, OBSERVED_MESSAGE_BYTES_MAX)
    except DecodeError:
        return False
    return isinstance(msg, CertNotice) or (isinstance(msg, Vote) and msg.phase == PHASE_COMMIT)
