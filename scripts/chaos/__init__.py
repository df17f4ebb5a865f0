"""Chaos scenarios: timed faults against a running testnet under load (issue 15).

``manifest.py`` reads and checks a scenario file (TOML: timed actions beside a load
profile in ``shardnet load``'s format); ``schedule.py`` turns it into a seeded plan
(node selectors resolved with the seed's rng); ``faults.py`` speaks to the nodes'
fault endpoint; ``runner.py`` runs load + actions + heal + quiescence + audit + checks
and measures each fault. ``shardnet chaos run|list`` (``scripts/cli/chaos.py``) is the
command line; the shipped scenarios are in ``scenarios/``.
"""
