"""Exit codes of the ``shardnet`` commands, defined once (issue 17).

| code | meaning                                                               |
|------|-----------------------------------------------------------------------|
| 0    | done                                                                  |
| 1    | a check failed: the node refused or the outcome is not what was asked |
| 2    | usage: an option, argument, file or name given is wrong or missing    |
| 3    | unreachable: no node answers at the URL or testnet asked for          |
| 99   | ``shardnet load --threshold``: a threshold failed (k6's code)         |

Each error is one ``Error: ...`` line on stderr saying what to fix, never a traceback.
Raise these (``click.ClickException`` subclasses) from a command; click prints the line
and exits with the code. Click's own parsing errors already exit 2.
"""

from __future__ import annotations

import click

OK = 0
CHECK_FAILED = 1
USAGE = 2
UNREACHABLE = 3
THRESHOLD_FAILED = 99

MEANINGS: dict[int, str] = {
    OK: "ok",
    CHECK_FAILED: "a check failed (refused, audit failed, not final in time)",
    USAGE: "usage: a wrong or missing option, argument, file or folder",
    UNREACHABLE: "unreachable: no node answers at the URL or testnet folder given",
    THRESHOLD_FAILED: "load --threshold: a threshold failed",
}


def epilog() -> str:
    """The exit-code table for ``shardnet --help`` (``\b``: click keeps the lines)."""
    rows = "\n".join(f"  {code:<3} {meaning}" for code, meaning in MEANINGS.items())
    return ("\b\nExit codes (errors are one line on stderr saying what to fix):\n" + rows
            + "\n\n\b\nConventions: --testnet DIR or --url URL / $SHARDNET_URL, --json "
              "(stdout), --seed\n(account seed), --rng-seed N (run seed), --out FILE, "
              "--report DIR.\nCompletion: shardnet completion bash|zsh|fish (README: Command "
              "line).")


class CheckFailed(click.ClickException):
    """The command ran but what it checks or asks for did not happen (exit 1)."""

    exit_code = CHECK_FAILED


class UsageFailure(click.ClickException):
    """What the user gave is wrong (exit 2): one line, unlike ``click.UsageError``,
    which prints the usage block too."""

    exit_code = USAGE


class Unreachable(click.ClickException):
    """No node answers (exit 3)."""

    exit_code = UNREACHABLE
