"""The production nodes at ``consensus.pipeline_depth`` 2 in the whole-network
simulation (issue 16, deliverable 1): 2 shards x 4 validators, full blocks (a small
``block_txs_max``) and slow links so that the primary proposes height h+1 on its own
block h while h is still being agreed on. Each run is judged by the simulation's
checkers (one block per height under a valid certificate, every receipt applied
exactly once, supply conserved, every transaction committed exactly once, the nodes'
own audit), and shows that pipelining did happen: blocks proposed and executed on an
uncommitted parent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from node.faults.state import EQUIVOCATE, WRONG_ROOTS
from node.sim.network import NetworkSimConfig, NetworkSimResult, NetworkSimulation
from sharding.ledger import Ledger

TXS = 24
PIPELINED = {"block_txs_max": 3, "latency_ms": (5, 30), "block_interval_ms": 50,
             "pipeline_depth": 2}


@pytest.fixture
def on_parents(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts the ledger calls on an uncommitted parent (proposals and executions)."""
    counts: Counter[str] = Counter()
    propose, execute = Ledger.propose, Ledger.execute

    def counted_propose(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("parent", b"") not in (b"", self.tip_hash):
            counts["propose"] += 1
        return propose(self, *args, **kwargs)

    def counted_execute(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("parent", b"") not in (b"", self.tip_hash):
            counts["execute"] += 1
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "propose", counted_propose)
    monkeypatch.setattr(Ledger, "execute", counted_execute)
    yield counts


def run(seed: int, **overrides: Any) -> NetworkSimResult:
    config: dict[str, Any] = {**PIPELINED, "txs": TXS, **overrides}
    result = NetworkSimulation(NetworkSimConfig(seed=seed, **config)).run()
    assert result.ok, result.describe()
    assert result.txs == config["txs"]  # every transaction committed, each once
    return result


def test_depth_two_pipelines_and_keeps_every_invariant(on_parents: Counter[str]) -> None:
    result = run(3, faults=())
    assert result.receipts > 0  # cross-shard traffic was applied
    assert result.commits == 4 * result.blocks  # every node committed every block
    assert on_parents["propose"] > 0 and on_parents["execute"] > 0


def test_depth_two_with_loss_delay_and_a_crash(on_parents: Counter[str]) -> None:
    result = run(5, faults=("drop", "delay", "duplicate", "reorder"),
                 crashes=((0, 1, 500, 1500),))
    assert result.faults["crash"] == 1
    assert on_parents["execute"] > 0


def test_depth_two_with_an_equivocating_primary(on_parents: Counter[str]) -> None:
    result = run(3, byzantine=((0, 0, EQUIVOCATE),))
    assert result.byzantine_acts[EQUIVOCATE] > 0
    assert result.view_changes > 0


def test_depth_two_with_a_primary_proposing_wrong_roots(on_parents: Counter[str]) -> None:
    result = run(3, byzantine=((0, 0, WRONG_ROOTS),))
    assert result.byzantine_acts[WRONG_ROOTS] > 0
    assert result.view_changes > 0


@pytest.mark.parametrize("seed", [11, 12])
def test_depth_two_with_the_faults_each_seed_draws(seed: int, on_parents: Counter[str]) -> None:
    run(seed, faults=None)
