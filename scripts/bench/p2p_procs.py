"""Local p2p peers for tests and benchmarks: free ports, configs, child processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from node.p2p.config import P2PConfig, PeerSpec, peer_id_from_seed

REPO = Path(__file__).resolve().parents[2]  # children run from the source tree


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(index: int) -> bytes:
    return bytes([index + 1]) * 32


def make_configs(n: int, **overrides: Any) -> list[P2PConfig]:
    """n fully meshed configs on 127.0.0.1 with free ports: each lists all the others,
    so each serves all the others (a host refuses peers it does not list)."""
    ports = [free_port() for _ in range(n)]
    ids = [peer_id_from_seed(seed(i)) for i in range(n)]
    return [
        P2PConfig(
            private_key_seed=seed(i),
            listen_host="127.0.0.1",
            listen_port=ports[i],
            peers=tuple(
                PeerSpec(address=f"127.0.0.1:{ports[j]}", peer_id=ids[j])
                for j in range(n)
                if j != i
            ),
            **overrides,
        )
        for i in range(n)
    ]


def child_spec(config: P2PConfig, **extra: Any) -> dict[str, Any]:
    """The JSON config of scripts/bench/p2p_peer.py for ``config``."""
    return {
        "seed": config.private_key_seed.hex(),
        "port": config.listen_port,
        "peers": [[spec.id, spec.address] for spec in config.peers],
        "topics": list(config.gossip_topics),
        "heartbeat_interval_s": config.heartbeat_interval_s,
        "heartbeat_timeout_s": config.heartbeat_timeout_s,
        "gossip_degree": config.gossip_degree,
        "gossip_degree_low": config.gossip_degree_low,
        "gossip_degree_high": config.gossip_degree_high,
        "accept_unknown_peers": config.accept_unknown_peers,
        **extra,
    }


class Child:
    """A child process speaking JSON lines; always killed (by pid) in ``close``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str, stderr_path: Path | None = None) -> Child:
        stderr: Any = asyncio.subprocess.DEVNULL
        if stderr_path is not None:
            stderr = stderr_path.open("ab")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            start_new_session=True,
        )
        if stderr_path is not None:
            stderr.close()  # the child holds its own copy
        return cls(proc)

    @classmethod
    async def peer(
        cls, spec: dict[str, Any], stderr_path: Path | None = None
    ) -> tuple[Child, dict[str, Any]]:
        child = await cls.start(
            "-m", "scripts.bench.p2p_peer", json.dumps(spec), stderr_path=stderr_path
        )
        try:
            ready = await child.read(30.0)
        except BaseException:
            await child.close()
            raise
        return child, ready

    async def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise AssertionError(f"child {self.proc.pid} exited ({self.proc.returncode})")
        result: dict[str, Any] = json.loads(line)
        return result

    async def command(self, timeout: float = 30.0, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read(timeout)

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, sig)

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
