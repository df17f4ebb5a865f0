"""The whole network in one deterministic process (docs/NODE.md, "Whole-network
simulation"; FoundationDB's simulation and TigerBeetle's VOPR are the models).

S shards x R production ``Node``s (``node/main.py``: service, driver, relay, ledger,
executor) on the in-memory network (``node/p2p/memory.py``) with the fault model of
``consensus.sim.network.FaultyNetwork`` (``faults.py``), a virtual clock (``loop.py``) and one seed.
Production code never imports this package (tests/test_layout.py).
"""
