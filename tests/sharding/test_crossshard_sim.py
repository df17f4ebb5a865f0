"""Deterministic multi-shard simulation (STYLE.md: VOPR; PROTOCOL.md sections 4-6).

300 seeds of 2 shards x 4 replicas: real replicas, real ledgers, real Ed25519
transactions (local and cross-shard transfers, cross-shard swaps both ways), each
seed with its own network faults, crashes and byzantine replicas; checked on every
commit (one block per height, exactly-once receipts, conservation) and after healing
(finality). Then the byzantine primary on its own, the relay's two paths apart, a
third shard, real validator signatures, and mutation tests that keep the checkers
honest. A failure names the seed and the command that reproduces it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import sharding.executor
import sharding.ledger
from sharding.records import get_balance, get_in_cursor, get_out_seq, get_received, get_sent
from sharding.simulation import FAULT_KINDS, MultiShardSimulation, run_multi_seed
from sharding.simulation_world import BYZANTINE_VARIANTS, MultiSimConfig, MultiSimResult

SEEDS = 300
CHUNK = 50
SEEN: Counter[str] = Counter()
BYZANTINE_BOTH_SHARDS = ("0/0/primary", "1/0/primary")  # the primary of view 0, each shard


def check_all(results: list[MultiSimResult]) -> None:
    failed = [r for r in results if not r.ok]
    assert not failed, "\n".join(r.describe() for r in failed[:3])


@pytest.mark.slow
@pytest.mark.parametrize("start", range(0, SEEDS, CHUNK))
def test_multi_shard_simulation_seeds(start: int) -> None:
    results = [run_multi_seed(seed) for seed in range(start, start + CHUNK)]
    for r in results:
        SEEN.update(k for k, v in r.faults.items() if v)
        SEEN.update(f"relay_{k}" for k, v in r.relay.items() if v)
        SEEN.update(f"refused_{k}" for k, v in r.refused.items() if v)
        SEEN["cross_shard_receipts"] += r.receipts_applied > 0
    check_all(results)


def test_the_seeded_runs_covered_every_fault_kind_and_both_relay_paths() -> None:
    if not SEEN:
        for seed in range(40):
            r = run_multi_seed(seed)
            SEEN.update(k for k, v in r.faults.items() if v)
            SEEN.update(f"relay_{k}" for k, v in r.relay.items() if v)
            SEEN.update(f"refused_{k}" for k, v in r.refused.items() if v)
    for kind in FAULT_KINDS:
        assert any(k.startswith(kind.split("_")[0]) for k in SEEN), kind
    for key in ("relay_bundles_pushed", "relay_bundles_served", "relay_pulls_gap",
                "refused_bad_certificate", "refused_bad_proof", "refused_malformed"):
        assert SEEN[key] > 0, key


def byzantine_run(seed: int) -> tuple[MultiSimResult, MultiShardSimulation]:
    sim = MultiShardSimulation(MultiSimConfig(
        seed=seed, faults=("drop", "partition", "crash"), byzantine=BYZANTINE_BOTH_SHARDS))
    return sim.run(), sim


def test_honest_replicas_refuse_a_byzantine_primarys_receipts_and_everything_finalizes() -> None:
    """The primary of view 0 of each shard is byzantine: in some of its slots it
    proposes a block that applies a fabricated credit (forged certificate, or no
    evidence), a receipt applied before, or one past a gap. No honest replica votes
    for it (the simulation checks every PREPARE and COMMIT an honest replica sends),
    each refuses it with the variant's reason, a view change follows, every
    transaction and receipt still finalizes, and the fabricated credit never exists."""
    refusals: Counter[str] = Counter()
    proposed: Counter[str] = Counter()
    view_changes = 0
    for seed in range(400_000, 400_040):
        result, sim = byzantine_run(seed)
        check_all([result])
        refusals.update(result.bad_refusals)
        proposed.update({k: v for k, v in result.faults.items() if k.startswith("byzantine_")})
        view_changes += result.view_changes
        for node in sim.nodes.values():
            watched = sim.world.watched[node.shard]
            assert all(get_balance(node.ledger.state, watched, asset) == 0
                       for asset in sim.world.supply)
        # At quiescence nothing is in flight and every channel's amounts match exactly.
        tips = {node.shard: node.ledger for node in sim.nodes.values()
                if node.byzantine is None}
        for src, source in tips.items():
            for dst, destination in tips.items():
                if src != dst:
                    assert get_out_seq(source.state, dst) == get_in_cursor(destination.state, src)
                    for asset in sim.world.supply:
                        assert get_sent(source.state, dst, asset) == \
                            get_received(destination.state, src, asset)
    for key in refusals:
        variant, reason = key.split(":")
        assert reason == BYZANTINE_VARIANTS[variant], key
    for variant in ("fabricated", "unproven", "duplicate", "gap"):
        assert proposed[f"byzantine_{variant}"] > 0, variant
        assert refusals[f"{variant}:{BYZANTINE_VARIANTS[variant]}"] > 0, variant
    assert view_changes > 0


def test_a_byzantine_primary_alone_is_replaced_at_once() -> None:
    """No other fault: the first block of each shard is byzantine; 2f+1 honest
    replicas refuse it, change view, and the honest primary finalizes everything."""
    results = [run_multi_seed(seed, faults=(), byzantine=BYZANTINE_BOTH_SHARDS)
               for seed in range(410_000, 410_020)]
    check_all(results)
    assert all(r.max_view >= 1 for r in results if sum(r.bad_refusals.values()))
    assert sum(sum(r.bad_refusals.values()) for r in results) >= 20


def test_pulls_alone_finalize_every_channel_when_no_bundle_is_pushed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(MultiShardSimulation, "_relay", lambda *_: None)
    results = [run_multi_seed(seed) for seed in range(420_000, 420_020)]
    check_all(results)
    assert sum(r.relay["bundles_pushed"] for r in results) == 0
    assert sum(r.receipts_applied for r in results) > 50


def test_three_shards() -> None:
    results = [run_multi_seed(seed, shards=3) for seed in range(430_000, 430_010)]
    check_all(results)
    assert sum(r.receipts_applied for r in results) > 0


def test_real_validator_signatures() -> None:
    check_all([run_multi_seed(seed, real_signatures=True) for seed in range(440_000, 440_004)])


def test_the_simulation_is_deterministic_per_seed() -> None:
    def fingerprint(r: MultiSimResult) -> tuple[Any, ...]:
        return (r.ok, r.heights, r.messages, r.sim_ms, r.faults, r.relay, r.receipts_applied)

    assert fingerprint(run_multi_seed(4242)) == fingerprint(run_multi_seed(4242))


def test_a_failing_run_names_its_seed_and_the_command_to_reproduce_it() -> None:
    result = run_multi_seed(11, faults=("drop",), byzantine=("1/2/primary",))
    result.ok = False
    result.violations = ["example"]
    text = result.describe()
    assert "seed 11: FAILED" in text
    assert ("reproduce: shardnet simulate --shards 2 --seeds 1 --start 11 --replicas 4 "
            "--faults drop --byzantine 1/2/primary") in text


# ---------------------------------------------------------------------------
# Mutation tests: the checkers catch a ledger that breaks the cross-shard rules, even
# when the simulation's direct watch on honest votes is switched off.


def violations_of(seeds: range) -> list[str]:
    return [v for seed in seeds for v in byzantine_run(seed)[0].violations]


@pytest.fixture
def unwatched(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(MultiShardSimulation, "_note_execution", lambda *_: None)
    monkeypatch.setattr(MultiShardSimulation, "_watch_votes", lambda *_: None)
    return monkeypatch


def test_checkers_catch_a_ledger_that_skips_the_evidence_check(
    unwatched: pytest.MonkeyPatch,
) -> None:
    unwatched.setattr(sharding.ledger, "check_block_evidence", lambda *_: None)
    found = violations_of(range(400_000, 400_010))
    assert any("never emitted" in v for v in found)
    assert any("fabricated funds exist" in v for v in found)
    assert any("more than was sent" in v for v in found)


def test_checkers_catch_a_ledger_that_applies_a_receipt_twice_or_past_a_gap(
    unwatched: pytest.MonkeyPatch,
) -> None:
    def lenient(view: Any, params: Any, inbound: Any) -> dict[int, int]:
        cursors: dict[int, int] = {}
        for r in inbound:
            cursors[r.src_shard] = max(r.seq, cursors.get(r.src_shard, 0),
                                       get_in_cursor(view, r.src_shard))
        return cursors

    unwatched.setattr(sharding.executor, "check_inbound_order", lenient)
    found = violations_of(range(400_000, 400_010))
    assert any("applied after seq" in v for v in found)


def test_checkers_catch_receipts_that_never_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the pull path a partition that eats a bundle leaves its channel
    undrained for good: the finality checker says which."""
    monkeypatch.setattr(MultiShardSimulation, "_pull", lambda *_: None)
    found = [v for seed in range(10, 35) for v in run_multi_seed(seed).violations]
    assert any("not drained" in v for v in found)


# ---------------------------------------------------------------------------
# shardnet simulate --shards N


def test_shardnet_simulate_runs_the_multi_shard_simulator(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from scripts.cli.simulate import simulate

    out = tmp_path / "summary.json"
    result = CliRunner().invoke(simulate, ["--shards", "2", "--seeds", "2", "--start", "5",
                                           "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "seeds: 2" in result.output and "failed: []" in result.output
    assert "receipts_applied" in out.read_text()


def test_shardnet_simulate_prints_a_failing_seed_with_its_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from scripts.cli.simulate import simulate
    from sharding.simulation_checkers import CrossShardChecker

    def failing(self: CrossShardChecker, *_: Any) -> None:
        self.violations.append("example violation")

    monkeypatch.setattr(CrossShardChecker, "check_final", failing)
    result = CliRunner().invoke(simulate, ["--shards", "2", "--seeds", "1", "--start", "3",
                                           "--soak", "2", "--faults", "none"])
    assert result.exit_code == 1
    assert "seed 3: FAILED" in result.output and "example violation" in result.output
    assert ("reproduce: shardnet simulate --shards 2 --seeds 1 --start 3 --replicas 4 "
            "--faults none --soak 2") in result.output


def test_shardnet_simulate_refuses_what_the_simulator_cannot_run() -> None:
    from click.testing import CliRunner

    from scripts.cli.simulate import simulate

    runner = CliRunner()
    assert runner.invoke(simulate, ["--byzantine", "0/0/primary"]).exit_code == 2
    refused = runner.invoke(simulate, ["--shards", "2", "--faults", "lightning"])
    assert refused.exit_code == 2 and "lightning" in refused.output
    crowded = runner.invoke(simulate, ["--shards", "2", "--byzantine",
                                       "0/0/primary,0/1/forger"])
    assert crowded.exit_code == 2 and "f = 1" in crowded.output
