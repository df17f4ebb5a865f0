"""The explorer commands (issue 17, deliverable 3) against a real 2 x 4 testnet: eight
node processes on 127.0.0.1, always stopped. A cross-shard transfer made with the CLI
is found by ``tx get`` with its hops on both shards, listed by ``account --txs`` on
both sides, its block shown by ``block``; ``events -f --count 2 --json`` prints two
JSON lines and stops. Without a testnet: unreachable is exit 3, an unknown or
malformed hash exit 1 or 2."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from scripts.cli.exits import CHECK_FAILED, UNREACHABLE, USAGE
from scripts.cli.main import main
from sharding.accounts import derive_account, shard_of
from tests.support.node import LocalTestnet, local_testnet, signed_transfers, submit

SHARDS = 2
ROOT = Path(__file__).resolve().parents[2]
DEAD_URL = "http://127.0.0.1:9"  # discard port: nothing listens there


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _index_on(shard: int, skip: int = 0) -> int:
    found = [i for i in range(200)
             if shard_of(derive_account("shardnet", i).public_key, SHARDS) == shard]
    return found[skip]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTestnet]:
    with local_testnet(tmp_path_factory.mktemp("explorer"), shards=SHARDS,
                       start_shards=(0, 1), timeout_s=180) as testnet:
        yield testnet


@pytest.fixture(scope="module")
def transfer(net: LocalTestnet) -> dict[str, Any]:
    """A cross-shard transfer (shard 0 -> shard 1), finalized, made with the CLI."""
    recipient = derive_account("shardnet", _index_on(1)).public_key.hex()
    sent = run("tx", "transfer", "--index", str(_index_on(0)), "--to", recipient,
               "--amount", "25", "--testnet", str(net.root), "--wait", "120", "--json")
    assert sent.exit_code == 0, (sent.stdout, sent.stderr)
    outcome: dict[str, Any] = json.loads(sent.stdout)
    assert outcome["status"] == "finalized"
    outcome["recipient"] = recipient
    return outcome


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHARDNET_URL", raising=False)


@pytest.mark.integration
def test_tx_get_of_a_cross_shard_transfer_shows_hops_on_both_shards(
        net: LocalTestnet, transfer: dict[str, Any]) -> None:
    found = run("tx", "get", transfer["hash"], "--testnet", str(net.root), "--json")
    assert found.exit_code == 0, (found.stdout, found.stderr)
    tx = json.loads(found.stdout)
    assert tx["status"] == "finalized" and tx["outcome"]["ok"] is True
    assert [hop["shard"] for hop in tx["hops"]] == [0, 1]
    human = run("tx", "get", "0x" + transfer["hash"].upper(), "--testnet", str(net.root))
    assert human.exit_code == 0, human.output
    assert "status   finalized" in human.stdout and "hops     2" in human.stdout
    assert "receipt 0->1" in human.stdout


@pytest.mark.integration
def test_account_txs_lists_the_transfer_on_both_shards(
        net: LocalTestnet, transfer: dict[str, Any]) -> None:
    sent = run("account", transfer["sender"], "--txs", "--testnet", str(net.root), "--json")
    assert sent.exit_code == 0, (sent.stdout, sent.stderr)
    assert {"hash": transfer["hash"], "role": "sender"}.items() <= json.loads(
        sent.stdout)["txs"][0].items()
    credited = run("account", transfer["recipient"], "--txs", "--testnet", str(net.root))
    assert credited.exit_code == 0, credited.output
    assert f"credit     {transfer['hash']}" in credited.stdout
    assert "(shard 1)" in credited.stdout


@pytest.mark.integration
def test_block_latest_and_at_a_height(net: LocalTestnet, transfer: dict[str, Any]) -> None:
    latest = run("block", "latest", "--shard", "1", "--testnet", str(net.root))
    assert latest.exit_code == 0, latest.output
    assert " of shard 1" in latest.stdout and "signers:" in latest.stdout
    tx = json.loads(run("tx", "get", transfer["hash"], "--testnet", str(net.root),
                        "--json").stdout)
    at = run("block", str(tx["height"]), "--testnet", str(net.root), "--json")
    assert at.exit_code == 0, at.output
    block = json.loads(at.stdout)
    assert block["height"] == tx["height"] and transfer["hash"] in block["txs"]
    assert len(block["certificate"]["signers"]) >= 3  # 2f + 1 of 4
    human = run("block", str(tx["height"]), "--testnet", str(net.root))
    assert transfer["hash"] in human.stdout and "txs           1" in human.stdout
    missing = run("block", "99999999", "--testnet", str(net.root))
    assert missing.exit_code == CHECK_FAILED and "not_found" in missing.stderr


@pytest.mark.integration
def test_events_follow_count_prints_json_lines_and_stops(net: LocalTestnet) -> None:
    url = net.shard_nodes(0)[0].api_url
    follow = subprocess.Popen(
        [sys.executable, "-m", "scripts.cli", "events", "-f", "--count", "2", "--json",
         "--url", url], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for k in range(40):  # commit blocks until the follower has its two
            raws, _ = signed_transfers(1, 0, SHARDS, senders=1, first_sender=20 + k)
            submit(url, raws)
            try:
                follow.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue
        out, err = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, out
    blocks = [json.loads(line) for line in lines]
    assert all(b["shard"] == 0 for b in blocks)
    assert blocks[1]["height"] > blocks[0]["height"]


def _as_at_a_terminal() -> None:
    """In the child before exec: SIGINT at its default and unblocked."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.integration
def test_events_follow_stops_cleanly_on_ctrl_c(net: LocalTestnet) -> None:
    url = net.shard_nodes(1)[0].api_url
    # Ctrl-C at a terminal reaches a process whose SIGINT is at its default and not
    # blocked. The test process may pass on neither: started in the background of a
    # non-interactive shell it has SIGINT ignored (bash does that), and children inherit
    # an ignored signal and the signal mask; the follower would then never see it.
    follow = subprocess.Popen(
        [sys.executable, "-m", "scripts.cli", "events", "-f", "--shard", "1", "--url", url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_as_at_a_terminal)
    lines: queue.Queue[str] = queue.Queue()
    assert follow.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follow.stdout],
                              daemon=True)
    reader.start()
    try:
        first = None
        for k in range(40):  # commit a block on shard 1 until the follower prints it
            raws, _ = signed_transfers(1, 1, SHARDS, senders=1, first_sender=20 + k)
            submit(url, raws)
            try:
                first = lines.get(timeout=3)
                break
            except queue.Empty:
                continue
        assert first is not None and "shard 1  height" in first
        follow.send_signal(signal.SIGINT)
        follow.wait(timeout=30)
        assert follow.stderr is not None
        err = follow.stderr.read()
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0, err
    assert "events: stopped after" in err and "Traceback" not in err


def test_an_unreachable_node_is_exit_3(tmp_path: Path) -> None:
    for args in (["block", "latest"], ["events", "-f", "--count", "1"],
                 ["tx", "get", "ab" * 32], ["account", "ab" * 32, "--txs"]):
        result = run(*args, "--url", DEAD_URL)
        assert result.exit_code == UNREACHABLE, (args, result.output)
        assert result.stderr.count("\n") == 1 and "Error:" in result.stderr


def test_a_malformed_hash_or_height_is_a_usage_error(tmp_path: Path) -> None:
    assert run("tx", "get", "xyz", "--url", DEAD_URL).exit_code == USAGE
    assert run("block", "-3", "--url", DEAD_URL).exit_code == USAGE


@pytest.mark.integration
def test_an_unknown_hash_is_exit_1(net: LocalTestnet) -> None:
    unknown = run("tx", "get", "ee" * 32, "--testnet", str(net.root))
    assert unknown.exit_code == CHECK_FAILED, unknown.output
    assert "unknown to every shard" in unknown.stderr and unknown.stdout == ""
