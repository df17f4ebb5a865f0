"""Helpers for the p2p tests: condition waits, plus the shared peer-process helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from scripts.bench.p2p_procs import Child, child_spec, free_port, make_configs, seed

__all__ = ["Child", "child_spec", "free_port", "make_configs", "seed", "wait_for"]


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``condition()`` holds (checked every 20 ms), at most ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
