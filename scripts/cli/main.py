"""The ``shardnet`` command.

Subcommands live in their own modules and are imported only when invoked, so
``shardnet --help`` stays fast and one broken subsystem cannot hide the others.
Add a command by adding one line to ``COMMANDS`` (or to ``BENCHMARKS`` for
``shardnet bench NAME``), and follow the conventions of README "Command line" with
the option helpers of ``scripts/cli/params.py`` (``testnet_option``, ``urls_option``,
``json_option``, ``rng_seed_option``, ``out_option``, ``report_option``) and the exit
codes of ``scripts/cli/exits.py``. Internal commands are ``hidden=True``.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from scripts.cli.exits import UsageFailure, epilog

COMMANDS: dict[str, str] = {
    # name: "module:attribute"
    "logs": "scripts.cli.logs:logs",
    "ledger-demo": "scripts.cli.demo:ledger_demo",
    "demo": "scripts.cli.demo:demo_moved",  # hidden (HIDDEN): says where it went
    "completion": "scripts.cli.completion:completion",
    "node": "node.main:node_command",
    "testnet": "scripts.cli.testnet.cli:testnet",
    "keys": "scripts.cli.keys:keys",
    "account": "scripts.cli.wallet:account",
    "tx": "scripts.cli.wallet:tx",
    "block": "scripts.cli.explorer:block",
    "events": "scripts.cli.explorer:events",
    "audit": "scripts.cli.audit:audit",
    "load": "scripts.cli.load.cli:load",
    "simulate": "scripts.cli.simulate:simulate",
    "fuzz": "scripts.cli.fuzz:fuzz",
    "chaos": "scripts.cli.chaos:chaos",
    "collect": "scripts.cli.collect:collect",
    "dashboard": "scripts.dashboard.cli:dashboard",
    "project": "scripts.cli.project:project",
}

HIDDEN = frozenset({"demo"})  # in COMMANDS, not in --help

BENCHMARKS: dict[str, str] = {
    # shardnet bench NAME: "module:attribute"
    "p2p": "scripts.bench.p2p:bench_p2p",
    "ledger": "scripts.bench.ledger:bench_ledger",
    "executor": "scripts.bench.executor:bench_executor",
    "state-root": "scripts.bench.state:state_root",
    "node": "scripts.bench.node:bench_node",
    "consensus": "scripts.bench.consensus:bench_consensus",
    "crossshard": "scripts.bench.crossshard:bench_crossshard",
    "e2e": "scripts.bench.e2e:bench_e2e",
    "verify": "scripts.bench.verify:bench_verify",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands:
            module_name, attribute = self.lazy_commands[name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                # A command whose optional dependency is absent (``fuzz`` needs the dev
                # extras) must not break ``--help`` or the other commands.
                return _unavailable(name, exc.name or str(exc))
            command: click.Command = getattr(module, attribute)
            return command
        return super().get_command(ctx, name)


class RootGroup(LazyGroup):
    """``shardnet``: a usage error of any subcommand (unknown option, bad value, missing
    argument) is one line naming what to fix and where help is, exit 2, instead of
    click's usage block."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None


def _one_line(exc: click.UsageError) -> click.ClickException:
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc  # a group given no subcommand: its help, as click prints it
    where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
    return UsageFailure(" ".join(exc.format_message().split()).rstrip(".") + where)


def _unavailable(name: str, missing: str) -> click.Command:
    def fail() -> None:
        raise click.ClickException(
            f"shardnet {name} needs the Python package {missing!r}: "
            "pip install -e '.[dev]' (or run `make venv`)"
        )

    return click.Command(name, callback=fail, add_help_option=False,
                         short_help=f"(unavailable here: needs {missing})",
                         context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True})


@click.group(
    cls=RootGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=epilog(),
)
@click.version_option(package_name="shardnet")
def main() -> None:
    """shardnet: a local multi-shard testnet with parallel execution and PBFT."""


class BenchGroup(LazyGroup):
    """``shardnet bench NAME``: every benchmark also takes ``--json`` (the document its
    ``--out`` file gets, on stdout; its tables and progress on stderr)."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None and not any(p.name == "json_stdout" for p in command.params):
            from scripts.cli.params import json_stdout_option

            command.params.append(json_stdout_option())
        return command


@main.group(cls=BenchGroup, lazy_commands=BENCHMARKS)
def bench() -> None:
    """Benchmarks: each prints a table and writes JSON (--out FILE; --json: on stdout)."""


if __name__ == "__main__":
    main()
