"""A peer's send queue under userspace network emulation (:mod:`node.p2p.shaping`)."""

from __future__ import annotations

import threading
from collections import deque

import trio

from node.p2p.sessions import OutQueue, SendBudget, WriteBatch
from node.p2p.shaping import Due, LinkShaper


class ShapedOutQueue(OutQueue):
    """A peer's send queue whose frames and PINGs are stamped with when they reach the
    peer; ``take`` returns only frames that are due, in order, else :class:`Due` (the
    head's time) for the writer to wait for."""

    def __init__(self, frames_max: int, bytes_max: int, budget: SendBudget | None = None,
                 *, shaper: LinkShaper) -> None:
        super().__init__(frames_max, bytes_max, budget)
        self.shaper = shaper
        self.stamp_lock = threading.Lock()  # a put and its stamp, as one
        self.dues: deque[float] = deque()  # of self.frames, in order
        self.control_dues: deque[tuple[float, bytes]] = deque()

    def put(self, channel: int, frame: bytes) -> bool:
        with self.stamp_lock:
            if not super().put(channel, frame):
                return False
            self.dues.append(self.shaper.due(len(frame)))
            return True

    def put_control(self, frame: bytes) -> None:
        with self.stamp_lock:
            self.control_dues.append((self.shaper.due(len(frame)), frame))
        with self.lock:
            wake = not self.wake_pending
            self.wake_pending = True
        if wake:
            self._wake()

    def take(self, bytes_max: int) -> WriteBatch | trio.Event | Due:  # type: ignore[override]
        with self.stamp_lock:
            now = self.shaper.clock()
            ready_control: list[bytes] = []
            while self.control_dues and self.control_dues[0][0] <= now:
                ready_control.append(self.control_dues.popleft()[1])
            limit = sum(len(frame) for frame in ready_control)
            due_frames = 0
            with self.lock:
                for stamp, queued in zip(self.dues, self.frames, strict=False):
                    if stamp > now or limit >= bytes_max:
                        break
                    due_frames += 1
                    limit += len(queued.frame)
                self.control.extend(ready_control)
            if not ready_control and not due_frames:
                heads = ([self.dues[0]] if self.dues else []) + (
                    [self.control_dues[0][0]] if self.control_dues else [])
                if heads:
                    return Due(min(heads))
                return super().take(bytes_max)  # empty: the event of the next put
            # The base takes control frames, then data frames up to ``limit``: the due.
            batch = super().take(limit)
            for _ in range(due_frames):
                self.dues.popleft()
            return batch
