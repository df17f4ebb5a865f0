"""The whole-network simulation's own conservation reading (node/sim/checkers.py) counts
what programs hold: pool reserves, farm reward budgets and lending markets' cash."""

from __future__ import annotations

from node.sim.checkers import compute_holdings
from scripts.cli.testnet.generate import TestnetSpec, genesis_document, node_entries
from sharding.genesis import load_genesis, total_supply
from sharding.ledger import Ledger


def test_holdings_of_the_default_genesis_add_up_to_its_supply_and_match_the_ledger() -> None:
    spec = TestnetSpec(shards=2, validators=4, accounts=20)
    genesis = load_genesis(genesis_document(spec, node_entries(spec)))
    # The default testnet has farms and markets: otherwise this test would prove nothing.
    assert genesis.farms and genesis.lending is not None and genesis.lending.markets
    total: dict[int, int] = {}
    for shard in range(genesis.num_shards):
        ledger = Ledger(genesis, shard)
        balances, reserves = compute_holdings(ledger.state)
        assert reserves == {a: n for a, n in ledger.reserves.items() if n}
        assert balances == {a: n for a, n in ledger.balances.items() if n}
        for held in (balances, reserves):
            for asset, amount in held.items():
                total[asset] = total.get(asset, 0) + amount
    assert total == {a: n for a, n in total_supply(genesis).items() if n}
