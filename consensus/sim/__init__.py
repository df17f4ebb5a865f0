"""Simulation machinery, apart from the PBFT core's production code paths: the test
doubles (``doubles``: fast signer and verifier, ``TestLedger``), the deterministic
fault simulator of one shard (``simulator``), the faults it injects (``faults``), the
network faults the whole-network simulator reuses too (``network``) and its separate
checkers (``checkers``).

Nothing on a production path imports it (tests/test_layout.py); simulators, tests,
benchmarks and the command line do.
"""
