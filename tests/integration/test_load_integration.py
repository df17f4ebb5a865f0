"""``shardnet load`` against a real 2 x 4 testnet of local processes: discovery from
one URL, cross-shard transfers and swaps, a node killed mid-run, the report files and
the end-of-run audit; then ``shardnet testnet load`` on the same testnet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.cli.load.targets import discover_urls
from sharding.accounts import derive_account, shard_of
from tests.support.node import local_testnet, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SHARDNET = str(Path(sys.executable).parent / "shardnet")


def test_load_with_cross_shard_traffic_and_a_node_killed_mid_run(tmp_path: Path) -> None:
    # A testnet as `testnet init` makes it: its own chain id, which load signs with.
    with local_testnet(tmp_path, shards=2, start_shards=(0, 1), accounts=200,
                       fresh=True) as net:
        entry = net.node("shard1-node2")
        network = discover_urls([entry.api_url])
        assert net.manifest.chain_id.startswith("shardnet-")
        assert net.manifest.chain_id != "shardnet-local"
        assert network.chain_id == net.manifest.chain_id and network.num_shards == 2
        assert {(n.name, n.shard, n.url) for n in network.nodes} == {
            (n.name, n.shard, n.api_url) for n in net.manifest.nodes}

        # The wallet finds the other shard's nodes from one URL too (GET /v1/network).
        other = next(i for i in range(50) if shard_of(
            derive_account("shardnet", i).public_key, 2) == 0)
        address = derive_account("shardnet", other).public_key.hex()
        found = subprocess.run([SHARDNET, "account", address], capture_output=True, text=True,
                               timeout=60, env={**os.environ, "SHARDNET_URL": entry.api_url})
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["shard"] == 0

        out = tmp_path / "report"
        command = [SHARDNET, "load", "--url", entry.api_url, "--rate", "250", "--duration",
                   "5s", "--cross-shard", "0.3", "--mix", "transfer=70,swap=30",
                   "--senders", "32", "--report", str(out), "--json", "--quiet",
                   "--audit-wait", "60s", "--threshold", "rejected<1%"]
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        try:
            # Kill once the load is flowing (a few blocks on shard 0), not after a fixed
            # time: on a loaded machine discovery, nonce reads and signing take longer, and
            # a node killed before the generator first saw it up gives no node_down marker.
            wait_until(lambda: net.height("shard0-node2") >= 3, 90, "load reaching shard 0")
            net.kill("shard0-node2")  # not a primary: no view change, its traffic moves
            stdout, stderr = run.communicate(timeout=180)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        report = json.loads(stdout) if stdout.startswith("{") else {}
        assert run.returncode == 0, (stderr[-3000:], {k: report.get(k) for k in (
            "sent", "committed", "rejected", "errors", "in_flight_at_end", "audit")})
        assert report["sent"] == 1250 and report["committed"] == 1250
        assert report["finalized"] == 1250 and report["rejected_total"] == 0
        assert report["cross_shard"] > 250
        assert report["latency_ms"]["finality"]["count"] == report["cross_shard"]
        assert report["latency_ms"]["finality_hops"]["return"]["count"] > 0  # swaps came back
        assert report["audit"]["ok"] and report["audit"]["lost"] == 0
        assert report["audit"]["duplicated"] == 0
        assert any(m["kind"] == "node_down" and m["node"] == "shard0-node2"
                   for m in report["markers"])
        for name in ("report.json", "timeseries.csv", "report.html"):
            assert (out / name).stat().st_size > 0

        thin = subprocess.run([SHARDNET, "testnet", "load", "--testnet", str(net.root), "--txs",
                               "150", "--quiet", "--cross-shard", "0.2"],
                              capture_output=True, text=True, timeout=180)
        assert thin.returncode == 0, thin.stderr[-3000:]
        assert "audit: ok: 0 lost, 0 duplicated" in thin.stdout
