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
from scripts.project.calibrate import _two_terms, window_latency
from scripts.project.costs import Costs, CostsError, PacedCost, decode_costs, load_costs
from scripts.project.model import (
    Config,
    latency_floor,
    per_block_us,
    project_shared,
    shard_state,
    shared_cpu,
    shared_state,
)
from scripts.project.model import project as project_one
from scripts.project.network import DEFAULT_NETWORK, NetworkError, NetworkModel, load_network
from scripts.project.structure import Structure, measure_structure
from scripts.project.transfers import mixed_route, sign_sequence, sign_transfers
from scripts.project.validate import (
    TOLERANCE,
    aggregate_e2e,
    judge,
    overloaded,
    print_validation,
)

DATA = Path(__file__).parent / "data"
RECORDED = DATA / "project_validation.json"
QUIET = DATA / "project_validation_quiet.json"
PACED_LOADED = DATA / "project_validation_paced_loaded.json"
PACED_LOW = DATA / "project_validation_paced_quiet_low_rates.json"
STRUCTURE = Structure(commit_delays=5.0, commit_base_ms=120.0, finality_delays=7.0,
                      finality_base_ms=350.0)


def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDED.read_text())
    return data


def judged_as_recorded(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A recorded validation run and its judgement today, which must reproduce the
    recorded one exactly (the predictions, the gated and informative rows, the verdict)."""
    data: dict[str, Any] = json.loads(path.read_text())
    judged = judge(data)
    for key in ("comparisons", "informative", "predicted", "ok"):
        assert judged[key] == data[key], key
    return data, judged


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


def test_the_paced_run_on_a_loaded_machine_is_judged_as_recorded() -> None:
    """The first run with the paced costs (format 3; 2026-12-01 19:26 UTC, load 30.7
    before): 1 x 4 holds (+8 %); the 2 x 4 rows are ungated (overloaded) and the model,
    on the paced 2 x 4 costs the same run measured, says the p99 limit binds. The
    recorded judgement is reproduced exactly."""
    data: dict[str, Any] = json.loads(PACED_LOADED.read_text())
    assert data["costs"]["format"] == 3 and overloaded(data)
    judged = judge(data)
    assert judged["comparisons"] == data["comparisons"]
    assert judged["informative"] == data["informative"]
    assert [c["name"] for c in judged["comparisons"]] == ["1x4 bench node TPS"]
    assert abs(judged["comparisons"][0]["error"]) <= TOLERANCE and judged["ok"]
    for x in ("0", "0.2"):
        e2e = judged["predicted"]["e2e"][x]
        assert e2e["costs_from"] == "paced 2 x 4" and e2e["binding"] == "latency"
        assert e2e["latency_tps"] <= e2e["throughput_tps"]
    # the paced per-cycle cost is what sets the p99 limit: a tenth of it, and the model
    # finds a rate whose p99 fits on the same cores
    data["costs"]["paced"][1]["cycle_us"] /= 10
    assert judge(data)["predicted"]["e2e"]["0"]["tps"] > 0


def test_paced_costs_from_rates_below_the_find_max_steps_underpredict_it() -> None:
    """A quiet run (2026-12-01 20:07 UTC, load 1.8 before) whose paced calibration was
    at 100-300 tx/s per shard while the find-max passed 1,812 tx/s (906 per shard):
    the per-transaction cost measured at small blocks, charged at big ones, puts even
    the throughput limit below what was measured. Judged as recorded: 1 x 4 holds,
    2 x 4 is gated and off (-48 %, -37 %); why the calibration's rates now span the
    steps."""
    data: dict[str, Any] = json.loads(PACED_LOW.read_text())
    assert not overloaded(data)
    judged = judge(data)
    assert judged["comparisons"] == data["comparisons"] and not judged["ok"]
    node, zero, twenty = judged["comparisons"]
    assert node["ok"] and zero["error"] < -TOLERANCE and twenty["error"] < -TOLERANCE
    assert judged["predicted"]["e2e"]["0"]["throughput_tps"] < zero["measured"]


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


# -- the paced testnet costs and the find-max's two limits ------------------------------


def paced_costs(cycle_us: float = 60_000.0, tx_us: float = 340.0) -> Costs:
    """The recorded costs with paced rows (format 3) for 1 x 4 and 2 x 4."""
    rows = [PacedCost(1, 4, 280.0, 20_000.0, 0.0125, 5.0),
            PacedCost(2, 4, tx_us, cycle_us, 0.03, 5.0)]
    return msgspec.structs.replace(costs(), format=3, paced=rows)


def test_the_paced_costs_are_what_the_shared_model_charges_2x4() -> None:
    """With a paced 2 x 4 row, each of the 8 nodes is charged its measured CPU per
    transaction of its shard and per cycle; the burst (bench node) keeps the composed
    costs; a shape without a paced row keeps them too."""
    c = paced_costs()
    per_tx, per_cycle, idle = shared_cpu(c, Config(2, 4, 2.0, 0.0), 50.0)
    assert per_tx == pytest.approx(4 * 340.0 + 50.0)
    assert per_cycle == pytest.approx(8 * 60_000.0)
    assert idle == pytest.approx(8 * 0.03)
    composed = shared_cpu(costs(), Config(2, 4, 2.0, 0.0), 50.0)
    assert shared_cpu(c, Config(2, 4, 2.0, 0.0), 50.0, paced=False) == composed
    assert shared_cpu(c, Config(3, 4, 2.0, 0.0), 50.0) == shared_cpu(
        costs(), Config(3, 4, 2.0, 0.0), 50.0)
    # cross-shard: the receipt and the measured surplus on top of the paced local cost
    cross = shared_cpu(c, Config(2, 4, 2.0, 0.2), 50.0)
    assert cross[0] > per_tx and cross[1] > per_cycle  # bundles' certificates


def test_the_find_max_is_the_lesser_of_the_throughput_and_p99_limits() -> None:
    """A heavy per-cycle cost stretches the block cycle long before the cores run out:
    the p99 limit binds; bench node (saturating) is the throughput limit."""
    n = network()
    heavy = paced_costs(cycle_us=90_000.0)
    p = project_shared(heavy, n, STRUCTURE, Config(2, 4, 1.9, 0.0), 370.0, saturate=False)
    assert p.binding == "latency" and p.latency_tps < p.throughput_tps
    assert p.tps == pytest.approx(p.latency_tps) and p.p99_ms <= 1000.0
    assert p.costs_from == "paced 2 x 4"
    loose = project_shared(heavy, n, STRUCTURE, Config(2, 4, 1.9, 0.0), 370.0,
                           saturate=False, p99_limit_ms=60_000.0)
    assert loose.tps > p.tps and loose.binding != "latency"
    burst = project_shared(heavy, n, STRUCTURE, Config(1, 4, 1.9, 0.0), 14.0, saturate=True)
    assert burst.binding in ("cpu", "block size") and burst.costs_from == "composed"
    assert burst.tps == pytest.approx(burst.throughput_tps)


@settings(max_examples=25, deadline=None)
@given(cycle=st.floats(0, 200_000), tx=st.floats(50, 2000), cores=st.floats(0.5, 8),
       cross=st.sampled_from([0.0, 0.2, 0.5]), loader=st.floats(0, 1000))
def test_the_p99_limit_never_exceeds_the_throughput_limit(cycle: float, tx: float,
                                                          cores: float, cross: float,
                                                          loader: float) -> None:
    p = project_shared(paced_costs(cycle, tx), network(), STRUCTURE,
                       Config(2, 4, cores, cross), loader, saturate=False)
    assert p.latency_tps <= p.throughput_tps * 1.0001 + 0.01
    assert p.tps == pytest.approx(min(p.latency_tps, p.throughput_tps), abs=0.01)


@settings(max_examples=25, deadline=None)
@given(cycle=st.floats(0, 200_000), more=st.floats(1, 100_000), tx=st.floats(50, 2000))
def test_a_costlier_cycle_or_transaction_never_raises_the_2x4_prediction(
        cycle: float, more: float, tx: float) -> None:
    n, config = network(), Config(2, 4, 1.9, 0.0)
    base = project_shared(paced_costs(cycle, tx), n, STRUCTURE, config, 370.0, False)
    assert project_shared(paced_costs(cycle + more, tx), n, STRUCTURE, config, 370.0,
                          False).tps <= base.tps + 0.01
    assert project_shared(paced_costs(cycle, tx + more / 100), n, STRUCTURE, config, 370.0,
                          False).tps <= base.tps + 0.01


@settings(max_examples=20, deadline=None)
@given(shards=st.integers(1, 63), validators=st.sampled_from([4, 7]),
       foreign=st.floats(0, 50_000), cross=st.sampled_from([0.0, 0.1, 0.3]))
def test_more_shards_never_raise_a_nodes_per_tx_budget(shards: int, validators: int,
                                                       foreign: float, cross: float) -> None:
    """Every node checks every other shard's announcement: one shard more never lowers a
    node's per-block work nor raises the rate a shard sustains (deployment model)."""
    c = msgspec.structs.replace(costs(), foreign_block_us=foreign)
    n = network()
    fewer, more = Config(shards, validators, 4, cross), Config(shards + 1, validators, 4, cross)
    assert per_block_us(c, more, 100.0)[0] >= per_block_us(c, fewer, 100.0)[0]
    assert project_one(c, n, STRUCTURE, more).bounds["highest"] <= project_one(
        c, n, STRUCTURE, fewer).bounds["highest"] * 1.0001 + 0.01


# -- the measured p99 floor and the repeated find-max ------------------------------------


CALIBRATED_RATES = (400.0, 1000.0, 1600.0)


def floor_costs(p99_ms: tuple[float, ...] = (700.0, 800.0, 1000.0), cores: float = 2.0,
                cycle_us: float = 36_000.0, tx_us: float = 240.0) -> Costs:
    """Paced costs whose 2 x 4 row carries the calibration's measured p99 per rate."""
    c = paced_costs(cycle_us, tx_us)
    points = [{"rate": rate, "shard_rate": rate / 2, "node_cpu_share": 0.3,
               "blocks_per_s": 3.0, "commit_p50_ms": p99 / 2, "commit_p99_ms": p99}
              for rate, p99 in zip(CALIBRATED_RATES, p99_ms, strict=True)]
    two = msgspec.structs.replace(c.paced[1], cores=cores, points=points)
    return msgspec.structs.replace(c, paced=[c.paced[0], two])


def test_the_floor_is_the_calibrations_lowest_rate_residual() -> None:
    """The floor is the measured p99 at the calibration's lowest paced rate less the
    structural p99 the model gives that rate on the calibration's cores: a measured p99
    100 ms higher there raises it by 100 ms; the higher rates' residuals are reported,
    not used; files without measured p99 (the committed format-3 ones) have no floor and
    predict as before."""
    n, config = network(), Config(2, 4, 2.0, 0.0)
    c = floor_costs()
    floor = latency_floor(c, n, STRUCTURE, 2, 4)
    assert floor is not None and len(floor.points) == 3
    structural = shared_state(c, n, STRUCTURE, config, c.loader_submit_us, 400.0).p99_ms
    assert floor.ms == pytest.approx(700.0 - structural)
    higher = latency_floor(floor_costs((800.0, 800.0, 1000.0)), n, STRUCTURE, 2, 4)
    assert higher is not None and higher.ms == pytest.approx(floor.ms + 100.0)
    others = latency_floor(floor_costs((700.0, 5000.0, 9000.0)), n, STRUCTURE, 2, 4)
    assert others is not None and others.ms == pytest.approx(floor.ms)
    assert latency_floor(floor_costs((10.0, 800.0, 1000.0)), n, STRUCTURE, 2, 4).ms == 0.0  # type: ignore[union-attr]
    assert latency_floor(floor_costs(cores=0.0), n, STRUCTURE, 2, 4) is None
    plain = paced_costs(36_000.0, 240.0)
    assert latency_floor(plain, n, STRUCTURE, 2, 4) is None
    assert project_shared(plain, n, STRUCTURE, config, 143.0, False).floor is None
    assert project_shared(plain, n, STRUCTURE, config, 143.0, False).tps == pytest.approx(
        project_shared(plain, n, STRUCTURE, config, 143.0, False, floor_ms=0.0).tps)
    # the floor lowers the p99 limit: the calibrated prediction is below the structural one
    with_floor = project_shared(c, n, STRUCTURE, config, 143.0, False)
    assert with_floor.floor == floor and with_floor.binding == "latency"
    assert with_floor.tps < project_shared(c, n, STRUCTURE, config, 143.0, False,
                                           floor_ms=0.0).tps
    assert with_floor.p99_ms <= 1000.0 and with_floor.p99_half_ms > floor.ms


def test_a_floor_near_the_limit_makes_the_prediction_ill_conditioned() -> None:
    """A floor that leaves little of the 1 s for the structural p99: 10 % of it moves the
    predicted maximum by more than the tolerance, and the model says so with the range;
    a small floor keeps a precise number."""
    n, config = network(), Config(2, 4, 2.0, 0.0)
    small = project_shared(floor_costs((500.0, 800.0, 1000.0)), n, STRUCTURE, config,
                           143.0, False)
    assert not small.ill_conditioned and small.sensitivity < 0.25
    assert small.tps_floor_high <= small.tps <= small.tps_floor_low
    near = project_shared(floor_costs((1000.0, 1100.0, 1200.0)), n, STRUCTURE, config,
                          143.0, False)
    assert near.floor is not None and near.floor.ms > 500
    assert near.ill_conditioned and near.sensitivity > 0.25
    assert near.tps_floor_high < near.tps < near.tps_floor_low
    # a floor beyond the limit (less the light-load structural p99): 0, robustly
    beyond = project_shared(floor_costs((1300.0, 1300.0, 1400.0)), n, STRUCTURE, config,
                            143.0, False)
    assert beyond.tps == beyond.tps_floor_low == 0.0 and not beyond.ill_conditioned


@settings(max_examples=25, deadline=None)
@given(floor=st.floats(0, 2000), more=st.floats(0, 1000), cycle=st.floats(0, 120_000),
       cores=st.floats(0.5, 8), cross=st.sampled_from([0.0, 0.2]))
def test_a_higher_floor_never_raises_the_prediction_nor_passes_the_throughput_limit(
        floor: float, more: float, cycle: float, cores: float, cross: float) -> None:
    n, c, config = network(), paced_costs(cycle, 240.0), Config(2, 4, cores, cross)
    base = project_shared(c, n, STRUCTURE, config, 143.0, False, floor_ms=floor)
    higher = project_shared(c, n, STRUCTURE, config, 143.0, False, floor_ms=floor + more)
    assert higher.tps <= base.tps + 0.01
    for p in (base, higher):
        assert p.latency_tps <= p.throughput_tps * 1.0001 + 0.01
        assert p.tps_floor_high <= p.tps + 0.01 and p.tps <= p.tps_floor_low + 0.01


def test_an_ill_conditioned_2x4_row_is_reported_with_its_range_not_gated() -> None:
    """The recorded quiet run judged with a calibrated floor: near the limit, the 2 x 4
    rows leave the gate for the informative list, named ill-conditioned with the range
    +-10 % of the floor gives; a small floor keeps them gated, range beside. The p99 at
    half load (the floor's own check on the validation run) is reported."""
    data: dict[str, Any] = json.loads(PACED_LOW.read_text())
    points = data["costs"]["paced"][1]["points"]
    data["costs"]["paced"][1]["cores"] = 2.0
    for point in points:  # a floor of ~780 ms: +-10 % moves the maximum 0-340 tx/s
        point["commit_p99_ms"] = 1000.0
    judged = judge(data)
    assert [c["name"] for c in judged["comparisons"]] == ["1x4 bench node TPS"]
    ill = [c for c in judged["informative"] if "ill-conditioned" in c["name"]]
    assert len(ill) == 2 and all(len(c["floor_range"]) == 2 for c in ill)
    assert judged["predicted"]["e2e"]["0"]["ill_conditioned"]
    assert any(c["name"].startswith("2x4 commit p99 at half load (906 tx/s")
               for c in judged["informative"])
    for point in points:  # a floor of ~100 ms
        point["commit_p99_ms"] = 450.0
    judged = judge(data)
    assert len(judged["comparisons"]) == 3 and "ill-conditioned" not in str(judged["comparisons"])
    low, high = judged["comparisons"][1]["floor_range"]
    assert low <= judged["comparisons"][1]["predicted"] <= high
    assert not judged["predicted"]["e2e"]["0"]["ill_conditioned"]


def test_the_find_max_runs_are_compared_by_their_median_with_the_spread() -> None:
    def run(zero: float, twenty: float, cores: float) -> dict[str, Any]:
        return {"max_tps": {"0": zero, "0.2": twenty}, "cores_received": cores,
                "generator_us_per_tx": 150.0, "commit_p50_ms": 300.0,
                "commit_p99_ms": 900.0, "half_load_tps": zero / 2, "step_s": 8.0}

    three = aggregate_e2e([run(1812.0, 1122.0, 1.7), run(1056.0, 819.0, 1.9),
                           run(552.0, 426.0, 2.0)])
    assert three["max_tps"] == {"0": 1056.0, "0.2": 819.0}
    assert three["max_tps_runs"]["0"] == [1812.0, 1056.0, 552.0]
    assert three["spread"]["0"] == pytest.approx((1812 - 552) / 1056, abs=0.001)
    assert three["cores_received"] == 1.9 and len(three["runs"]) == 3
    assert three["half_load_tps"] == 528.0  # the median run's half-load step, not a mix
    one = aggregate_e2e([run(263.0, 110.0, 1.8)])
    assert one["max_tps"]["0"] == 263.0 and one["spread"]["0"] == 0.0
    zero = aggregate_e2e([run(0.0, 0.0, 1.0), run(0.0, 0.0, 1.0), run(300.0, 0.0, 1.0)])
    assert zero["max_tps"]["0"] == 0.0 and zero["spread"]["0"] is None
    assert zero["spread"]["0.2"] == 0.0


def test_a_paced_windows_latency_is_the_shards_median_and_complete_only() -> None:
    full = [{"committed": 100, "latency_p50_ms": 200.0, "latency_p99_ms": 900.0},
            {"committed": 100, "latency_p50_ms": 300.0, "latency_p99_ms": 1100.0}]
    got = window_latency(full, 100)
    assert got["commit_p99_ms"] == 1000.0 and got["commit_p50_ms"] == 250.0
    assert got["p99_ms_per_shard"] == [900.0, 1100.0]
    short = [full[0], {"committed": 90, "latency_p50_ms": 300.0, "latency_p99_ms": 800.0}]
    assert window_latency(short, 100)["commit_p99_ms"] is None


def with_mixed(c: Costs, p99_ms: float, rate: float = 400.0, cross: float = 0.2) -> Costs:
    """``c`` whose 2 x 4 row carries the calibration's mixed window (``cross_points``)."""
    point = {"rate": rate, "cross": cross, "shard_rate": rate / 2, "node_cpu_share": 0.3,
             "blocks_per_s": 3.0, "commit_p50_ms": p99_ms / 2, "commit_p99_ms": p99_ms}
    two = msgspec.structs.replace(c.paced[1], cross_points=[point])
    return msgspec.structs.replace(c, paced=[c.paced[0], two])


def test_the_cross_shard_floor_is_the_line_through_the_local_and_mixed_residuals() -> None:
    """At a cross-shard share x the floor is the local floor plus the mixed window's
    residual beyond it, scaled by x / x_c: the mixed window's own residual at its share,
    halfway at half of it, the local floor at 0 %; costs without the mixed window keep
    the local floor at every share (the committed files predict as before)."""
    n, c = network(), floor_costs()
    local = latency_floor(c, n, STRUCTURE, 2, 4)
    assert local is not None and local.cross_point is None
    mixed = with_mixed(c, 1100.0)
    structural = shared_state(mixed, n, STRUCTURE, Config(2, 4, 2.0, 0.2),
                              mixed.loader_submit_us, 400.0).p99_ms
    at = latency_floor(mixed, n, STRUCTURE, 2, 4, 0.2)
    assert at is not None and at.cross_point == (400.0, 0.2, 1100.0, structural)
    assert at.ms == pytest.approx(1100.0 - structural) and at.local_ms == local.ms
    half = latency_floor(mixed, n, STRUCTURE, 2, 4, 0.1)
    assert half is not None and half.ms == pytest.approx((local.ms + at.ms) / 2)
    assert latency_floor(mixed, n, STRUCTURE, 2, 4, 0.0) == local  # 0 %: the local floor
    assert latency_floor(c, n, STRUCTURE, 2, 4, 0.2) == local  # no mixed window
    # a mixed window the structure explains better than the local one: the floor falls
    # toward 0 with the share, never below
    low = latency_floor(with_mixed(c, 10.0), n, STRUCTURE, 2, 4, 0.4)
    assert low is not None and low.ms == 0.0


def test_a_slower_mixed_window_lowers_only_the_cross_shard_prediction() -> None:
    """The mixed window's p99 is the 20 % row's term alone: a higher one lowers the
    20 % find-max prediction, never the 0 % one, and is reported with the row."""
    n = network()
    c = floor_costs((500.0, 800.0, 1000.0))
    quick, slow = with_mixed(c, 700.0), with_mixed(c, 900.0)
    zero = Config(2, 4, 2.0, 0.0)
    twenty = Config(2, 4, 2.0, 0.2)
    assert project_shared(quick, n, STRUCTURE, zero, 143.0, False).tps == pytest.approx(
        project_shared(slow, n, STRUCTURE, zero, 143.0, False).tps)
    fast_p = project_shared(quick, n, STRUCTURE, twenty, 143.0, False)
    slow_p = project_shared(slow, n, STRUCTURE, twenty, 143.0, False)
    assert slow_p.floor is not None and fast_p.floor is not None
    assert slow_p.floor.ms == pytest.approx(fast_p.floor.ms + 200.0)
    assert slow_p.tps < fast_p.tps


def test_the_mixed_windows_send_every_fifth_transfer_of_a_rep_to_the_next_shard() -> None:
    """The calibration's paced sequence per shard: warm-up and local windows stay in the
    shard; in each rep's mixed window every fifth transfer (its first included) goes to
    the next shard, with the sender and nonce the local sequence has at that index (so the
    windows can follow each other on one account set)."""
    from consensus.kernel.codec import decode
    from sharding.accounts import shard_of
    from sharding.tx import SignedTx, Transfer

    route = mixed_route(1, 2, warm=3, local=6, mixed=10, every=5)
    expected = [i for i in range(3 + 2 * 16) if i >= 3 and (i - 3) % 16 >= 6
                and ((i - 3) % 16 - 6) % 5 == 0]
    assert [i for i in range(3 + 2 * 16) if route(i) == 0] == expected == [9, 14, 25, 30]
    raws, _ = sign_transfers(35, 4, 1, 2, from_shard=1, route=route)
    plain, _ = sign_transfers(35, 4, 1, 2, from_shard=1)
    for i, (raw, local) in enumerate(zip(raws, plain, strict=True)):
        tx, same = decode(raw, SignedTx, 1 << 16), decode(local, SignedTx, 1 << 16)
        assert (tx.body.sender, tx.body.nonce) == (same.body.sender, same.body.nonce)
        assert shard_of(tx.body.sender, 2) == 1
        assert isinstance(tx.body.call, Transfer)
        assert shard_of(tx.body.call.to, 2) == (0 if i in expected else 1)


FLOOR_LOADED = DATA / "project_validation_floor_loaded.json"


def test_the_run_with_the_floor_is_judged_as_recorded() -> None:
    """The first run with the measured p99 floor (calibrated 22:19-22:25 UTC, load 14-38;
    validated 22:26-22:34, load 22.6 before, `--quick --e2e-runs 3`; the 2 x 4 half-load
    aggregate recomputed from the recorded runs by the median-run rule): 1 x 4 holds
    (-20 % on the 0.57 cores the run received); the 2 x 4 rows are ungated (overloaded);
    the find-max's three runs (0, 82, 263 tx/s at 0 %) and their spread are kept; the
    floor is the calibration's 400 tx/s p99 (3,177 ms) less its structural p99, far
    above the 1 s limit, so the model predicts 0 for both shares, robustly (+-10 % of
    the floor changes nothing: not ill-conditioned)."""
    data: dict[str, Any] = json.loads(FLOOR_LOADED.read_text())
    assert overloaded(data)
    judged = judge(data)
    for key in ("comparisons", "informative", "predicted", "ok"):
        assert judged[key] == data[key], key
    (node,) = judged["comparisons"]
    assert node["ok"] and abs(node["error"]) <= TOLERANCE
    e2e = data["measured"]["e2e"]
    assert aggregate_e2e(e2e["runs"]) == e2e
    assert e2e["max_tps_runs"]["0"] == [0.0, 81.8, 263.0] and e2e["max_tps"]["0"] == 81.8
    zero = judged["predicted"]["e2e"]["0"]
    lowest = zero["floor_points"][0]
    assert lowest["rate"] == 400.0
    assert zero["floor_ms"] == pytest.approx(
        lowest["measured_p99_ms"] - lowest["structural_p99_ms"], abs=0.2)
    assert zero["floor_ms"] > 1000 and zero["tps"] == 0.0 and not zero["ill_conditioned"]
    assert zero["tps_floor_minus_10pct"] == zero["tps_floor_plus_10pct"] == 0.0
    # the same costs without the measured p99 (as before the floor): no floor term, the
    # p99 the structural part alone (on the 0.8 cores received, the starved calibration's
    # per-cycle cost stretches the cycle past 1 s by itself), the throughput limit as is
    for point in data["costs"]["paced"][1]["points"]:
        del point["commit_p99_ms"]
    plain = judge(data)["predicted"]["e2e"]["0"]
    assert "floor_ms" not in plain and plain["throughput_tps"] == zero["throughput_tps"]
    assert plain["p99_ms"] == pytest.approx(zero["p99_ms"] - zero["floor_ms"], abs=0.2)


def test_the_validation_prints_the_runs_the_spread_and_the_floor(
        capsys: pytest.CaptureFixture[str]) -> None:
    print_validation(json.loads(FLOOR_LOADED.read_text()))
    out = " ".join(capsys.readouterr().out.split())
    assert "3 run(s): 0, 82, 263 tx/s; median 82, spread 322% of the median" in out
    assert "spread unbounded" in out  # 20 %: median 0, one run passed a step
    assert "the steps' p99 644-2,855 ms at 16-500 tx/s" in out
    assert "p99 floor 2,529 ms" in out and "ILL-CONDITIONED" not in out


def test_the_calibration_fit_separates_per_cycle_from_per_tx() -> None:
    """``share - idle = cycle x blocks/s + tx x rate``: exact on exact points, refused
    when the windows cannot separate the two (rates proportional to block rates)."""
    rows = [(bps, rate, 0.06 * bps + 340e-6 * rate)
            for bps, rate in ((5.0, 100.0), (4.8, 200.0), (4.5, 300.0))]
    cycle, tx = _two_terms(rows)
    assert cycle == pytest.approx(0.06) and tx == pytest.approx(340e-6)
    with pytest.raises(RuntimeError, match="do not separate"):
        _two_terms([(1.0, 100.0, 0.1), (2.0, 200.0, 0.2)])


def test_alternating_windows_keep_each_senders_nonces_in_order() -> None:
    """The cross-shard calibration alternates local and cross-shard windows from the
    same senders: across the segments each sender's nonces run 0, 1, 2, ..."""
    from sharding.tx import decode_tx

    segments = sign_sequence([(4, 0), (4, 1), (4, 0)], 2, 2)
    assert [len(raws) for raws, _ in segments] == [4, 4, 4]
    seen: dict[bytes, list[int]] = {}
    for raws, _ in segments:
        for raw in raws:
            tx = decode_tx(raw)
            seen.setdefault(tx.body.sender, []).append(tx.body.nonce)
    assert all(nonces == list(range(6)) for nonces in seen.values()) and len(seen) == 2


def test_a_format_3_costs_file_needs_the_paced_rows(tmp_path: Path) -> None:
    data = msgspec.to_builtins(paced_costs())
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(data))
    assert load_costs(path).paced_for(2, 4) is not None
    data["paced"] = data["paced"][:1]
    path.write_text(json.dumps(data))
    with pytest.raises(CostsError, match="1 x 4 and 2 x 4"):
        load_costs(path)


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


QUIET_FLOOR = DATA / "project_validation_quiet_after_floor.json"


def test_the_quiet_run_with_the_floor_is_judged_as_recorded() -> None:
    """The quiet validation after the session's node and find-max changes (calibrated
    23:42-23:48 UTC, validated 23:49-23:58, load 2.2 before, full, 3 find-max runs):
    gated, 1 x 4 and 2 x 4 at 0 % within 25 % (-6 %, +1 %), 2 x 4 at 20 % cross-shard
    off (+30 %: the model's p99 floor comes from 0 % windows); the three runs agree to
    12 % (the spread was 3x on the same machine before the find-max's step rule)."""
    data, judged = judged_as_recorded(QUIET_FLOOR)
    assert not overloaded(data)
    errors = {c["name"]: c["error"] for c in judged["comparisons"]}
    assert abs(errors["1x4 bench node TPS"]) <= TOLERANCE
    assert abs(errors["2x4 bench e2e max TPS, 0% cross (median of 3)"]) <= TOLERANCE
    assert errors["2x4 bench e2e max TPS, 20% cross (median of 3)"] > TOLERANCE
    assert not judged["ok"]
    assert data["measured"]["e2e"]["spread"]["0"] < 0.25


def test_a_foreign_block_costs_what_the_unloaded_shards_nodes_spend_per_block() -> None:
    """The cross-shard run's local windows: shard 1 (nodes 4-7) has no load of its own;
    its CPU beyond the idle share, per node and shard-0 block, median over the windows;
    the cross windows and a window without blocks are not used."""
    from scripts.project.calibrate import foreign_block_us

    def window(kind: str, shard_one_cpu: float, blocks: int) -> dict[str, Any]:
        return {"kind": kind, "wall_s": 10.0, "txs": 2000, "blocks": blocks,
                "cpu_s": [3.0] * 4 + [shard_one_cpu] * 4}

    # per node 0.45 CPU s in 10 s at 2.5 % idle: 0.2 s over 50 blocks = 4,000 µs
    windows = [window("local", 0.45, 50), window("cross", 3.0, 50),
               window("local", 0.35, 50), window("local", 0.55, 50),
               window("local", 9.0, 0)]
    assert foreign_block_us(windows, 0.025) == pytest.approx(4000.0)
    assert foreign_block_us(windows[1:2], 0.025) == 0.0  # no local window
    assert foreign_block_us([window("local", 0.1, 50)], 0.025) == 0.0  # below idle: 0


QUIET_CROSS = DATA / "project_validation_quiet_cross_term.json"


def test_the_quiet_run_with_the_cross_shard_term_is_judged_as_recorded() -> None:
    """The quiet validation after the one-hop block commit (calibrated 01:49-01:55 UTC
    2026-12-02 with the mixed window and the directly measured foreign block, validated
    01:56-02:03, load 1.9 before, full, 3 find-max runs): 1 x 4 within 25 % (-17 %); both
    2 x 4 rows off (+45 %, +27 %). The mixed window's p99 (327 ms at 400 tx/s, 20 %) is
    below its structural p99, so the cross-shard term is 0 like the local floor; the
    calibration's paced p99 (384 ms at 1,000 tx/s) is far below what the find-max's
    steps measured near that rate (772-1,058 ms at 1,098 tx/s): the model calibrated on
    the pre-signed loader over-predicts the generator-driven find-max."""
    data, judged = judged_as_recorded(QUIET_CROSS)
    assert not overloaded(data)
    errors = {c["name"]: c["error"] for c in judged["comparisons"]}
    assert abs(errors["1x4 bench node TPS"]) <= TOLERANCE
    assert errors["2x4 bench e2e max TPS, 0% cross (median of 3)"] > TOLERANCE
    assert errors["2x4 bench e2e max TPS, 20% cross (median of 3)"] > TOLERANCE
    twenty = judged["predicted"]["e2e"]["0.2"]
    point = twenty["floor_cross_point"]
    assert point["cross"] == 0.2 and point["measured_p99_ms"] < point["structural_p99_ms"]
    assert twenty["floor_ms"] == twenty["floor_local_ms"] == 0.0
    costs = data["costs"]
    assert costs["foreign_block_us"] == costs["measured"]["foreign_block"]["us"] > 0
    assert costs["measured"]["foreign_block"]["cycle_difference_us"] == 0.0


QUIET_CROSS_2 = DATA / "project_validation_quiet_cross_term_2.json"


def test_the_same_tree_validated_again_passes_and_the_find_max_moved_by_half() -> None:
    """The same tree and the same costs file validated again 40 minutes later (02:39-02:49
    UTC, load 1.5 before): every gated row within 25 % (1 x 4 -23 %, 2 x 4 -5 % and -18 %);
    the find-max's median moved 1,052 -> 1,571 tx/s at 0 % between the two invocations
    while each invocation's three runs agree within 15 %: the machine's state between
    windows moves the measurement by more than the tolerance (SCALING.md)."""
    data, judged = judged_as_recorded(QUIET_CROSS_2)
    first: dict[str, Any] = json.loads(QUIET_CROSS.read_text())
    assert not overloaded(data) and data["costs"] == first["costs"]
    assert judged["ok"] and all(abs(c["error"]) <= TOLERANCE for c in judged["comparisons"])
    now, then = data["measured"]["e2e"], first["measured"]["e2e"]
    assert now["max_tps"]["0"] > 1.4 * then["max_tps"]["0"]
    assert max(now["spread"].values()) < 0.25 and max(then["spread"].values()) < 0.25
