"""``shardnet project``: the projection's model, its inputs, its validation on a recorded
run, and the round structure it reads from the whole-network simulation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from scripts.cli.project import project
from scripts.project.costs import Costs, CostsError, decode_costs, load_costs
from scripts.project.model import Config, shard_state
from scripts.project.model import project as project_one
from scripts.project.network import DEFAULT_NETWORK, NetworkError, NetworkModel, load_network
from scripts.project.structure import Structure, measure_structure
from scripts.project.validate import TOLERANCE, judge, overloaded

DATA = Path(__file__).parent / "data"
RECORDED = DATA / "project_validation.json"
QUIET = DATA / "project_validation_quiet.json"
STRUCTURE = Structure(commit_delays=5.0, commit_base_ms=120.0, finality_delays=7.0,
                      finality_base_ms=350.0)


def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDED.read_text())
    return data


def costs() -> Costs:
    return decode_costs(json.dumps(recorded()["costs"]).encode())


def network(**changes: Any) -> NetworkModel:
    base = msgspec.to_builtins(load_network())
    for section, values in changes.items():
        base[section].update(values)
    return msgspec.convert(base, type=NetworkModel)


# -- the recorded validation ------------------------------------------------------------


def test_the_model_reproduces_the_recorded_testnets_within_the_tolerance() -> None:
    """The committed run (costs calibrated, bench node and bench e2e measured, the CPU
    the machine gave them) is judged again: every prediction within 25 %."""
    data = recorded()
    judged = judge(data)
    names = [c["name"] for c in judged["comparisons"]]
    assert names[0] == "1x4 bench node TPS"
    if not overloaded(data):  # the 2 x 4 find-max is gated only on a machine not overloaded
        assert names[1:] == ["2x4 bench e2e max TPS, 0% cross",
                             "2x4 bench e2e max TPS, 20% cross"]
    for comparison in judged["comparisons"]:
        assert abs(comparison["error"]) <= TOLERANCE, comparison
    assert judged["ok"]
    assert judge(recorded()) == judged  # deterministic


def test_an_overloaded_machine_leaves_the_2x4_find_max_ungated() -> None:
    data = recorded()
    data["load_average_before"][0] = data["load_average_after"][0] = 20.0
    assert overloaded(data)
    judged = judge(data)
    assert [c["name"] for c in judged["comparisons"]] == ["1x4 bench node TPS"]
    assert any("overloaded" in c["name"] for c in judged["informative"])
    data["load_average_before"][0] = data["load_average_after"][0] = 1.0
    assert len(judge(data)["comparisons"]) == 3


def test_the_load_the_benchmarks_cause_does_not_ungate_them() -> None:
    """8 nodes and the loader on 2 cores raise the load average to ~10 by themselves:
    the gate judges the machine by the load before the runs."""
    data = recorded()
    data["load_average_before"][0], data["load_average_after"][0] = 0.3, 10.2
    assert not overloaded(data)
    assert len(judge(data)["comparisons"]) == 3
    data["load_average_before"][0] = 2 * data["cores"] + 1
    assert overloaded(data)


def test_the_quiet_run_is_gated_and_its_1x4_holds() -> None:
    """The run on a quiet machine (load 0.6 before, 9.5 after: the benchmarks' own):
    the 2 x 4 rows are gated, 1 x 4 holds, and the 2 x 4 find-max is off (the open item
    of docs/SCALING.md): the recorded judgement is reproduced exactly."""
    data: dict[str, Any] = json.loads(QUIET.read_text())
    assert not overloaded(data)
    judged = judge(data)
    assert [c["name"] for c in judged["comparisons"]] == [
        "1x4 bench node TPS", "2x4 bench e2e max TPS, 0% cross",
        "2x4 bench e2e max TPS, 20% cross"]
    assert judged["comparisons"][0]["ok"]
    assert judged["comparisons"] == data["comparisons"]
    assert not judged["ok"]


def test_the_measured_cross_shard_cost_lowers_only_the_cross_shard_prediction() -> None:
    data: dict[str, Any] = json.loads(QUIET.read_text())
    before = judge(data)["predicted"]["e2e"]
    data["costs"]["cross_destination_us"] += 1000
    after = judge(data)["predicted"]["e2e"]
    assert after["0"]["tps"] == before["0"]["tps"]
    assert after["0.2"]["tps"] < 0.9 * before["0.2"]["tps"]
    c = costs()
    cheap = msgspec.structs.replace(c, cross_source_us=0.0, cross_destination_us=0.0)
    config = Config(16, 4, 8, 0.3)
    assert project_one(c, network(), STRUCTURE, config).tps < project_one(
        cheap, network(), STRUCTURE, config).tps


def test_the_recorded_run_fails_when_the_costs_are_off() -> None:
    """The check has teeth: tripling the per-transaction shell cost breaks it."""
    data = recorded()
    data["costs"]["shell_tx_us"] *= 3
    judged = judge(data)
    assert not judged["ok"]
    assert judged["comparisons"][0]["error"] < -TOLERANCE


# -- the model --------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(shards=st.integers(1, 64), validators=st.sampled_from([4, 7, 10]),
       cores=st.integers(1, 32), cross=st.floats(0, 1))
def test_network_tps_is_shards_times_a_feasible_shard(shards: int, validators: int,
                                                      cores: int, cross: float) -> None:
    c, n = costs(), network()
    config = Config(shards, validators, cores, cross)
    p = project_one(c, n, STRUCTURE, config)
    per_shard = p.bounds["highest"]
    assert p.tps == pytest.approx(shards * per_shard)
    assert 0 < per_shard <= min(p.bounds["gil"], p.bounds["cpu"], p.bounds["bandwidth"])
    assert shard_state(c, n, STRUCTURE, config, per_shard).feasible
    assert not shard_state(c, n, STRUCTURE, config, per_shard * 1.01 + 1).feasible
    assert p.commit_ms < p.finality_ms


def test_more_shards_never_raise_a_shards_rate() -> None:
    """Every node checks every other shard's announcements: a shard's rate falls as
    shards are added, so the network's TPS grows less than linearly."""
    c, n = costs(), network()
    rates = [project_one(c, n, STRUCTURE, Config(s, 4, 8, 0.1)).bounds["highest"]
             for s in (1, 8, 32, 64)]
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0]


@pytest.mark.parametrize(("changes", "cores", "binds"), [
    ({"network": {"bandwidth_mbit": 5}}, 16, "bandwidth"),
    ({"consensus": {"pipeline_depth": 8}}, 1, "cpu"),
    ({"consensus": {"pipeline_depth": 8}}, 64, "gil"),
    ({"network": {"latency_ms": 400}}, 16, "rounds"),
    ({"consensus": {"block_txs_max": 100}}, 16, "block size"),
])
def test_each_resource_binds_where_it_should(changes: dict[str, Any], cores: int,
                                             binds: str) -> None:
    assert project_one(costs(), network(**changes), STRUCTURE,
                       Config(8, 4, cores, 0.1)).binding == binds


def test_more_cross_shard_traffic_costs_throughput_and_latency_grows_with_distance() -> None:
    c, deep = costs(), network(consensus={"pipeline_depth": 8})
    low = project_one(c, deep, STRUCTURE, Config(16, 4, 8, 0.1))
    high = project_one(c, deep, STRUCTURE, Config(16, 4, 8, 0.3))
    assert high.tps < low.tps
    near = project_one(c, network(network={"latency_ms": 5}), STRUCTURE, Config(16, 4, 8, 0.1))
    far = project_one(c, network(network={"latency_ms": 80}), STRUCTURE, Config(16, 4, 8, 0.1))
    assert far.commit_ms > near.commit_ms and far.finality_ms > near.finality_ms


# -- inputs -----------------------------------------------------------------------------


def test_the_default_network_file_loads() -> None:
    model = load_network(DEFAULT_NETWORK)
    assert model.network.latency_ms > 0 and model.block_txs_max > 0


@pytest.mark.parametrize(("text", "reason"), [
    ("[network]\nlatency_ms = 1\n", "missing required field"),
    ("[network]\nlatency_ms = -1\nbandwidth_mbit = 1\n[local]\nlatency_ms = 1\n"
     "bandwidth_mbit = 1\n[consensus]\nblock_interval_ms = 1\nblock_txs_max = 1\n",
     "Expected `float` >= 0"),
    ("[network\n", "not TOML"),
    ("[network]\nlatency_ms = 1\nbandwidth_mbit = 1\nspeed = 3\n", "unknown field"),
])
def test_a_bad_network_file_is_refused_with_why(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "net.toml"
    path.write_text(text)
    with pytest.raises(NetworkError, match=reason):
        load_network(path)


def test_a_bad_costs_file_is_refused_with_why(tmp_path: Path) -> None:
    path = tmp_path / "costs.json"
    data = recorded()["costs"]
    data["verify_us"] = -3
    path.write_text(json.dumps(data))
    with pytest.raises(CostsError, match=r"\$\.verify_us"):
        load_costs(path)
    data["verify_us"] = 118.0
    del data["cross_destination_us"]  # a costs file from before the cross-shard figures
    path.write_text(json.dumps(data))
    with pytest.raises(CostsError, match="cross_destination_us"):
        load_costs(path)
    path.write_text("{")
    with pytest.raises(CostsError, match="not JSON"):
        load_costs(path)


@pytest.mark.parametrize(("args", "message"), [
    (["--validators", "5"], "3f+1"),
    (["--cross-shard", "1.5"], "within 0..1"),
    (["--shards", "a,b"], "not a comma-separated list"),
    (["--costs", "/nonexistent/costs.json"], "cannot read"),
])
def test_the_cli_refuses_bad_options_in_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(project, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_the_cli_projects_and_reports_the_smallest_configuration(tmp_path: Path) -> None:
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(recorded()["costs"]))
    out = tmp_path / "projection.json"
    result = CliRunner().invoke(project, [
        "--costs", str(path), "--shards", "8,64", "--validators", "4",
        "--cores-per-node", "8", "--cross-shard", "0.1", "--target", "1000", "--json",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert json.loads(out.read_text()) == data
    assert [row["shards"] for row in data["rows"]] == [8, 64]
    best = data["smallest"]["0.1"]
    assert best is not None and best["shards"] == 8 and best["tps"] >= 1000
    eight, sixty_four = data["rows"]
    assert eight["tps"] < sixty_four["tps"] < 8 * eight["tps"]  # announcements: sublinear
    assert sixty_four["tps"] == pytest.approx(64 * sixty_four["bounds_per_shard"]["highest"],
                                              rel=0.01)


# -- the round structure from the simulated network -------------------------------------


def test_the_simulated_network_gives_the_round_structure() -> None:
    """Commit: forward, PRE-PREPARE, PREPARE, COMMIT and the event (about five one-way
    delays); finality adds the relay and the destination's round."""
    structure = measure_structure(4, 200)
    assert 3 <= structure.commit_delays <= 8
    assert structure.commit_delays < structure.finality_delays <= 2 * structure.commit_delays + 2
    assert 0 < structure.commit_base_ms < structure.finality_base_ms
    low, high = structure.runs
    assert low["txs"] == high["txs"] == 80 and low["finalized"] > 0
