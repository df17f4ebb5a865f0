"""A real 4-validator shard: separate node processes talking py-libp2p on 127.0.0.1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from consensus.kernel.crypto import VERIFY_BACKEND
from scripts.cli.client import ApiFailure, call
from tests.support.node import (
    LocalTestnet,
    local_testnet,
    signed_transfers,
    submit,
    tx_state,
    wait_until,
)

pytestmark = pytest.mark.integration


def committed_everywhere(net: LocalTestnet, names: list[str], hashes: list[str]) -> bool:
    urls = [net.node(name).api_url for name in names]
    return all(tx_state(url, digest) == "finalized" for url in urls for digest in hashes)


def roots_at(net: LocalTestnet, names: list[str], height: int) -> set[tuple[str, str]]:
    roots = set()
    for name in names:
        block = call("GET", f"{net.node(name).api_url}/v1/blocks/{height}")
        roots.add((block["hash"], block["state_root"]))
    return roots


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with local_testnet(tmp_path_factory.mktemp("net"), shards=2, start_shards=(0,)) as net:
        yield net


def test_transfers_commit_and_every_replica_holds_the_same_blocks(shard: LocalTestnet) -> None:
    names = [n.name for n in shard.shard_nodes(0)]
    raws, hashes = signed_transfers(60, shard=0, num_shards=2)
    answer = submit(shard.node(names[1]).api_url, raws)
    assert answer["accepted"] == 60
    wait_until(lambda: committed_everywhere(shard, names, hashes), 60, "commit on all four")
    height = min(shard.height(name) for name in names)
    assert len(roots_at(shard, names, height)) == 1


def test_api_rejects_malformed_body_with_400(shard: LocalTestnet) -> None:
    url = shard.node("shard0-node0").api_url
    request = urllib.request.Request(f"{url}/v1/txs", data=b"{nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 400
    assert json.loads(info.value.read())["error"] == "malformed"


def test_api_rejects_bad_signature(shard: LocalTestnet) -> None:
    raws, _ = signed_transfers(1, shard=0, num_shards=2, first_sender=50, senders=1)
    forged = raws[0][:-1] + bytes([raws[0][-1] ^ 1])
    with pytest.raises(ApiFailure) as info:
        call("POST", f"{shard.node('shard0-node0').api_url}/v1/txs", {"tx": forged.hex()})
    assert info.value.status == 400 and info.value.body["error"] == "bad_signature"


def test_api_rejects_wrong_shard(shard: LocalTestnet) -> None:
    raws, _ = signed_transfers(1, shard=1, num_shards=2)
    with pytest.raises(ApiFailure) as info:
        call("POST", f"{shard.node('shard0-node0').api_url}/v1/txs", {"tx": raws[0].hex()})
    assert info.value.status == 400 and info.value.body["error"] == "wrong_shard"


def test_api_rejects_oversized_body_with_413(shard: LocalTestnet) -> None:
    with pytest.raises(ApiFailure) as info:
        call("POST", f"{shard.node('shard0-node0').api_url}/v1/txs",
             {"tx": "00" * (5 * 1024 * 1024)})
    assert info.value.status == 413 and info.value.body["error"] == "oversized"


def test_api_rejects_used_nonce(shard: LocalTestnet) -> None:
    # Nonce 0 of the first sender was committed by the first test of this module.
    raws, _ = signed_transfers(1, shard=0, num_shards=2, start_nonce=0, senders=1)
    url = shard.node("shard0-node2").api_url
    wait_until(lambda: shard.height("shard0-node2") >= 1, 30, "a first block")
    with pytest.raises(ApiFailure) as info:
        call("POST", f"{url}/v1/txs", {"tx": raws[0].hex()})
    assert info.value.status == 400 and info.value.body["error"] == "wrong_nonce"


def p2p_drops(api_url: str) -> dict[str, float]:
    metrics = urllib.request.urlopen(f"{api_url}/metrics", timeout=5).read().decode()
    return {reason: float(value) for reason, value in re.findall(
        r'^shardnet_p2p_dropped_total\{reason="([^"]+)"\} ([0-9.e+]+)$', metrics, re.M)}


def run_garbage_client(*args: str) -> dict[str, list[bool]]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.p2p_garbage_client", *args],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    report: dict[str, list[bool]] = json.loads(result.stdout.splitlines()[-1])
    return report


def test_garbage_on_p2p_stream_is_dropped_and_counted(shard: LocalTestnet) -> None:
    node = shard.node("shard0-node3")
    status = shard.status(node.name)
    started = json.loads(next(line for line in shard.log_text(node.name).splitlines()
                              if '"node.started"' in line))
    # the signature path the node chose (same virtualenv and environment as this test)
    assert started["verify_backend"] == VERIFY_BACKEND
    peer_id = started["peer_id"]
    target = f"/ip4/127.0.0.1/tcp/{node.p2p_port}/p2p/{peer_id}"
    garbage = ["ff" * 64, "00000005" + "ab" * 5]
    # From a genesis validator (of shard 1, not running): the frames are read and refused.
    key = json.loads((shard.dir.home("shard1-node0") / "node_key.json").read_text())
    report = run_garbage_client("--seed", key["private_key"], target, "/shardnet/msg/1.0.0",
                                *garbage)
    assert report["closed_by_peer"] == [True, True]
    drops = p2p_drops(node.api_url)
    assert drops.get("frame_oversized", 0) + drops.get("frame_malformed", 0) >= 1
    # From a key outside genesis: refused before a byte is read (issue 14 finding 6).
    sync_request = "00000005" + "04" + "00" * 4  # a REQ frame
    report = run_garbage_client(target, "/shardnet/req/1.0.0", sync_request)
    assert report["closed_by_peer"] == [True]
    assert p2p_drops(node.api_url).get("unknown_peer", 0) >= 1
    assert shard.status(node.name)["height"] >= status["height"]


def test_killed_primary_triggers_view_change_and_commits_continue(shard: LocalTestnet) -> None:
    primary = shard.status("shard0-node1")["primary"]
    primary_name = f"shard0-node{primary}"
    shard.kill(primary_name)
    survivors = [n.name for n in shard.shard_nodes(0) if n.name != primary_name]
    raws, hashes = signed_transfers(20, shard=0, num_shards=2, first_sender=30, senders=10)
    submit(shard.node(survivors[0]).api_url, raws)
    wait_until(lambda: committed_everywhere(shard, survivors, hashes), 60,
               "commit after the primary died")
    assert all(shard.status(name)["view"] >= 1 for name in survivors)
    assert any('"pbft.view_change"' in shard.log_text(name) for name in survivors)
    # A second block while it is down: more than the one height a PRE-PREPARE's
    # piggybacked certificate covers, so catching up needs block sync.
    more_raws, more_hashes = signed_transfers(10, shard=0, num_shards=2, first_sender=30,
                                              senders=10, start_nonce=2)
    submit(shard.node(survivors[1]).api_url, more_raws)
    wait_until(lambda: committed_everywhere(shard, survivors, more_hashes), 60,
               "a second block while the old primary is down")
    # kill -9 at any moment, restart: it recovers from its database and catches up.
    down_at = max(int(json.loads(line)["height"]) for line in
                  shard.log_text(primary_name).splitlines() if '"block.committed"' in line)
    shard.start(primary_name)
    target = max(shard.height(name) for name in survivors)
    wait_until(lambda: shard.height(primary_name) >= target, 60, "restarted node catches up")
    assert len(roots_at(shard, [*survivors, primary_name], target)) == 1
    # It re-executed every block it missed (certified blocks, not copied state).
    replayed = {int(json.loads(line)["height"]) for line in
                shard.log_text(primary_name).splitlines() if '"block.committed"' in line}
    assert set(range(down_at + 1, target + 1)) <= replayed and target >= down_at + 2
