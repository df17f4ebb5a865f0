"""Issue 17 deliverable 6: the compose file's healthcheck and restart policy, ``testnet
init --force`` refused while nodes run, ``testnet reset``, and ``shardnet collect``."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.cli.exits import CHECK_FAILED
from scripts.cli.testnet.compose_file import render_compose
from scripts.cli.testnet.generate import (
    TestnetSpec,
    dev_spec,
    fresh_identity,
    generate,
    node_entries,
)
from scripts.cli.testnet.layout import Manifest, TestnetDir
from scripts.cli.testnet.processes import stop_node
from tests.support.node import free_base_port, signed_transfers, submit, tx_state, wait_until

REPO = Path(__file__).resolve().parents[2]


def shardnet(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, check=False)


# -- the compose file ---------------------------------------------------------------------

def test_compose_health_asks_v1_health_on_the_api_port_and_loadgen_waits_for_it() -> None:
    """Issue 17 finding: the healthcheck only showed that the API answers, on a hard-coded
    port 8000, and loadgen started before the nodes were healthy."""
    spec = dev_spec()
    nodes = node_entries(spec)
    text = render_compose(spec, nodes)
    test = next(line for line in text.splitlines() if line.startswith("    test: "))
    assert "/v1/health" in test and "os.environ['API_PORT']" in test and "8000" not in test
    for k, node in enumerate(nodes):
        assert f'      API_PORT: "{node.api_port}"' in text
        assert f'      - "127.0.0.1:{8000 + k}:{node.api_port}"' in text
    loadgen = text[text.index("  loadgen:"):]
    assert [line.strip() for line in loadgen.splitlines() if "condition:" in line] == [
        f"{node.name}: {{condition: service_healthy}}" for node in nodes]


def test_restart_policy_defaults_to_no_and_is_chosen_at_init(tmp_path: Path) -> None:
    """A crashed node must stay down in tests (a restart would hide the crash fault)."""
    spec = dev_spec()
    nodes = node_entries(spec)
    assert '\n  restart: "no"\n' in render_compose(spec, nodes)
    assert "\n        condition: none\n" in render_compose(spec, nodes, swarm=True)
    with pytest.raises(ValueError, match="restart policy"):
        render_compose(spec, nodes, restart="unless-stopped")

    root = tmp_path / "net"
    done = shardnet("testnet", "init", "--testnet", str(root), "--shards", "1", "--accounts", "4",
                    "--restart", "on-failure")
    assert done.returncode == 0, done.stderr
    compose = (root / "docker-compose.yml").read_text()
    assert '\n  restart: "on-failure"\n' in compose
    assert "\n        condition: on-failure\n" in (root / "docker-stack.yml").read_text()
    # The regenerated files carry the testnet's own identity, not the dev one.
    manifest = json.loads((root / "testnet.json").read_text())
    assert f'SHARDNET_SALT: "{manifest["salt"]}"' in compose
    assert "shard0-node3:" in compose and "shard1-node0:" not in compose
    bad = shardnet("testnet", "init", "--testnet", str(tmp_path / "other"), "--restart", "maybe")
    assert bad.returncode == 2


# -- a real local testnet ------------------------------------------------------------------

class Net:
    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root, self.manifest, self.dir = root, manifest, TestnetDir(root)
        self.url = {n.name: n.api_url.rstrip("/") for n in manifest.nodes}


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    root = tmp_path / "net"
    manifest = generate(fresh_identity(TestnetSpec(
        shards=1, validators=4, accounts=20, base_port=free_base_port(8), faults=True)), root)
    testnet = TestnetDir(root)
    try:
        up = shardnet("testnet", "up", "--testnet", str(root))
        assert up.returncode == 0, up.stderr + up.stdout
        yield Net(root, manifest)
    finally:
        shardnet("testnet", "down", "--testnet", str(root))
        for node in manifest.nodes:  # should `down` itself have failed
            stop_node(testnet, node.name, timeout_s=10)


def health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.integration
def test_init_force_reset_and_collect_on_a_running_testnet(net: Net) -> None:
    url = net.url["shard0-node0"]
    wait_until(lambda: health(url)[0] == 200, 60, "shard0-node0 ready (peers connected)")
    raws, hashes = signed_transfers(3, shard=0, num_shards=1,
                                    chain_id=net.manifest.chain_id)
    assert submit(url, raws)["accepted"] == 3
    wait_until(lambda: all(tx_state(url, h) == "finalized" for h in hashes), 90,
               "3 transfers finalized")
    code, body = health(url)
    assert code == 200 and body["height"] >= 1 and body["since_commit_ms"] is not None

    # init --force while the nodes run: one line, exit 1, nothing touched.
    before = (net.root / "testnet.json").read_bytes()
    forced = shardnet("testnet", "init", "--testnet", str(net.root), "--force")
    assert forced.returncode == CHECK_FAILED
    assert forced.stderr.count("\n") == 1 and "are running" in forced.stderr
    assert (net.root / "testnet.json").read_bytes() == before
    refused = shardnet("testnet", "reset", "--testnet", str(net.root))
    assert refused.returncode == CHECK_FAILED and "are running" in refused.stderr

    # collect: every node's log, config and snapshots; no keys, no salt.
    (net.root / "reports" / "run1").mkdir(parents=True)
    (net.root / "reports" / "run1" / "report.json").write_text('{"txs": 3}')
    net.dir.home("shard0-node3").joinpath("data").mkdir(exist_ok=True)
    assert shardnet("testnet", "stop", "shard0-node3", "--testnet", str(net.root)).returncode == 0
    out = net.root.parent / "bug.tar.gz"
    done = shardnet("collect", "--testnet", str(net.root), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["down"] == ["shard0-node3"]  # noted, not fatal
    with tarfile.open(out) as tar:
        names = {member.split("/", 1)[1]: member for member in tar.getnames()}
        for node in net.manifest.nodes:
            assert f"nodes/{node.name}/config.toml" in names
            assert f"nodes/{node.name}/node.log" in names
        for name in ("shard0-node0", "shard0-node1", "shard0-node2"):
            for member in ("metrics.txt", "status.json", "health.json"):
                assert f"nodes/{name}/{member}" in names
        assert "nodes/shard0-node3/status.json" not in names
        assert not any("node_key" in n or "faults.token" in n for n in names)
        everything = b"".join(tar.extractfile(m).read()  # type: ignore[union-attr]
                              for m in tar.getmembers())
        assert json.loads(tar.extractfile(names["load/report.json"]).read()) == {  # type: ignore[union-attr]
            "txs": 3}
        status = json.loads(tar.extractfile(  # type: ignore[union-attr]
            names["nodes/shard0-node0/status.json"]).read())
        assert status["height"] >= 1
    salt = net.manifest.salt
    assert salt and salt.encode() not in everything
    tokens = [net.dir.home(f"shard0-node{i}") / "faults.token" for i in range(3)]  # running
    assert all(t.read_bytes().strip() not in everything for t in tokens)
    keys = [(net.dir.home(n.name) / "node_key.json").read_bytes() for n in net.manifest.nodes]
    for key in keys:
        private = json.loads(key)["private_key"]
        assert len(private) >= 32 and private.encode() not in everything

    # reset after down: the chain state goes, the topology stays.
    assert shardnet("testnet", "down", "--testnet", str(net.root)).returncode == 0
    config_before = (net.dir.home("shard0-node0") / "config.toml").read_bytes()
    reset = shardnet("testnet", "reset", "--testnet", str(net.root))
    assert reset.returncode == 0, reset.stderr
    assert (net.root / "testnet.json").read_bytes() == before
    for node in net.manifest.nodes:
        home = net.dir.home(node.name)
        assert not (home / "data").exists()
        assert (home / "node_key.json").exists() and (home / "genesis.json").exists()
    assert (net.dir.home("shard0-node0") / "config.toml").read_bytes() == config_before
    up = shardnet("testnet", "up", "--testnet", str(net.root))
    assert up.returncode == 0, up.stderr
    wait_until(lambda: health(url)[1].get("shard_peers", 0) >= 2, 60, "peers again")
    assert health(url)[1]["height"] == 0  # the chain starts over


def test_collect_redacts_the_salt_of_a_compose_file_and_bounds_logs(tmp_path: Path) -> None:
    from scripts.cli.collect import REDACTED, redact_compose, redact_manifest, tail_bytes

    spec = fresh_identity(TestnetSpec(shards=1, accounts=4))
    text = render_compose(spec, node_entries(spec))
    assert spec.salt in text
    redacted = redact_compose(text)
    assert spec.salt not in redacted
    assert redacted.count(f'SHARDNET_SALT: "{REDACTED}"') == text.count("SHARDNET_SALT:")
    manifest = json.loads(redact_manifest(json.dumps({"salt": spec.salt, "shards": 1}).encode()))
    assert manifest == {"salt": REDACTED, "shards": 1}
    log = tmp_path / "node.log"
    log.write_bytes(b"".join(b'{"n": %d}\n' % i for i in range(10_000)))
    tail = tail_bytes(log, 1000)
    assert len(tail) <= 1000 and tail.endswith(b'{"n": 9999}\n')
    assert tail.startswith(b'{"n": ')  # whole lines only
