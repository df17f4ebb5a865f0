"""``shardnet dashboard``: one live page of a running network (``scripts/dashboard/cli.py``)."""
