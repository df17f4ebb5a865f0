"""Fakes for running the chaos runner without real nodes: a fake node (the load
tests' ``FakeNode``) whose blocks carry a hash and a header time and whose block
production a fake node control can halt, so each check can be made to fail on purpose."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from scripts.cli.testnet.control import ControlResult, resolve
from tests.support.load import FakeNode


@dataclass
class HaltableNode(FakeNode):
    """Blocks as the node's API gives them (hash, time_ms); none while ``halted``."""

    halted: bool = False

    async def produce(self) -> None:
        while True:
            await asyncio.sleep(self.block_interval_s)
            if self.halted:
                continue
            ready = self._ready()
            first = [d for d in ready if d not in self.lost]
            for batch in (first, [d for d in first if d in self.doubled]):
                if not batch:
                    continue
                height = len(self.blocks) + 1
                block = {"shard": 0, "height": height, "txs": batch, "inbound_origins": [],
                         "failed": [], "time_ms": int(time.time() * 1000),
                         "hash": hashlib.sha256(f"{height}:{batch}".encode()).hexdigest()}
                self.blocks.append(block)
                for digest in batch:
                    self.committed.setdefault(digest, height)
                for queue in self.subscribers:
                    queue.put_nowait(block)


@dataclass
class FakeControl:
    """Node control over the fake: killing any node halts block production (as if the
    shard lost its quorum); starting it again resumes it. Every call is recorded."""

    node: HaltableNode
    backend: str = "fake"
    calls: list[tuple[str, str]] = field(default_factory=list)
    halts: bool = True

    def names(self) -> list[str]:
        return [f"shard0-node{i}" for i in range(4)]

    def state(self, name: str) -> Any:
        return "running"

    def api_url(self, name: str) -> str | None:
        return self.node.url

    def _verb(self, verb: str, node: str, halted: bool | None) -> ControlResult:
        name = resolve(self.names(), node)
        self.calls.append((verb, name))
        if halted is not None and self.halts:
            self.node.halted = halted
        return ControlResult(verb, name, self.backend, "running", "running", True)

    def start(self, node: str) -> ControlResult:
        return self._verb("start", node, False)

    def stop(self, node: str, timeout_s: float = 0) -> ControlResult:
        return self._verb("stop", node, True)

    def kill(self, node: str) -> ControlResult:
        return self._verb("kill", node, True)

    def restart(self, node: str, timeout_s: float = 0) -> ControlResult:
        return self._verb("restart", node, None)

    def pause(self, node: str) -> ControlResult:
        return self._verb("pause", node, True)

    def resume(self, node: str) -> ControlResult:
        return self._verb("resume", node, False)

    def disconnect(self, node: str) -> ControlResult:
        return self._verb("disconnect", node, None)

    def connect(self, node: str) -> ControlResult:
        return self._verb("connect", node, None)
