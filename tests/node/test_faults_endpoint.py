"""The fault control endpoint (node/faults/endpoint.py) of an in-process node on
memory parts, over real HTTP: off by default (nothing listens, no token file, no
hook in the p2p layer), on only from the node's own config, on 127.0.0.1 only,
every request needs the token from the node's home."""

from __future__ import annotations

import asyncio
import random
import socket
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from node.config import parse_config
from node.faults.endpoint import PORT_FILE, TOKEN_FILE
from node.node import Node
from node.p2p.config import peer_id_from_public_key
from node.p2p.memory import MemoryNetwork
from node.parts import NodeParts, SystemClock, inline_offload, sequential_executor
from node.store.memory import MemoryStore
from sharding.accounts import derive_account
from sharding.genesis import load_genesis, make_genesis_dict

VALIDATORS = 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def one_node(home: Path, faults_toml: str, api_host: str = "127.0.0.1"
                   ) -> AsyncIterator[Node]:
    """Node 0 of a one-shard genesis, its peers absent (the endpoint needs none)."""
    genesis = load_genesis(make_genesis_dict(num_shards=1, validators_per_shard=VALIDATORS,
                                             accounts=4))
    keys = [derive_account("validator-0", i) for i in range(VALIDATORS)]
    peers = [peer_id_from_public_key(key.public_key) for key in keys]
    home.mkdir(parents=True, exist_ok=True)
    config = parse_config(f'[node]\nshard = 0\nindex = 0\n[api]\nhost = "{api_host}"\n'
                          + faults_toml, home)
    parts = NodeParts(p2p=MemoryNetwork().join(peers[0], peers), store=MemoryStore(),
                      clock=SystemClock(), executor=sequential_executor,
                      offload=inline_offload, rng=random.Random(0), serve_http=True)
    node = Node(config, genesis, keys[0], parts)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def endpoint_url(home: Path) -> str:
    return f"http://127.0.0.1:{int((home / PORT_FILE).read_text())}"


def bearer(home: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {(home / TOKEN_FILE).read_text().strip()}"}


def run(test: Callable[[], Any]) -> Any:
    return asyncio.run(test())


def test_faults_are_off_by_default_nothing_listens_and_no_token_file(tmp_path: Path) -> None:
    port = free_port()

    async def scenario() -> None:
        # The port is configured but not enabled: nothing may listen on it.
        async with one_node(tmp_path, f"[faults]\nport = {port}\n") as node:
            assert node.faults is None and node.byzantine is None
            assert node.p2p.links is None  # type: ignore[attr-defined]
            assert not (tmp_path / TOKEN_FILE).exists()
            assert not (tmp_path / PORT_FILE).exists()
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)
            assert b"shardnet_fault" not in node.service.metrics_text()

    run(scenario)


def test_the_config_alone_enables_the_endpoint_on_localhost_with_a_private_token(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        # Even with the API on every interface, the fault endpoint is on 127.0.0.1.
        async with one_node(tmp_path, "[faults]\nenabled = true\n", api_host="0.0.0.0") as node:
            endpoint = node._fault_endpoint
            assert endpoint is not None and endpoint._runner is not None
            assert {address[0] for address in endpoint._runner.addresses} == {"127.0.0.1"}
            mode = stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode)
            assert mode == 0o600
            assert len((tmp_path / TOKEN_FILE).read_text().strip()) >= 32
            async with (aiohttp.ClientSession() as http,
                        http.get(endpoint_url(tmp_path) + "/faults",
                                 headers=bearer(tmp_path)) as response):
                assert response.status == 200
                assert await response.json() == {"byzantine": "none", "links": {},
                                                 "changes": 0}
        assert not (tmp_path / TOKEN_FILE).exists()  # gone with the node
        assert not (tmp_path / PORT_FILE).exists()

    run(scenario)


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"},
])
def test_a_request_without_the_token_is_refused_401(tmp_path: Path,
                                                    headers: dict[str, str]) -> None:
    async def scenario() -> None:
        async with one_node(tmp_path, "[faults]\nenabled = true\n") as node:
            url = endpoint_url(tmp_path)
            async with aiohttp.ClientSession() as http:
                for method, path, body in (("GET", "/faults", None),
                                           ("PUT", "/faults/byzantine", {"mode": "equivocate"}),
                                           ("PUT", "/faults/links",
                                            {"peers": "*", "partition": True}),
                                           ("DELETE", "/faults", None),
                                           ("GET", "/nothing", None)):
                    async with http.request(method, url + path, json=body,
                                            headers=headers) as response:
                        assert response.status == 401
                        assert (await response.json())["error"] == "unauthorized"
            assert node.faults is not None and not node.faults.active

    run(scenario)


def test_changes_apply_to_the_node_are_logged_and_show_in_metrics(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with one_node(tmp_path, "[faults]\nenabled = true\n") as node:
            url, auth = endpoint_url(tmp_path), bearer(tmp_path)
            state = node.faults
            assert state is not None
            async with aiohttp.ClientSession(headers=auth) as http:
                with capture_logs() as logs:
                    async with http.put(url + "/faults/links", json={
                            "peers": ["shard0-node2"], "partition": True}) as response:
                        assert response.status == 200
                        body = await response.json()
                    async with http.put(url + "/faults/byzantine",
                                        json={"mode": "withhold_votes"}) as response:
                        assert response.status == 200
                assert body["links"] == {"shard0-node2": {"delay_ms": 0, "loss": 0.0,
                                                          "partition": True}}
                changed = [e for e in logs if e["event"] == "faults.changed"]
                assert [e["byzantine"] for e in changed] == ["none", "withhold_votes"]
                peer2 = state.names["shard0-node2"]
                assert state.partitioned(peer2)
                assert node.byzantine is not None and node.byzantine.mode == "withhold_votes"
                # The p2p layer drops what goes to the partitioned peer.
                node.p2p.send_nowait(peer2, 1, b"x")
                assert node.p2p.drops["fault_partition"] == 1  # type: ignore[attr-defined]
                metrics = node.service.metrics_text().decode()
                assert 'shardnet_fault_links{effect="partition"} 1.0' in metrics
                assert 'shardnet_fault_byzantine{mode="withhold_votes"} 1.0' in metrics
                async with http.delete(url + "/faults") as response:
                    assert (await response.json())["links"] == {}
                assert not state.active
                metrics = node.service.metrics_text().decode()
                assert 'shardnet_fault_links{effect="partition"} 0.0' in metrics
                assert 'shardnet_fault_byzantine{mode="none"} 1.0' in metrics

    run(scenario)


@pytest.mark.parametrize(("path", "body", "reason"), [
    ("/faults/links", {"peers": ["shard9-node9"], "partition": True}, "unknown_peer"),
    ("/faults/links", {"peers": "some", "partition": True}, "bad_peers"),
    ("/faults/links", {"peers": "*", "loss": 2.0}, "bad_loss"),
    ("/faults/links", {"peers": "*", "delay_ms": -1}, "bad_delay"),
    ("/faults/links", {"peers": "*", "colour": "red"}, "malformed"),
    ("/faults/byzantine", {"mode": "explode"}, "unknown_mode"),
    ("/faults/byzantine", [1, 2], "malformed"),
])
def test_a_bad_fault_request_is_refused_400_with_a_reason(
        tmp_path: Path, path: str, body: Any, reason: str) -> None:
    async def scenario() -> None:
        async with one_node(tmp_path, "[faults]\nenabled = true\n") as node:
            async with aiohttp.ClientSession(headers=bearer(tmp_path)) as http:
                async with http.put(endpoint_url(tmp_path) + path, json=body) as response:
                    assert response.status == 400
                    assert (await response.json())["error"] == reason
                for broken in (b"{", b'{"mode": "\xff"}', b'{"peers": ["\xc3"]}'):
                    async with http.put(endpoint_url(tmp_path) + path, data=broken) as response:
                        assert response.status == 400, broken
                        assert (await response.json())["error"] == "malformed"
            assert node.faults is not None and not node.faults.active

    run(scenario)
