"""Run Docker Compose with whichever command this machine has.

Users are told to type ``docker compose`` (the v2 plugin); some machines, this project's
build machines among them, only have Debian's ``docker-compose`` (v1 command line, same
Compose file format). Every script and test that calls Compose goes through here:

    from scripts.cli.compose import compose_command, run_compose
    run_compose(["-f", "docker-compose.yml", "config", "--quiet"])

    python3 scripts/cli/compose.py ps          # the same from a shell (any compose arguments)

``SHARDNET_COMPOSE`` (for example ``docker-compose``) overrides the choice.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any


class ComposeNotFound(RuntimeError):
    """Neither ``docker compose`` nor ``docker-compose`` works here."""


def _works(command: list[str]) -> bool:
    if shutil.which(command[0]) is None:
        return False
    try:
        result = subprocess.run([*command, "version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@functools.cache
def compose_command() -> tuple[str, ...]:
    """The Compose command as argv words: ``("docker", "compose")`` or ``("docker-compose",)``.

    The v2 plugin wins when both exist. Raises ComposeNotFound when neither runs.
    """
    override = os.environ.get("SHARDNET_COMPOSE")
    candidates = (
        [shlex.split(override)] if override else [["docker", "compose"], ["docker-compose"]]
    )
    for command in candidates:
        if _works(command):
            return tuple(command)
    tried = " or ".join(" ".join(c) for c in candidates)
    raise ComposeNotFound(f"no Docker Compose: `{tried} version` failed")


def compose_available() -> bool:
    try:
        compose_command()
    except ComposeNotFound:
        return False
    return True


def run_compose(
    args: Sequence[str], *, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` of the Compose command with ``args`` (keyword arguments pass on)."""
    return subprocess.run([*compose_command(), *args], check=check, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        command = compose_command()
    except ComposeNotFound as error:
        print(f"compose.py: {error}", file=sys.stderr)
        return 127
    if args == ["--which"]:
        print(" ".join(command))
        return 0
    return subprocess.run([*command, *args], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
