"""Virtual time for the whole-network simulation (FoundationDB's simulated clock).

:class:`VirtualTimeLoop` is an asyncio event loop whose ``time()`` is a number the
loop itself advances: when no callback is ready, time jumps to the next timer instead
of waiting for it. A run never sleeps, and with one thread, inline executors and no
sockets, the same program gives the same order of callbacks every time.

:class:`SimClock` is the node's clock part (``node.parts.Clock``) over that time.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

START_S = 1000.0  # the loop's first time(); any positive value
WALL_EPOCH_MS = 1_700_000_000_000  # what the wall clock reads at virtual time 0
# Turns of the loop without time passing before a run is declared stuck: code that
# polls a clock in a loop (busy-waits) never sees virtual time move.
SPINS_MAX = 100_000


class SimulationStuck(RuntimeError):
    """Nothing ready and no timer scheduled (the run would wait forever), or the loop
    turning without time passing (something busy-waits on the clock)."""


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Polls the real file descriptors (only the loop's own wake-up pipe in a run)
    without blocking; where the loop would wait, it moves virtual time instead: to
    the next timer exactly (``next_timer``), so a timer never fires a hair early."""

    def __init__(self, next_timer: Callable[[], float | None]) -> None:
        super().__init__()
        self.now_s = START_S
        self.spins = 0  # turns of the loop since time last moved
        self._next_timer = next_timer

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        events: list[tuple[Any, int]] = super().select(0)
        if events or timeout == 0:
            self.spins += 1
            if self.spins > SPINS_MAX:
                raise SimulationStuck(f"busy loop: {SPINS_MAX} turns of the loop at "
                                      f"{self.now_s:.6f} s without time passing")
            return events
        self.spins = 0
        if timeout is None:
            raise SimulationStuck("no callback ready and no timer scheduled")
        when = self._next_timer()
        self.now_s = max(self.now_s, when) if when is not None else self.now_s + timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``time()`` is virtual; everything else is the standard selector loop."""

    _scheduled: list[asyncio.TimerHandle]

    def __init__(self) -> None:
        self._virtual = _VirtualSelector(self._next_timer)
        super().__init__(self._virtual)

    def _next_timer(self) -> float | None:
        return self._scheduled[0].when() if self._scheduled else None

    def time(self) -> float:
        return self._virtual.now_s


class SimClock:
    """The node's clock part read from the running loop's (virtual) time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def monotonic_ms(self) -> int:
        return int(self._loop.time() * 1000)

    def wall_ms(self) -> int:
        return WALL_EPOCH_MS + int((self._loop.time() - START_S) * 1000)


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh virtual-time loop; then cancel what is
    left (background tasks of stopped nodes) and close the loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            loop._virtual.spins = 0
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
