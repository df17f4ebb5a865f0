"""Cross-shard scenarios on the whole-network simulation (node/sim/), ported from the
retired multi-shard simulator (sharding/simulation*.py, issue 13): seeds drawing
their own network faults and byzantine nodes, byzantine primaries proposing
fabricated, unproven, duplicated or skipped inbound receipts (``fabricate_inbound``)
in both shards, and mutation tests that keep the checkers honest. Each run is judged
by the simulation's checkers (agreement, exactly-once receipts and transactions,
conservation, the nodes' own audit, finality) and by its watch on every PREPARE and
COMMIT an honest node sends. A failure names the seed and the command replaying it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import sharding.executor
import sharding.ledger
from node.faults.fabricate import VARIANTS
from node.faults.state import FABRICATE_INBOUND
from node.relay import ReceiptRelay
from node.sim.faults import FAULT_KINDS
from node.sim.network import (
    NetworkSimConfig,
    NetworkSimResult,
    NetworkSimulation,
    run_network_seed,
)
from sharding.records import get_balance, get_in_cursor, get_out_seq, get_received, get_sent

TXS = 16
BOTH_PRIMARIES = ((0, 0, FABRICATE_INBOUND), (1, 0, FABRICATE_INBOUND))  # view 0's, each shard
BYZANTINE_FAULTS = ("drop", "partition", "crash")
SEEN: Counter[str] = Counter()


def check_all(results: list[NetworkSimResult]) -> None:
    failed = [r for r in results if not r.ok]
    assert not failed, "\n".join(r.describe() for r in failed[:3])


def note(result: NetworkSimResult) -> None:
    SEEN.update(k for k, v in result.faults.items() if v)
    SEEN.update(f"relay_{k}" for k, v in result.relay.items() if v)
    SEEN.update(f"refused_{k}" for k, v in result.refused.items() if v)


@pytest.mark.slow
@pytest.mark.parametrize("start", range(0, 32, 16))  # the soak: docs/NODE.md section 9
def test_seeds_drawing_network_faults_and_byzantine_nodes(start: int) -> None:
    results = [run_network_seed(seed, txs=TXS, faults=None) for seed in range(start, start + 16)]
    for result in results:
        note(result)
    check_all(results)


def test_the_seeded_runs_covered_every_fault_kind_and_both_relay_paths() -> None:
    if not SEEN:
        for seed in range(16):
            note(run_network_seed(seed, txs=TXS, faults=None))
    for kind in FAULT_KINDS:
        assert SEEN[kind] > 0, kind
    # Pushed and pulled bundles, gaps filled by a pull; a forging relayer's inflated
    # receipt, invented source header and junk refused with their reasons.
    for key in ("relay_received_push", "relay_received_pull", "relay_gaps_filled",
                "refused_bad_certificate", "refused_bad_proof", "refused_malformed"):
        assert SEEN[key] > 0, key


def byzantine_run(seed: int, **overrides: Any) -> tuple[NetworkSimResult, NetworkSimulation]:
    options: dict[str, Any] = {"txs": 24, "faults": BYZANTINE_FAULTS,
                               "byzantine": BOTH_PRIMARIES, **overrides}
    sim = NetworkSimulation(NetworkSimConfig(seed=seed, **options))
    return sim.run(), sim


def test_honest_replicas_refuse_a_byzantine_primarys_receipts_and_everything_finalizes() -> None:
    """The primary of view 0 of each shard runs ``fabricate_inbound``: in some of its
    slots it proposes a block that applies a fabricated credit (forged certificate,
    or no evidence), a receipt applied before, or one past a gap. No honest node
    votes for it (the simulation watches every PREPARE and COMMIT), each refuses it
    with the variant's reason, a view change follows, every transaction and receipt
    still finalizes, and the fabricated credit never exists."""
    refusals: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    view_changes = 0
    # Seeds whose drawn slots cover every variant (the set moves with the node's
    # timing: the batch interval counted from the proposal, issue 16, left 'gap' out
    # of 400,000-400,011; it is in 400,013 and 400,015).
    for seed in range(400_004, 400_016):
        result, sim = byzantine_run(seed)
        check_all([result])
        assert result.txs == 24
        refusals.update(result.bad_refusals)
        sent.update(result.invalid_sent)
        view_changes += result.view_changes
        for (shard, _), member in sim.members.items():
            watched = sim.world.watched[shard]
            state = member.node.running.ledger.state
            assert all(get_balance(state, watched, asset) == 0 for asset in sim.world.supply)
        # At quiescence nothing is in flight and every channel's amounts match exactly.
        tips = {shard: member.node.running.ledger for (shard, index), member
                in sim.members.items() if index != 0}
        for src, source in tips.items():
            for dst, destination in tips.items():
                if src != dst:
                    assert get_out_seq(source.state, dst) == get_in_cursor(destination.state, src)
                    for asset in sim.world.supply:
                        assert get_sent(source.state, dst, asset) == \
                            get_received(destination.state, src, asset)
    for key in refusals:
        variant, reason = key.split(":")
        assert reason == VARIANTS[variant], key
    for variant in VARIANTS:
        assert sent[variant] > 0, variant
        assert refusals[f"{variant}:{VARIANTS[variant]}"] > 0, variant
    assert view_changes > 0


def test_a_byzantine_primary_alone_is_replaced() -> None:
    """No other fault: whenever a primary strikes, the three honest replicas refuse
    its block, change view, and the honest primary finalizes everything."""
    results = [byzantine_run(seed, faults=())[0] for seed in range(410_000, 410_006)]
    check_all(results)
    assert all(r.max_view >= 1 for r in results if r.invalid_sent)
    assert sum(sum(r.bad_refusals.values()) for r in results) >= 6


def test_a_fabricating_primary_run_replays_exactly() -> None:
    options = dict(txs=12, byzantine=BOTH_PRIMARIES[:1], faults=("drop",))
    first, again = run_network_seed(21, **options), run_network_seed(21, **options)
    assert first.ok, first.describe()
    assert (first.trace, first.invalid_sent) == (again.trace, again.invalid_sent)


def test_pulls_alone_finalize_every_channel_when_no_bundle_is_pushed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ReceiptRelay, "is_relayer", lambda *_: False)
    results = [run_network_seed(seed, txs=TXS, faults=("drop",)) for seed in (31, 32)]
    check_all(results)
    assert sum(r.relay["received_push"] for r in results) == 0
    assert sum(r.receipts for r in results) > 10


def test_a_forger_serving_pulls_is_refused_and_the_puller_asks_another_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Receipts travel by pull only; a ``forge_receipts`` node of the source shard
    answers pulls with inflated receipts under real proofs: refused (``bad_proof``),
    and the puller's next peer serves the real ones."""
    monkeypatch.setattr(ReceiptRelay, "is_relayer", lambda *_: False)
    result = run_network_seed(3, txs=TXS, byzantine=((0, 2, "forge_receipts"),))
    assert result.ok, result.describe()
    assert result.relay["refused_pull"] > 0
    assert result.relay["received_pull"] > 0 and result.receipts > 0
    assert result.txs == TXS


def test_a_failing_run_names_its_seed_and_the_command_to_replay_it() -> None:
    from node.sim.faults import LinkFault

    config = NetworkSimConfig(
        seed=11, txs=8, faults=("drop",), byzantine=((1, 2, FABRICATE_INBOUND),),
        link_faults=(LinkFault((0, 1), 300, 1500, delay_ms=40, loss=0.25,
                               peers=((0, 2), (1, 0))),),
        crashes=((0, 3, 500, 1000),))
    result = NetworkSimulation(config).run()
    result.ok = False
    result.violations = ["example"]
    text = result.describe()
    assert "seed 11: FAILED" in text
    assert ("reproduce: shardnet simulate --network --shards 2 --validators 4 --seeds 1 "
            "--start 11 --txs 8 --faults drop --byzantine 1/2=fabricate_inbound "
            "--link-fault 0/1:300:1500:delay=40,loss=0.25,peers=0/2+1/0 "
            "--crash 0/3:500:1000") in text


def test_more_byzantine_nodes_than_f_in_a_shard_is_refused() -> None:
    with pytest.raises(ValueError, match="f = 1"):
        NetworkSimulation(NetworkSimConfig(byzantine=((0, 0, FABRICATE_INBOUND),
                                                      (0, 1, "forge_receipts"))))
    with pytest.raises(ValueError, match="lightning"):
        NetworkSimulation(NetworkSimConfig(faults=("lightning",)))


# ---------------------------------------------------------------------------
# Mutation tests: the checkers catch a ledger that breaks the cross-shard rules, even
# with the simulation's direct watch on honest votes switched off.


@pytest.fixture
def unwatched(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(NetworkSimulation, "_watch_votes", lambda *_: None)
    return monkeypatch


def violations_of(seeds: range) -> list[str]:
    return [v for seed in seeds for v in byzantine_run(seed, faults=())[0].violations]


def test_the_vote_watch_catches_honest_votes_for_an_invalid_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sharding.ledger, "check_block_evidence", lambda *_: None)
    found = violations_of(range(410_000, 410_004))
    assert any("honest node voted" in v for v in found), found


def test_checkers_catch_a_ledger_that_skips_the_evidence_check(
    unwatched: pytest.MonkeyPatch,
) -> None:
    unwatched.setattr(sharding.ledger, "check_block_evidence", lambda *_: None)
    found = violations_of(range(410_000, 410_006))
    assert any("never emitted" in v for v in found), found
    assert any("fabricated funds exist" in v for v in found), found
    assert any("more than was sent" in v for v in found), found


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
    found = violations_of(range(410_000, 410_006))
    assert any("applied after seq" in v for v in found), found


def test_checkers_catch_receipts_that_never_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither push nor pull, cross-shard receipts never arrive: the finality
    checker names the undrained channels."""

    async def no_pull(*_: Any) -> None:
        return None

    monkeypatch.setattr(ReceiptRelay, "is_relayer", lambda *_: False)
    monkeypatch.setattr(ReceiptRelay, "_pull", no_pull)
    result = run_network_seed(3, txs=TXS, heal_ms_max=4000)
    assert not result.ok
    assert any("not drained" in v for v in result.violations), result.violations
