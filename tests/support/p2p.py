"""Helpers for the p2p tests: condition waits, plus the shared peer-process helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from scripts.bench.p2p_procs import Child, child_spec, free_port, make_configs, seed

__all__ = ["Child", "child_spec", "free_port", "make_configs", "probe_protocols", "seed",
           "wait_for"]


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``condition()`` holds (checked every 20 ms), at most ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def probe_protocols(target: str, probes: list[tuple[str, bytes]],
                    seed_bytes: bytes | None = None, wait_s: float = 5.0) -> list[str]:
    """(blocking: run it in a thread) Connect a raw py-libp2p host to ``target``
    (``.../p2p/PEER_ID``), with a fresh random key (a stranger) unless ``seed_bytes``
    is given, and for each (protocol, bytes) open a stream, write the bytes and read
    (streams stay open until the end). Outcome of each: ``answered`` (bytes came back),
    ``open`` (nothing in ``wait_s``) or ``refused`` (the connection, the stream or its
    negotiation failed, or the stream was reset or closed with nothing read)."""
    import multiaddr
    import trio
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    async def probe(host: Any, peer_id: Any, protocol: str, payload: bytes) -> str:
        try:
            with trio.fail_after(wait_s):
                stream = await host.new_stream(peer_id, [TProtocol(protocol)])
                if payload:
                    await stream.write(payload)
        except Exception:
            return "refused"
        with trio.move_on_after(wait_s):
            try:
                data = await stream.read(1024)
            except Exception:
                return "refused"
            return "answered" if data else "refused"
        return "open"

    async def main() -> list[str]:
        key_pair = create_new_key_pair(seed_bytes) if seed_bytes is not None else None
        host = new_host(key_pair=key_pair)
        info = info_from_p2p_addr(multiaddr.Multiaddr(target))
        outcomes: list[str] = []
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            try:
                with trio.fail_after(wait_s):
                    await host.connect(info)
            except Exception:
                return ["refused"] * len(probes)
            for protocol, payload in probes:
                outcomes.append(await probe(host, info.peer_id, protocol, payload))
            await host.close()
        return outcomes

    return trio.run(main)
