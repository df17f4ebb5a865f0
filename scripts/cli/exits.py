"""Exit codes of the ``shardnet`` commands, defined once (issue 17).

| code | meaning                                                               |
|------|-----------------------------------------------------------------------|
| 0    | done                                                                  |
| 1    | a check failed: the node refused or the outcome is not what was asked |
| 2    | usage: an option, argument, file or name given is wrong or missing    |
| 3    | unreachable: no node answers at the URL or testnet asked for          |

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
