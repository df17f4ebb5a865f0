"""``python -m scripts.cli``: the ``shardnet`` command without the installed entry point."""

from scripts.cli.main import main

main()
