"""The seeded plan: same seed, same schedule; node selectors; live resolution."""

from __future__ import annotations

from typing import Any

import pytest

from scripts.chaos.manifest import parse_scenario
from scripts.chaos.schedule import ScheduleError, Topology, plan, primaries, resolve_live

TOPOLOGY = Topology.from_names([f"shard{s}-node{i}" for s in range(2) for i in range(4)])


def scenario(*actions: dict[str, Any], shards: int = 2) -> Any:
    return parse_scenario({"shards": shards, "load": {"rate": 10, "duration": "60s"},
                           "actions": list(actions)})


RANDOM = scenario(
    {"at": "1s..20s", "action": "kill", "nodes": "f:0", "duration": "1s"},
    {"at": "2s..20s", "action": "partition", "nodes": "half:1", "duration": "1s"},
    {"at": "3s", "action": "pause", "nodes": ["random:1:*", "primary:0"], "duration": "1s"},
)


def as_data(steps: list[Any]) -> list[dict[str, Any]]:
    return [step.describe() for step in steps]


def test_the_same_seed_gives_the_same_schedule() -> None:
    first = as_data(plan(RANDOM, 42, TOPOLOGY))
    assert first == as_data(plan(RANDOM, 42, TOPOLOGY))
    others = [as_data(plan(RANDOM, seed, TOPOLOGY)) for seed in range(1, 8)]
    assert any(other != first for other in others)  # the seed does choose


def test_selectors_pick_the_right_number_of_nodes_from_the_right_shard() -> None:
    for seed in range(20):
        steps = {s.action.index: s for s in plan(RANDOM, seed, TOPOLOGY)}
        kill, partition, pause = steps[0], steps[1], steps[2]
        assert len(kill.nodes) == 1 and kill.nodes[0].startswith("shard0-")  # f = 1
        assert len(partition.nodes) == 2 and all(n.startswith("shard1-")
                                                 for n in partition.nodes)
        assert 1 <= kill.at_s <= 20 and 2 <= partition.at_s <= 20
        assert sorted(n[:6] for n in pause.nodes) == ["shard0", "shard1"]
        assert pause.live == ("primary:0",)
    named = plan(scenario({"at": 1, "action": "restart", "nodes": ["shard:1", "0/2", "s0n3"]}),
                 1, TOPOLOGY)
    assert named[0].nodes == ("shard1-node0", "shard1-node1", "shard1-node2", "shard1-node3",
                              "shard0-node2", "shard0-node3")
    everything = plan(scenario({"at": 1, "action": "restart", "nodes": "all"}), 1, TOPOLOGY)
    assert len(everything[0].nodes) == 8


def test_steps_come_in_time_order() -> None:
    steps = plan(scenario({"at": "9s", "action": "restart", "nodes": "all"},
                          {"at": "2s", "action": "restart", "nodes": "all"}), 1, TOPOLOGY)
    assert [s.at_s for s in steps] == [2.0, 9.0]


def test_a_selector_the_testnet_cannot_satisfy_is_refused() -> None:
    one_shard = Topology.from_names([f"shard0-node{i}" for i in range(4)])
    with pytest.raises(ScheduleError, match="1 shard"):
        plan(scenario({"at": 1, "action": "kill", "nodes": "shard:1", "duration": 1}),
             1, one_shard)
    with pytest.raises(ScheduleError, match="unknown node"):
        plan(scenario({"at": 1, "action": "kill", "nodes": "shard0-node9", "duration": 1}),
             1, one_shard)


def status(view: int, primary: int) -> dict[str, Any]:
    return {"view": view, "primary": primary, "height": 5}


def test_live_selectors_follow_the_highest_view() -> None:
    statuses: dict[str, Any] = {f"shard0-node{i}": status(3, 3) for i in range(4)}
    statuses["shard0-node1"] = status(2, 2)  # behind: ignored
    statuses["shard0-node0"] = None  # down
    statuses.update({f"shard1-node{i}": status(0, 0) for i in range(4)})
    assert primaries(TOPOLOGY, statuses) == {0: 3, 1: 0}
    assert resolve_live(TOPOLOGY, "primary:*", statuses) == ["shard0-node3", "shard1-node0"]
    # The relayers of the next block: the primary and the next f (wrapping around).
    assert resolve_live(TOPOLOGY, "relayers:0", statuses) == ["shard0-node3", "shard0-node0"]
    assert resolve_live(TOPOLOGY, "replicas:1", statuses) == [
        "shard1-node1", "shard1-node2", "shard1-node3"]
    with pytest.raises(ScheduleError, match="no node of shard 1 answers"):
        resolve_live(TOPOLOGY, "primary:1", {**statuses, **{f"shard1-node{i}": None
                                                            for i in range(4)}})
