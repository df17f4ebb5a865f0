"""Scenario files: parsing, and a typed refusal naming the field for each mistake."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from scripts.chaos.manifest import ManifestError, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
GOOD: dict[str, Any] = {
    "description": "d", "shards": 2, "recovery_bound_s": 12,
    "load": {"rate": 100, "duration": "20s", "cross-shard": 0.3},
    "actions": [
        {"at": "5s", "action": "kill", "nodes": "primary:0", "duration": "5s"},
        {"at": "2s..4s", "action": "byzantine", "mode": "equivocate", "nodes": ["random:1:*"],
         "duration": 3, "recovery_bound_s": "30s"},
        {"at": 1, "action": "degrade", "nodes": "shard1-node2", "delay_ms": 50, "loss": 0.1,
         "duration": "2s"},
        {"at": "3s", "action": "restart", "nodes": "all", "stagger": "2s"},
    ],
}


def test_a_good_scenario_is_read_with_its_load_and_actions() -> None:
    scenario = parse_scenario(GOOD, name="x")
    assert scenario.name == "x" and scenario.shards == 2 and scenario.validators == 4
    assert scenario.load_duration_s == 20.0 and scenario.load["cross-shard"] == 0.3
    kill, byz, degrade, restart = scenario.actions
    assert kill.at_s == (5.0, 5.0) and kill.nodes == ("primary:0",)
    assert kill.duration_s == 5.0 and kill.recovery_bound_s == 12.0
    assert byz.at_s == (2.0, 4.0) and byz.mode == "equivocate" and byz.recovery_bound_s == 30
    assert degrade.delay_ms == 50 and degrade.loss == 0.1
    assert restart.stagger_s == 2.0 and restart.duration_s is None
    assert scenario.needs_fault_endpoint
    assert not parse_scenario({**GOOD, "actions": [GOOD["actions"][0]]}).needs_fault_endpoint


def mutated(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(("path", "value", "field", "words"), [
    (("actions", 0, "action"), "explode", "actions[0].action", "not one of"),
    (("actions", 0, "at"), "soon", "actions[0].at", "not a duration"),
    (("actions", 0, "at"), "9s..3s", "actions[0].at", "ends before"),
    (("actions", 0, "at"), KeyError, "actions[0].at", "missing"),
    (("actions", 0, "nodes"), "the-primary", "actions[0].nodes", "not a node selector"),
    (("actions", 0, "nodes"), [], "actions[0].nodes", "non-empty"),
    (("actions", 0, "nodes"), "shard:5", "actions[0].nodes", "2 shard(s)"),
    (("actions", 0, "duration"), "0s", "actions[0].duration", "> 0"),
    (("actions", 0, "duration"), "30s", "actions[0].at", "before the load does"),
    (("actions", 0, "colour"), "red", "actions[0].colour", "unknown key"),
    (("actions", 0, "mode"), "equivocate", "actions[0].mode", "only a byzantine"),
    (("actions", 1, "mode"), "lie", "actions[1].mode", "not one of"),
    (("actions", 2, "loss"), 1.5, "actions[2].loss", "probability"),
    (("actions", 2, "delay_ms"), -1, "actions[2].delay_ms", "integer"),
    (("actions", 3, "duration"), "1s", "actions[3].duration", "instant"),
    (("actions",), [], "actions", "at least one"),
    (("load",), KeyError, "load", "missing"),
    (("load", "concurrency"), 5, "load", "open-loop"),
    (("load", "url"), "http://x", "load.url", "not a load option"),
    (("load", "rng-seed"), 3, "load.rng-seed", "not a load option"),
    (("validators",), 5, "validators", "3f+1"),
    (("shards",), 0, "shards", "integer in"),
    (("name",), "Bad Name", "name", "lowercase"),
    (("surprise",), 1, "surprise", "unknown key"),
])
def test_each_mistake_is_refused_naming_its_field(path: tuple[Any, ...], value: Any,
                                                  field: str, words: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_scenario(mutated(path, value))
    assert caught.value.field == field
    assert words in caught.value.message


def test_a_file_that_is_not_toml_is_refused_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("actions = [\n")
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_scenario(bad)
    with pytest.raises(ManifestError, match=r"missing\.toml: No such file"):
        load_scenario(tmp_path / "missing.toml")


def test_every_shipped_scenario_parses_and_is_short() -> None:
    paths = sorted(SCENARIOS.glob("*.toml"))
    names = {p.stem for p in paths}
    assert {"primary-crash", "f-partitioned", "majority-partition-heals", "pause-primary",
            "rolling-restart", "relayers-killed", "wipe-resync", "shard-restart"} <= names
    modes = {load_scenario(p).actions[0].mode for p in paths if p.stem.startswith("byzantine")}
    assert modes == {"equivocate", "withhold_votes", "wrong_roots", "forge_receipts",
                     "duplicate_receipts", "tamper_sync", "fabricate_inbound"}
    for path in paths:
        scenario = load_scenario(path)
        assert scenario.name == path.stem and scenario.description
        assert scenario.load_duration_s <= 30, path.name  # tens of seconds


def test_a_scenario_is_a_load_profile_too(tmp_path: Path) -> None:
    """`shardnet load --profile scenario.toml` reads its [load] table and skips the
    actions: the scenario's load is in the load generator's own format."""
    import click

    from scripts.cli.load.cli import _apply_profile, load

    ctx = load.make_context("load", [])
    _apply_profile(ctx, SCENARIOS / "relayers-killed.toml")
    assert ctx.params["rate"] == "100" and ctx.params["cross_shard"] == 0.5
    assert ctx.params["duration"] == 22.0
    assert isinstance(ctx, click.Context)
