"""A node made of parts (``node/parts.py``): four validators of one shard run on
in-memory p2p and stores, with every offloaded call inline, in one asyncio loop.
This is the contract the whole-network simulator builds on."""

from __future__ import annotations

import asyncio
import random
import re
import threading
from pathlib import Path

from consensus.kernel.codec import encode
from node.config import parse_config
from node.node import Node
from node.p2p.config import peer_id_from_public_key
from node.p2p.memory import MemoryNetwork
from node.parts import NodeParts, SystemClock, inline_offload, sequential_executor
from node.store.memory import MemoryStore
from sharding.accounts import derive_account
from sharding.genesis import load_genesis, make_genesis_dict
from sharding.tx import Transfer, TxBody, sign_tx

VALIDATORS = 4


def make_nodes(tmp_path: Path) -> list[Node]:
    genesis = load_genesis(make_genesis_dict(num_shards=1, validators_per_shard=VALIDATORS,
                                             accounts=4))
    keys = [derive_account("validator-0", i) for i in range(VALIDATORS)]
    peers = [peer_id_from_public_key(key.public_key) for key in keys]
    network = MemoryNetwork()
    nodes = []
    for index, key in enumerate(keys):
        config = parse_config(f"[node]\nshard = 0\nindex = {index}\n"
                              "[consensus]\nblock_interval_ms = 20\n", tmp_path)
        parts = NodeParts(p2p=network.join(peers[index], peers), store=MemoryStore(),
                          clock=SystemClock(), executor=sequential_executor,
                          offload=inline_offload, rng=random.Random(index), serve_http=False)
        nodes.append(Node(config, genesis, key, parts))
    return nodes


async def submit_and_commit(nodes: list[Node]) -> tuple[bool, str, int]:
    for node in nodes:
        await node.start()
    try:
        sender, recipient = derive_account("load", 0), derive_account("load", 1)
        tx = sign_tx(sender, TxBody(chain_id="shardnet-local", sender=sender.public_key,
                                    nonce=0, call=Transfer(recipient.public_key, 0, 5)))
        events = nodes[2].service.subscribe_blocks()
        (result,) = await nodes[1].service.submit_txs([encode(tx)])
        assert result.tx_hash is not None
        digest = result.tx_hash.hex()
        async with asyncio.timeout(20):
            async for event in events:
                if digest in event["txs"]:
                    break
        status = await nodes[2].service.tx_status(result.tx_hash)
        assert status is not None
        assert b"shardnet_txs_committed_total" in nodes[2].service.metrics_text()
        return result.accepted, status["status"], nodes[2].service.status()["height"]
    finally:
        for node in nodes:
            await node.stop()


def test_a_transfer_submitted_through_the_service_commits_on_memory_parts(
        tmp_path: Path) -> None:
    before = set(threading.enumerate())  # earlier tests' threads may end meanwhile
    accepted, status, height = asyncio.run(submit_and_commit(make_nodes(tmp_path)))
    assert accepted
    assert status == "finalized"  # committed on node 2 too; no receipts to follow
    assert height >= 1
    left = [t.name for t in threading.enumerate() if t not in before]
    assert left == []  # nothing ran off the loop's thread, nothing left running


def transfer(nonce: int) -> bytes:
    sender, recipient = derive_account("load", 0), derive_account("load", 1)
    return encode(sign_tx(sender, TxBody(chain_id="shardnet-local", sender=sender.public_key,
                                         nonce=nonce, call=Transfer(recipient.public_key, 0, 5))))


async def wait_height(node: Node, height: int) -> None:
    events = node.service.subscribe_blocks()
    if node.service.status()["height"] >= height:
        return
    async with asyncio.timeout(20):
        async for event in events:
            if event["height"] >= height:
                return


async def cut_off_then_heal(nodes: list[Node]) -> tuple[int, int, bytes]:
    network = nodes[0].p2p.network  # type: ignore[attr-defined]
    late = nodes[3]
    for node in nodes:
        await node.start()
    try:
        for other in nodes[:3]:
            network.cut(late.p2p.peer_id, other.p2p.peer_id)
        for nonce in range(3):  # three blocks without the cut-off replica (f = 1)
            (result,) = await nodes[0].service.submit_txs([transfer(nonce)])
            assert result.accepted
            await wait_height(nodes[0], nonce + 1)
        behind = late.service.status()["height"]
        for other in nodes[:3]:
            network.heal(late.p2p.peer_id, other.p2p.peer_id)
        (result,) = await nodes[0].service.submit_txs([transfer(3)])  # its PRE-PREPARE
        assert result.accepted  # tells the late replica it is behind
        await wait_height(late, 4)
        return behind, late.service.status()["height"], late.service.metrics_text()
    finally:
        for node in nodes:
            await node.stop()


def test_a_replica_cut_off_catches_up_by_block_sync(tmp_path: Path) -> None:
    behind, caught_up, metrics = asyncio.run(cut_off_then_heal(make_nodes(tmp_path)))
    assert behind == 0 and caught_up >= 4
    synced = re.search(rb"^shardnet_sync_blocks_total (\S+)$", metrics, re.MULTILINE)
    assert synced is not None and float(synced[1]) >= 3  # the blocks it missed came by sync
