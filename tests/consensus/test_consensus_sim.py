"""Deterministic simulation of the real replica code under faults (STYLE.md: VOPR).

500 seeds with the fast test signer (n = 4), 100 seeds with n = 7, and 100 seeds
with real Ed25519 signatures; at depth 2, 200 + 40 (n = 7) + 20 (Ed25519). The larger
counts are soaks with ``shardnet simulate`` (docs/CONSENSUS.md "Simulator"). Each seed
draws its own faults: drop, delay, duplicate, reorder, partition, commit loss, crash +
restart from persisted state, and up to f byzantine replicas (equivocating primaries,
or forgers of bad, stale and garbage messages).
A failure message names the seed and the command that reproduces it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from consensus.certificate import CommitCertificate
from consensus.sim.checkers import Checker
from consensus.sim.doubles import make_keys
from consensus.sim.faults import FAULT_KINDS
from consensus.sim.simulator import SimResult, run_seed

FAST_SEEDS = 500
CHUNK = 100
FAULTS_SEEN: Counter[str] = Counter()


def check_all(results: list[SimResult]) -> None:
    failed = [r for r in results if not r.ok]
    assert not failed, "\n".join(r.describe() for r in failed[:3])


@pytest.mark.slow
@pytest.mark.parametrize("start", range(0, FAST_SEEDS, CHUNK))
def test_simulation_fast_signer_n4(start: int) -> None:
    results = [run_seed(seed) for seed in range(start, start + CHUNK)]
    for r in results:
        FAULTS_SEEN.update(k for k in r.faults if r.faults[k])
    check_all(results)


@pytest.mark.slow
@pytest.mark.parametrize("start", range(100_000, 100_100, 50))
def test_simulation_fast_signer_n7(start: int) -> None:
    check_all([run_seed(seed, replicas=7) for seed in range(start, start + 50)])


@pytest.mark.slow
@pytest.mark.parametrize("start", range(200_000, 200_100, 50))
def test_simulation_real_ed25519(start: int) -> None:
    check_all([run_seed(seed, real_signatures=True) for seed in range(start, start + 50)])


@pytest.mark.slow
@pytest.mark.parametrize("start", range(400_000, 400_200, 100))
def test_simulation_pipelined_depth_2_n4(start: int) -> None:
    """Pipelining (docs/CONSENSUS.md): the same faults, two heights in flight."""
    check_all([run_seed(seed, pipeline_depth=2) for seed in range(start, start + 100)])


@pytest.mark.slow
def test_simulation_pipelined_depth_2_n7_and_ed25519() -> None:
    check_all([run_seed(seed, pipeline_depth=2, replicas=7) for seed in range(410_000, 410_040)])
    check_all([run_seed(seed, pipeline_depth=2, real_signatures=True)
               for seed in range(420_000, 420_020)])


@pytest.mark.slow
def test_simulated_replica_reporting_stale_prepared_certificates_stalls_nothing() -> None:
    """At depth 2 PREPAREs run ahead, so real prepared certificates exist for blocks
    whose parent then lost; a byzantine replica puts them in its VIEW-CHANGEs."""
    faults = ("stale_prepared", "drop", "partition", "commit_loss", "crash")
    results = [run_seed(seed, pipeline_depth=2, faults=faults)
               for seed in range(700_000, 700_100)]
    check_all(results)
    assert sum(r.faults["stale_prepared"] for r in results) > 0


def test_pipelined_run_overlaps_heights_and_commits_the_load_sooner() -> None:
    """Deterministic simulated time, no faults, the load arriving at once: depth 2
    executes blocks on uncommitted parents and finishes the same ops earlier."""
    base = {"faults": (), "ops": 120, "load_ms": 100}
    one, two = run_seed(5, **base), run_seed(5, pipeline_depth=2, **base)
    assert one.ok and two.ok
    assert two.last_commit_ms < one.last_commit_ms
    assert "--pipeline-depth 2" in two.repro and "--pipeline-depth" not in one.repro


def test_simulator_catches_commits_out_of_height_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation check: at depth 2 a replica that COMMITs height h+1 as soon as it is
    prepared, before h committed here, lets a NEW-VIEW (which re-proposes only at C+1)
    lose a committed block: the checkers must see a divergent commit."""
    import consensus.replica
    from consensus.certificate import PHASE_COMMIT, PHASE_PREPARE

    original = consensus.replica.Replica._check_quorums

    def eager(self: Any, view: int, h: int, d: bytes) -> None:
        pp = self.pre_prepares.get((view, h))
        if h > self.committed_height + 1 and pp is not None and pp.block_hash == d:
            prepares = self._matching(PHASE_PREPARE, view, h, d)
            prepares.pop(self.primary(view), None)
            if self.executed.get((h, d)) is True and len(prepares) >= self.cfg.quorum - 1:
                self._send_vote(PHASE_COMMIT, view, h, d)
        original(self, view, h, d)

    monkeypatch.setattr(consensus.replica.Replica, "_check_quorums", eager)
    violations = [v for seed in range(25, 50) for v in run_seed(seed, pipeline_depth=2).violations]
    assert any("divergent commit" in v for v in violations)


def test_simulation_covered_every_fault_kind() -> None:
    if not FAULTS_SEEN:
        for seed in range(60):
            FAULTS_SEEN.update(k for k, v in run_seed(seed).faults.items() if v)
    for kind in FAULT_KINDS:
        assert (
            FAULTS_SEEN[kind] > 0
            or FAULTS_SEEN[f"{kind}_drop"] > 0
            or any(k.startswith(kind) for k in FAULTS_SEEN)
        ), kind


def test_simulation_is_deterministic_per_seed() -> None:
    a, b = run_seed(4242), run_seed(4242)
    assert (a.ok, a.height, a.messages, a.sim_ms, a.faults) == (
        b.ok,
        b.height,
        b.messages,
        b.sim_ms,
        b.faults,
    )


def test_a_failing_run_names_its_seed_and_the_command_to_reproduce_it() -> None:
    result = run_seed(7)
    result.ok = False
    result.violations = ["example"]
    text = result.describe()
    assert "seed 7" in text
    assert "shardnet simulate --seeds 1 --start 7 --replicas 4" in text


def test_checker_flags_two_blocks_at_one_height() -> None:
    signers, verify = make_keys(4, "checker")
    checker = Checker("c", 0, [s.public_key for s in signers], verify)
    cert = CommitCertificate(0, 0, 1, b"\x01" * 32, ())
    checker.on_commit(0, 1, b"\x01" * 32, cert, b"r" * 32)
    checker.on_commit(1, 1, b"\x02" * 32, cert, b"r" * 32)
    assert any("divergent commit" in v for v in checker.violations)
    assert any("certificate" in v for v in checker.violations)


def test_checker_flags_replicas_that_did_not_converge() -> None:
    signers, verify = make_keys(4, "checker")
    checker = Checker("c", 0, [s.public_key for s in signers], verify)
    checker.check_converged({0: (3, b"a"), 1: (2, b"b")}, {0: {1, 2}, 1: {1}}, [1, 2])
    assert any("not converged" in v for v in checker.violations)
    assert any("never committed" in v for v in checker.violations)


def test_simulated_equivocating_primary_is_replaced_without_divergence() -> None:
    results = [run_seed(seed, faults=("equivocate",)) for seed in range(300_000, 300_040)]
    check_all(results)
    assert sum(r.faults["equivocate"] for r in results) > 0
    assert sum(r.view_changes for r in results) > 0


def test_simulated_forger_is_dropped_with_typed_reasons() -> None:
    results = [run_seed(seed, faults=("forge",)) for seed in range(310_000, 310_040)]
    check_all(results)
    dropped: Counter[str] = Counter()
    for r in results:
        dropped.update(r.dropped)
    for reason in ("malformed", "bad_signature", "bad_certificate"):
        assert dropped[reason] > 0, reason


def test_simulator_catches_a_new_view_that_ignores_prepared_certificates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mutation check of the checkers: a NEW-VIEW rule that forgets prepared blocks
    (Castro and Liskov 4.4's core safety step) must be caught as a divergent commit."""
    import consensus.replica
    import consensus.viewchange
    from consensus.viewchange import NewViewPlan, commit_height

    def forgetful(chosen: Any, payload_sources: Any = ()) -> NewViewPlan:
        best = max(chosen, key=commit_height)
        return NewViewPlan(commit_height(best), best.last_commit, None, None)

    monkeypatch.setattr(consensus.viewchange, "plan_new_view", forgetful)
    monkeypatch.setattr(consensus.replica, "plan_new_view", forgetful)
    violations = [v for seed in range(100, 200) for v in run_seed(seed).violations]
    assert any("divergent commit" in v for v in violations)


def test_checker_flags_a_send_before_persist() -> None:
    from consensus.actions import Broadcast, Persist
    from consensus.state import PersistentState

    signers, verify = make_keys(4, "checker")
    checker = Checker("c", 0, [s.public_key for s in signers], verify)
    checker.check_action_order(0, [Broadcast(b"x"), Persist(PersistentState())])
    assert any("out of order" in v for v in checker.violations)
