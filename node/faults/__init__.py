"""Faults inside a node, for tests (docs/NODE.md, "Faults and byzantine modes").

``state.py``: the fault state (per-link rules, the byzantine mode, a seeded rng);
``byzantine.py``: what each mode does to the node's outgoing consensus messages,
relayed bundles and sync answers; ``endpoint.py``: the localhost-only, token-guarded
HTTP control endpoint. Off unless ``[faults] enabled = true``; never from the network.
"""
