"""A censoring primary on a real 1 x 4 testnet of node processes (node/faults/
byzantine.py, ``censor``): it keeps committing blocks but leaves one sender's
transaction out; the replicas' request timer (PROTOCOL.md 4, "View change": only
serving the oldest pending work restarts it) replaces it, and the transaction commits
in a later view. Under the earlier rule (any commit restarting the timer) the
transaction never committed while the primary kept committing. Bounded waits; every
node is stopped after the test, also on failure."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import tests.support.node as support
from scripts.chaos.faults import LocalFaults, set_byzantine
from tests.support.node import LocalTestnet, local_testnet, signed_transfers, submit, tx_state

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

DONE = ("committed", "finalized")


def censor_acts(net: LocalTestnet, name: str) -> list[dict[str, object]]:
    acts = []
    for line in net.log_text(name).splitlines():
        if '"faults.byzantine_act"' in line and '"censor"' in line:
            acts.append(json.loads(line))
    return acts


def with_fault_endpoint(config: str) -> str:
    enabled = config.replace("[faults]\nenabled = false", "[faults]\nenabled = true")
    assert enabled != config, "no [faults] section to enable"
    return enabled


def test_a_censoring_primary_is_replaced_and_the_censored_transaction_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = int(os.environ.get("SHARDNET_TEST_BASE_PORT", "0"))
    if base:  # run by hand inside a port range of one's own
        monkeypatch.setattr(support, "free_base_port", lambda count: base)
    with local_testnet(tmp_path, edit_config=with_fault_endpoint, timeout_s=120) as net:
        names = [n.name for n in net.shard_nodes(0)]
        primary = int(net.status(names[1])["primary"])
        censor = f"shard0-node{primary}"
        honest = [name for name in names if name != censor]
        set_byzantine(LocalFaults(net.root), censor, "censor")
        # The first transaction it is asked to propose: its sender is censored.
        (victim,), (victim_hash,) = signed_transfers(1, shard=0, num_shards=1, senders=2)
        submit(net.node(censor).api_url, [victim])
        deadline = time.monotonic() + 60
        while not censor_acts(net, censor):
            assert time.monotonic() < deadline, "the censor never left the transaction out"
            time.sleep(0.2)
        height_at_censorship = net.height(censor)
        # Other senders' transactions keep it committing blocks meanwhile.
        others: list[str] = []
        committed_while_censoring = 0
        deadline = time.monotonic() + 120
        for round_ in range(1000):
            if all(tx_state(net.node(name).api_url, victim_hash) in DONE for name in honest):
                break
            assert time.monotonic() < deadline, (
                f"censored transaction not committed: views "
                f"{[net.status(name)['view'] for name in honest]}")
            raws, hashes = signed_transfers(5, shard=0, num_shards=1, start_nonce=round_,
                                            first_sender=10, senders=5)
            submit(net.node(censor).api_url, raws)
            others.extend(hashes)
            if all(int(net.status(name)["view"]) == 0 for name in honest):
                committed_while_censoring = net.height(honest[0]) - height_at_censorship
            time.sleep(0.5)
        statuses = [net.status(name) for name in honest]
        assert all(int(s["view"]) >= 1 for s in statuses), statuses
        assert any('"request_timeout"' in net.log_text(name) for name in honest)
        # The censor did commit other work in view 0 while the transaction waited.
        assert committed_while_censoring >= 1
        assert len(censor_acts(net, censor)) >= 1
        # The block that carries it was proposed by another primary than the censor.
        found = json.loads(next(line for line in net.log_text(honest[0]).splitlines()
                                if '"block.committed"' in line and victim_hash in line))
        assert int(found.get("view", 1)) >= 1, found
