"""A raw py-libp2p client that writes bytes of our choosing onto a shardnet stream.

``python -m tests.support.p2p_garbage_client MULTIADDR/p2p/PEER_ID PROTOCOL HEX...`` connects,
then for each HEX opens a stream on PROTOCOL, writes the bytes and waits (at most 10 s)
for the other side to close or reset the stream. Prints one JSON line:
``{"closed_by_peer": [bool, ...]}``.
"""

from __future__ import annotations

import json
import sys

import multiaddr
import trio
from libp2p import new_host
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr


async def main(target: str, protocol: str, payloads: list[bytes]) -> None:
    host = new_host()
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
    trio.run(main, sys.argv[1], sys.argv[2], [bytes.fromhex(h) for h in sys.argv[3:]])
