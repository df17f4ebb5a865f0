"""Faults inside nodes (node/faults/) in the whole-network simulation: one byzantine
validator in a 2 x 4 network, or a node's own link faults. Each run is judged by the
simulation's checkers (one block per height under a valid certificate and one state
root, every receipt applied exactly once, supply conserved, every transaction
committed exactly once, the nodes' own audit) and shows that the misbehaviour did
happen and that the honest nodes refused it."""

from __future__ import annotations

from node.faults.fabricate import VARIANTS
from node.faults.state import (
    CENSOR,
    DUPLICATE_RECEIPTS,
    EQUIVOCATE,
    FABRICATE_INBOUND,
    FORGE_RECEIPTS,
    TAMPER_SYNC,
    WITHHOLD_VOTES,
    WRONG_ROOTS,
)
from node.sim.faults import LinkFault
from node.sim.network import NetworkSimConfig, NetworkSimResult, NetworkSimulation

TXS = 16


def run(seed: int = 3, **overrides: object) -> tuple[NetworkSimulation, NetworkSimResult]:
    txs = int(overrides.pop("txs", TXS))  # type: ignore[call-overload]
    sim = NetworkSimulation(NetworkSimConfig(seed=seed, txs=txs, **overrides))  # type: ignore[arg-type]
    result = sim.run()
    assert result.ok, result.describe()
    assert result.txs == txs  # every transaction committed, each once
    assert min(result.heights) > 0
    return sim, result


def counter(sim: NetworkSimulation, shard: int, index: int, name: str,
            labels: dict[str, str]) -> float:
    registry = sim.members[(shard, index)].node.metrics.registry
    return registry.get_sample_value(name, labels) or 0.0


def test_an_equivocating_primary_does_not_split_the_shard() -> None:
    _, result = run(byzantine=((0, 0, EQUIVOCATE),))  # index 0 leads view 0
    assert result.byzantine_acts[EQUIVOCATE] > 0
    assert result.view_changes > 0  # the honest replicas left the equivocator's view
    assert result.commits == 4 * result.blocks  # the equivocator follows the new view


def test_a_validator_that_withholds_its_votes_does_not_stop_commits() -> None:
    _, result = run(byzantine=((1, 2, WITHHOLD_VOTES),))
    assert result.byzantine_acts[WITHHOLD_VOTES] > 0
    assert result.view_changes == 0  # three honest votes are a quorum of four
    assert result.commits == 4 * result.blocks


def test_a_primary_proposing_wrong_state_roots_is_replaced() -> None:
    sim, result = run(byzantine=((0, 0, WRONG_ROOTS),))
    assert result.byzantine_acts[WRONG_ROOTS] > 0
    assert result.events["block.rejected"] >= 3  # each honest replica of shard 0
    assert result.view_changes > 0
    rejected = counter(sim, 0, 1, "shardnet_blocks_rejected_total",
                       {"reason": "state_root_mismatch"})
    assert rejected >= 1


def test_a_censoring_primary_is_replaced_and_every_transaction_commits() -> None:
    """The primary leaves one sender's transactions out of every block (it keeps
    committing the rest, and empty blocks): the replicas' request timer runs out since
    the oldest pending work is never served, and the next primary commits them (``run``
    checks every transaction committed once). With any commit restarting the timer, the
    censored transactions never committed."""
    sim, result = run(byzantine=((0, 0, CENSOR),))  # index 0 leads view 0
    assert result.byzantine_acts[CENSOR] > 0
    assert result.view_changes > 0
    byzantine = sim.members[(0, 0)].node.byzantine
    assert byzantine is not None and byzantine.censored is not None


def test_a_primary_fabricating_inbound_receipts_is_refused_and_replaced() -> None:
    sim, result = run(seed=400_001, txs=24, byzantine=((1, 0, FABRICATE_INBOUND),))
    assert result.byzantine_acts[FABRICATE_INBOUND] > 0
    assert result.view_changes > 0 and result.max_view >= 1
    assert sum(result.bad_refusals.values()) > 0  # no honest vote (the run watches them)
    rejected = sum(counter(sim, 1, index, "shardnet_blocks_rejected_total", {"reason": reason})
                   for index in (1, 2, 3) for reason in set(VARIANTS.values()))
    assert rejected == sum(result.bad_refusals.values())
    assert result.receipts > 0


def test_forged_receipts_are_refused_and_the_real_ones_applied_once() -> None:
    sim, result = run(byzantine=((0, 2, FORGE_RECEIPTS),))
    assert result.byzantine_acts[FORGE_RECEIPTS] > 0
    assert result.receipts > 0
    assert result.events["receipt.refused"] > 0
    for reason in ("bad_proof", "bad_certificate"):  # the inflated and the invented one
        refused = sum(counter(sim, 1, index, "shardnet_receipts_refused_total",
                              {"src": "0", "reason": reason}) for index in range(4))
        assert refused > 0, reason


def test_duplicated_receipts_are_applied_once() -> None:
    sim, result = run(byzantine=((0, 2, DUPLICATE_RECEIPTS),))
    assert result.byzantine_acts[DUPLICATE_RECEIPTS] > 0
    assert result.receipts > 0
    again = sum(counter(sim, 1, index, "shardnet_receipts_received_total",
                        {"src": "0", "result": result_})
                for index in range(4) for result_ in ("duplicate", "stale"))
    assert again > 0  # seen again, never applied again (the checkers' exactly-once)
    replayed = sum(counter(sim, 1, index, "shardnet_receipts_refused_total",
                           {"src": "0", "reason": "bad_proof"}) for index in range(4))
    assert replayed > 0  # an old receipt under a new sequence number proves nothing


def test_tampered_sync_answers_are_refused_and_the_lagging_node_catches_up() -> None:
    sim, result = run(byzantine=((0, 2, TAMPER_SYNC),), crashes=((0, 1, 500, 1500),))
    assert result.byzantine_acts[TAMPER_SYNC] > 0
    assert result.events["sync.peer_served_invalid"] > 0
    assert counter(sim, 0, 1, "shardnet_sync_peer_invalid_total",
                   {"peer": "2", "reason": "body_mismatch"}) > 0
    assert result.commits == 4 * result.blocks  # the restarted node has every block


def test_a_node_partitioned_by_its_own_link_faults_catches_up_after_healing() -> None:
    sim, result = run(link_faults=(LinkFault((0, 1), 300, 1500, partition=True),))
    assert result.faults["link_fault"] == 1
    p2p = sim.members[(0, 1)].p2p
    assert p2p.drops["fault_partition"] > 0  # its traffic really was cut
    assert result.commits == 4 * result.blocks


def test_delay_and_loss_on_a_primary_links_keep_exactly_once() -> None:
    sim, result = run(link_faults=(LinkFault((0, 0), 0, 2500, delay_ms=40, loss=0.2),))
    assert sim.members[(0, 0)].p2p.drops["fault_loss"] > 0
    assert result.faults["link_fault"] == 1


def test_byzantine_runs_replay_exactly() -> None:
    config = {"byzantine": ((0, 0, WRONG_ROOTS),),
              "link_faults": (LinkFault((1, 3), 200, 800, loss=0.3),)}
    _, first = run(seed=4, **config)
    _, second = run(seed=4, **config)
    assert first.trace == second.trace
