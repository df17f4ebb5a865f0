"""The whole network in one process (node/sim/): S x R production nodes on the
in-memory network with virtual time and the simulator's faults, judged by the
multi-shard checkers. Each scenario runs seconds of network time in about a second."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import sharding.executor
from node.relay import ReceiptRelay
from node.sim.loop import SimulationStuck, run_virtual
from node.sim.network import NetworkSimConfig, NetworkSimulation, run_network_seed

SHARD0_SPLIT = (((0, 0), (0, 1)), ((0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)))


def test_virtual_time_jumps_to_the_next_timer_and_catches_busy_loops() -> None:
    async def sleepy() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 5)
        return loop.time() - start

    started = time.perf_counter()
    assert run_virtual(sleepy()) == pytest.approx(3605)
    assert time.perf_counter() - started < 1

    async def busy() -> None:
        deadline = asyncio.get_running_loop().time() + 1
        while asyncio.get_running_loop().time() < deadline:  # polls a clock that never moves
            await asyncio.sleep(0)

    with pytest.raises(SimulationStuck, match="busy loop"):
        run_virtual(busy())


def test_two_shards_of_four_finalize_local_and_cross_shard_traffic() -> None:
    result = run_network_seed(3, txs=16)
    assert result.ok, result.describe()
    assert result.txs == 16  # every transaction committed, each once
    assert result.receipts > 0  # cross-shard transfers and swaps were applied
    assert min(result.heights) > 0
    assert result.commits == 4 * result.blocks  # every node committed every block
    assert result.faults == {}


def test_loss_delay_and_a_crashed_node_keep_exactly_once() -> None:
    result = run_network_seed(5, txs=16, faults=("drop", "delay"),
                              crashes=((0, 1, 500, 1500),))
    assert result.ok, result.describe()
    assert result.faults["crash"] == 1
    assert result.faults["drop"] > 0 and result.faults["delay"] > 0
    assert result.txs == 16


def test_a_partition_without_quorum_heals_and_the_shard_catches_up() -> None:
    # Cut longer than the request timeout (4 s): the replicas try to change view.
    result = run_network_seed(7, txs=16, fault_ms=7000, load_ms=3000,
                              partitions=((200, 6000, SHARD0_SPLIT),))
    assert result.ok, result.describe()
    assert result.faults["partition"] == 1
    assert result.view_changes > 0  # shard 0 lost its quorum while cut in two
    assert result.txs == 16


def test_a_seed_replays_exactly() -> None:
    options = dict(txs=12, faults=("drop", "delay", "duplicate", "reorder", "crash"))
    first, again = run_network_seed(11, **options), run_network_seed(11, **options)
    assert first.ok, first.describe()
    assert (first.trace, first.sim_ms, first.faults) == (again.trace, again.sim_ms, again.faults)
    assert run_network_seed(12, **options).trace != first.trace


def test_transactions_behind_a_nonce_gap_do_not_spin_the_primary() -> None:
    """Later nonces reach the nodes first: the primary holds only transactions it cannot
    propose yet. It must wait for the gap to fill, not turn its loop (the virtual clock
    declares a loop that turns without time passing stuck)."""
    sim = NetworkSimulation(NetworkSimConfig(seed=1, txs=12))
    for i, item in enumerate(sim.load):
        sim.load[i] = type(item)(3000 - 200 * item.nonce, item.tx, item.digest, item.shard,
                                 item.sender, item.nonce)
    result = sim.run()
    assert result.ok, result.describe()
    assert result.txs == 12


def test_three_shards() -> None:
    result = run_network_seed(13, shards=3, txs=18, faults=("drop", "reorder"))
    assert result.ok, result.describe()
    assert len(result.heights) == 3 and result.receipts > 0


def test_pulls_alone_finalize_every_channel_when_no_bundle_is_pushed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No node ever pushes a bundle: the production relay's pull path (a source's
    gossiped tip moved, or the idle poll) brings every receipt."""
    monkeypatch.setattr(ReceiptRelay, "is_relayer", lambda *_: False)
    result = run_network_seed(17, txs=16)
    assert result.ok, result.describe()
    assert result.receipts > 0 and result.txs == 16


def test_checkers_catch_a_ledger_that_credits_a_receipt_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mutation of the production ledger that every honest node shares (so agreement
    holds): the conservation checker names the asset."""
    once = sharding.executor.process_inbound_receipt

    def twice(view: Any, params: Any, receipt: Any) -> Any:
        once(view, params, receipt)
        return once(view, params, receipt)

    monkeypatch.setattr(sharding.executor, "process_inbound_receipt", twice)
    result = run_network_seed(3, txs=16)
    assert not result.ok
    assert any("totals" in v and "supply" in v for v in result.violations), result.violations


@pytest.mark.parametrize("start", [100, 104])
def test_seeds_with_the_faults_they_draw(start: int) -> None:
    """A slice of the soak (`shardnet simulate --network`): each seed draws its own
    network faults."""
    results = [run_network_seed(seed, txs=16, faults=None) for seed in range(start, start + 4)]
    assert all(r.ok for r in results), "\n".join(r.describe() for r in results if not r.ok)
    assert sum(sum(r.faults.values()) for r in results) > 0


def test_a_restarted_primary_accepts_the_new_view_its_peers_relay() -> None:
    """Issue 15 anomaly: the primary of shard 0, down longer than the view timeout,
    came back and dropped the NEW-VIEW its peers relayed as ``wrong_sender``."""
    sim = NetworkSimulation(NetworkSimConfig(seed=11, txs=24, fault_ms=12000, load_ms=8000,
                                             crashes=((0, 0, 500, 7000),)))
    result = sim.run()
    assert result.ok, result.describe()
    assert result.view_changes > 0 and result.txs == 24
    assert [e for e in sim.logs if e.get("reason") == "wrong_sender"] == []
    views = {m.node.running.driver.replica.view for (s, _), m in sim.members.items() if s == 0}
    assert len(views) == 1  # the restarted primary joined the others' view
