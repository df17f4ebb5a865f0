"""Simulation machinery, apart from the PBFT core's production code paths: the test
doubles (``doubles``: fast signer and verifier, ``TestLedger``), the deterministic
fault simulator of one shard (``simulator``, also the network faults the multi-shard
and whole-network simulators reuse) and its separate checkers (``checkers``).

Nothing on a production path imports it (tests/test_layout.py); simulators, tests,
benchmarks and the command line do.
"""
