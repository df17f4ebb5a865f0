"""Issue 15's two transaction-loss findings of the chaos runner, in the whole-network
simulation (one shard of four production nodes, virtual time, one seed).

``f-partitioned``: a node that is not the primary, cut off by its own link faults,
keeps taking its clients' transactions; its one forward went into the partition.
``rolling-restart``: the replicas took transactions while the primary restarted
(shorter than the request timeout: no view change) and forwarded them to each other
only; then the replicas restarted in turn.

In both, the client submits (and resubmits, after the heal) to one node, the one
holding the transactions: a resubmission hears "already pending". Judged by the
simulation's checkers: every accepted transaction committed exactly once, one block per
height, supply conserved."""

from __future__ import annotations

from typing import Any

from node.sim.faults import LinkFault
from node.sim.network import NetworkSimConfig, NetworkSimResult, NetworkSimulation


def run(**config: Any) -> tuple[NetworkSimulation, NetworkSimResult]:
    sim = NetworkSimulation(NetworkSimConfig(shards=1, **config))
    result = sim.run()
    assert result.ok, result.describe()
    assert result.txs == config["txs"] == len(sim.accepted)  # each accepted one, once
    return sim, result


def events(sim: NetworkSimulation, name: str, node: str) -> list[dict[str, Any]]:
    return [e for e in sim.logs if e.get("event") == name and e.get("node") == node]


def test_transactions_accepted_by_a_partitioned_node_commit_after_the_heal() -> None:
    sim, _ = run(seed=1, txs=60, accounts=8, fault_ms=9000, load_ms=8000, submit_to=(0, 3),
                 link_faults=(LinkFault((0, 3), 1000, 5000, partition=True),))
    assert sim.members[(0, 3)].p2p.drops["fault_partition"] > 0  # really cut off
    assert events(sim, "tx.reforwarded", "shard0-node3")  # its forwards were repeated


def test_an_isolated_node_rejoins_the_view_after_the_heal() -> None:
    """Cut off for 16 s with its clients' work pending, the node times out alone, and
    its view change times out again and again (views 1, 2, 3: the chaos run saw 1 to
    5). After the heal the others commit in view 0; it follows them there, out of its
    view change, instead of going on to later views alone."""
    sim, _ = run(seed=1, txs=80, accounts=8, fault_ms=22000, load_ms=21000,
                 submit_to=(0, 3),
                 link_faults=(LinkFault((0, 3), 1000, 16000, partition=True),))
    alone = [(e["new_view"], e["reason"])
             for e in events(sim, "pbft.view_change", "shard0-node3")]
    assert (2, "new_view_timeout") in alone, alone
    replicas = {nid: m.node.running.driver.replica for nid, m in sim.members.items()}
    assert {r.view for r in replicas.values()} == {0}
    assert [nid for nid, r in replicas.items() if r.vc_target is not None] == []
    assert all(not events(sim, "pbft.view_change", f"shard0-node{i}") for i in (0, 1, 2))


def test_transactions_admitted_while_the_primary_restarts_are_not_lost() -> None:
    """The primary is down 2.5 s (the request timeout is 4 s) while its clients keep
    submitting to replica 1; replicas 2 and 3 restart afterwards (their copies are
    gone). The restarted primary is sent the pool when the replicas see it connected
    again, and replica 1 repeats its forwards: nothing is lost, no view change."""
    sim, result = run(seed=1, txs=150, accounts=32, fault_ms=13000, load_ms=12000,
                      submit_to=(0, 1),
                      crashes=((0, 0, 1000, 2500), (0, 2, 5000, 1500), (0, 3, 7500, 1500)))
    assert result.faults["crash"] == 3
    assert result.view_changes == 0
    greeted = {e["peer"] for e in events(sim, "tx.sent_to_peer", "shard0-node1")}
    assert 0 in greeted  # the restarted primary got the pool
