"""A raw py-libp2p client that writes bytes of our choosing onto a shardnet stream.

``python -m tests.support.p2p_garbage_client MULTIADDR/p2p/PEER_ID PROTOCOL HEX...`` connects,
then for each HEX opens a stream on PROTOCOL, writes the bytes and waits (at most 10 s)
for the other side to close or reset the stream. Prints one JSON line:
``{"closed_by_peer": [bool, ...]}``.

``--seed HEX`` first: connect with the key of that 32-byte seed (a configured peer of
the target, which refuses strangers); without it, with a fresh random key (a stranger).
"""

from __future__ import annotations

import json
import sys

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr


async def main(target: str, protocol: str, payloads: list[bytes], seed: bytes | None) -> None:
    host = new_host(key_pair=create_new_key_pair(seed) if seed is not None else None)
    info = info_from_p2p_addr(multiaddr.Multiaddr(target))
    results: list[bool] = []
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await host.connect(info)
        for payload in payloads:
            closed = False
            with trio.move_on_after(10):
                try:
                    # A refusing host may reset the stream before negotiation completes.
                    stream = await host.new_stream(info.peer_id, [TProtocol(protocol)])
                    await stream.write(payload)
                    while True:
                        await stream.read(1024)
                except Exception:  # reset or closed by the other side, before or after
                    closed = True
            results.append(closed)
        print(json.dumps({"closed_by_peer": results}), flush=True)
        await host.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    key_seed = None
    if args[0] == "--seed":
        key_seed, args = bytes.fromhex(args[1]), args[2:]
    trio.run(main, args[0], args[1], [bytes.fromhex(h) for h in args[2:]], key_seed)
