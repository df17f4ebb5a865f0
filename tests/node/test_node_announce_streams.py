"""Block announcements travel over the message streams (``CHANNEL_ANNOUNCE``), from a
block's proposer to the nodes of the other shards only; nothing is gossiped. Two
shards of four validators on in-memory parts, one asyncio loop."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from consensus.kernel.codec import decode, encode
from node.config import parse_config
from node.node import Node
from node.p2p.config import peer_id_from_public_key
from node.p2p.memory import MemoryNetwork, MemoryP2P
from node.parts import NodeParts, SystemClock, inline_offload, sequential_executor
from node.store.memory import MemoryStore
from node.wire import CHANNEL_ANNOUNCE, BlockAnnouncement
from sharding.accounts import derive_account, shard_of
from sharding.genesis import load_genesis, make_genesis_dict
from sharding.tx import Transfer, TxBody, sign_tx

SHARDS, VALIDATORS = 2, 4


def make_nodes(tmp_path: Path) -> tuple[list[Node], list[tuple[int, str, int, bytes]]]:
    """The nodes, and a log of every send: (sender's shard, to peer, channel, data)."""
    genesis = load_genesis(make_genesis_dict(num_shards=SHARDS,
                                             validators_per_shard=VALIDATORS, accounts=8))
    keys = {(s, i): derive_account(f"validator-{s}", i)
            for s in range(SHARDS) for i in range(VALIDATORS)}
    peers = [peer_id_from_public_key(key.public_key) for key in keys.values()]
    network = MemoryNetwork()
    sent: list[tuple[int, str, int, bytes]] = []
    nodes = []
    for (shard, index), key in keys.items():
        config = parse_config(f"[node]\nshard = {shard}\nindex = {index}\n"
                              "[consensus]\nblock_interval_ms = 20\n", tmp_path)
        p2p = network.join(peer_id_from_public_key(key.public_key), peers)
        p2p.send_nowait = record(p2p, shard, sent)  # type: ignore[method-assign]
        parts = NodeParts(p2p=p2p, store=MemoryStore(), clock=SystemClock(),
                          executor=sequential_executor, offload=inline_offload,
                          rng=random.Random(shard * 10 + index), serve_http=False)
        nodes.append(Node(config, genesis, key, parts))
    return nodes, sent


def record(p2p: MemoryP2P, shard: int, sent: list[tuple[int, str, int, bytes]]):  # type: ignore[no-untyped-def]
    send = p2p.send_nowait

    def send_nowait(peer: str, channel: int, data: bytes) -> bool:
        sent.append((shard, peer, channel, data))
        return send(peer, channel, data)
    return send_nowait


def shard0_transfer(nonce: int) -> bytes:
    senders = [derive_account("load", i) for i in range(8)]
    local = [a for a in senders if shard_of(a.public_key, SHARDS) == 0]
    sender, recipient = local[0], local[1]
    return encode(sign_tx(sender, TxBody(chain_id="shardnet-local", sender=sender.public_key,
                                         nonce=nonce, call=Transfer(recipient.public_key, 0, 5))))


async def run(nodes: list[Node]) -> tuple[int, list[dict[int, int]]]:
    for node in nodes:
        await node.start()
    try:
        (result,) = await nodes[0].service.submit_txs([shard0_transfer(0)])
        assert result.accepted
        events = nodes[1].service.subscribe_blocks()
        async with asyncio.timeout(20):
            async for event in events:
                if event["height"] >= 1:
                    break
        height = nodes[1].service.status()["height"]

        async def tips_known() -> None:
            while any(node.service.shard_tips.get(0, 0) < height for node in nodes):
                await asyncio.sleep(0.01)  # polling a condition, bounded below
        await asyncio.wait_for(tips_known(), 20)
        return height, [dict(node.service.shard_tips) for node in nodes]
    finally:
        for node in nodes:
            await node.stop()


def test_the_proposer_announces_to_the_other_shard_over_streams_not_gossip(
        tmp_path: Path) -> None:
    nodes, sent = make_nodes(tmp_path)
    height, tips = asyncio.run(run(nodes))
    assert height >= 1
    assert all(t[0] >= height for t in tips)  # shard 0's tip: its own nodes and shard 1's
    assert all(node.p2p.gossip_published == 0 for node in nodes)  # type: ignore[attr-defined]
    shard1_peers = {node.p2p.peer_id for node in nodes[VALIDATORS:]}
    announced = [(shard, peer, decode(data, BlockAnnouncement, 256 * 1024))
                 for shard, peer, channel, data in sent if channel == CHANNEL_ANNOUNCE]
    assert announced
    # Only shard 0 committed blocks; each announcement went to a node of shard 1,
    # from its block's proposer (node 0, the primary of view 0), once per node.
    assert {shard for shard, _, _ in announced} == {0}
    assert {peer for _, peer, _ in announced} == shard1_peers
    first = [(peer, note) for _, peer, note in announced if note.height == 1]
    assert sorted(peer for peer, _ in first) == sorted(shard1_peers)
    assert all(note.out_seqs == (0, 0) for _, note in first)  # no receipts to shard 1
