"""The per-fault measures and the safety comparison, on made-up inputs: each one
fails when what it guards is broken (a fork, commits that never resume)."""

from __future__ import annotations

from scripts.chaos.runner import compare_hashes, recovery_s, resumed_after, tps_dip
from scripts.chaos.schedule import Topology

TOPOLOGY = Topology.from_names([f"shard0-node{i}" for i in range(4)])


def test_two_honest_nodes_with_different_blocks_at_a_height_fail_the_safety_check() -> None:
    same = {(f"shard0-node{i}", h): f"hash{h}" for i in range(4) for h in (1, 2, 3)}
    clean = compare_hashes(TOPOLOGY, same, {0: {1: "hash1", 2: "hash2"}})
    assert clean["ok"] and clean["heights_compared"] == 3 and not clean["forks"]
    forked = compare_hashes(TOPOLOGY, {**same, ("shard0-node2", 2): "other"}, {})
    assert not forked["ok"] and forked["forks_total"] == 1
    assert forked["forks"][0]["height"] == 2
    assert forked["forks"][0]["hashes"]["shard0-node2"] == "other"
    # The blocks the load saw count as a witness too.
    assert not compare_hashes(TOPOLOGY, same, {0: {3: "elsewhere"}})["ok"]
    # A node that cannot show a block it claims to have is not a pass either.
    assert not compare_hashes(TOPOLOGY, {**same, ("shard0-node1", 3): None}, {})["ok"]


def test_recovery_is_the_longest_time_without_a_commit_from_the_fault_on() -> None:
    steady = [i * 0.2 for i in range(100)]  # a block every 200 ms, 0 .. 19.8 s
    assert recovery_s(steady, 5.05, 5.05, 10.0) == 0.2  # no stall: one block interval
    stalled = [t for t in steady if not 5.0 < t < 9.0]  # nothing from 5.2 to 8.8 s
    assert recovery_s(stalled, 5.05, 7.0, 12.0) == round(9.0 - 5.05, 3)
    assert resumed_after(stalled, 7.0) == 2.0
    # Commits that never resume after the heal: no recovery at all.
    assert recovery_s([t for t in steady if t < 6], 5.05, 7.0, 12.0) is None
    assert resumed_after([t for t in steady if t < 6], 7.0) is None
    # A fault healed only when the load ended: commits after the fault are enough.
    assert recovery_s([t for t in steady if t < 12], 5.05, 12.0, 12.0) == 0.2
    assert recovery_s([t for t in steady if t < 5], 5.05, 12.0, 12.0) is None
    # A stall after the window (the load's end) is not this fault's.
    late = [t for t in steady if not 15.0 < t < 18.0]
    assert recovery_s(late, 5.05, 5.05, 10.0) == 0.2


def test_the_tps_dip_compares_the_worst_second_with_the_seconds_before() -> None:
    rows = [{"t_s": float(t), "shard0_committed_tps": 0.0 if t in (6, 7) else 100.0,
             "shard1_committed_tps": 50.0} for t in range(15)]
    dip = tps_dip(rows, [0], baseline_end=5.0, start=5.5, end=9.0)
    assert dip == {"tps_before": 100.0, "tps_min": 0.0, "dip_pct": 100.0}
    assert tps_dip(rows, [1], 5.0, 5.5, 9.0)["dip_pct"] == 0.0
    assert tps_dip(rows, [0], 0.5, 5.5, 9.0)["tps_before"] is None  # no baseline
