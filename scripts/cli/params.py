"""Click parameter types and small helpers the subcommands share."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from scripts.cli.load.rate import RateError, parse_duration

F = TypeVar("F", bound=Callable[..., Any])


class Duration(click.ParamType):  # type: ignore[type-arg]
    """``500ms``, ``10s``, ``2m`` or a number of seconds; ``positive`` refuses 0."""

    name = "duration"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration(str(value))
            except RateError as exc:
                self.fail(str(exc), param, ctx)
        if self.positive and seconds <= 0:
            self.fail(f"{value!r} is not a positive duration", param, ctx)
        return seconds


def free_base_port(count: int) -> int:
    """A port P with P..P+count-1 free on 127.0.0.1 right now, below the kernel's
    ephemeral range (outgoing connections take ports from there at any moment)."""
    try:  # Linux; elsewhere the IANA ephemeral range's start
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 49152
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, max(20_001, low - count))
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port range on 127.0.0.1")


# ---------------------------------------------------------------------------
# The command-line conventions (issue 17, README "Command line"): one spelling per
# meaning, old spellings kept as hidden aliases or refused with the new name.

DEFAULT_TESTNET = Path("testnets/default")
URL_ENV = "SHARDNET_URL"
TESTNET_HELP = "Testnet folder."
TESTNET_OR_URL_HELP = (f"Testnet folder [default: {DEFAULT_TESTNET} unless --url or "
                       f"{URL_ENV} is given].")
URLS_HELP = ("A node's API URL (repeatable); the rest is found by GET /v1/network. "
             f"Default: ${URL_ENV} (comma-separated).")


class AliasedOption(click.Option):
    """An option with old spellings (``hidden_aliases``) that still parse but show in
    neither ``--help`` nor shell completion (they are given to the parser only)."""

    def __init__(self, param_decls: Sequence[str], *, hidden_aliases: Sequence[str] = (),
                 **kwargs: Any) -> None:
        self.hidden_aliases = tuple(hidden_aliases)
        super().__init__(param_decls, **kwargs)

    @property
    def visible_opts(self) -> list[str]:
        return list(self.opts)

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        shown = self.opts
        self.opts = [*shown, *self.hidden_aliases]
        try:
            super().add_to_parser(parser, ctx)
        finally:
            self.opts = shown


def visible_names(param: click.Parameter) -> list[str]:
    """The spellings of ``param`` that ``--help`` shows (none for a hidden option)."""
    if not isinstance(param, click.Option) or param.hidden:
        return []
    if isinstance(param, AliasedOption):
        return param.visible_opts + list(param.secondary_opts)
    return list(param.opts) + list(param.secondary_opts)


def testnet_option(name: str = "root", *, default: Path | None = DEFAULT_TESTNET,
                   help: str | None = None, exists: bool = False) -> Callable[[F], F]:
    """``--testnet DIR``, the testnet folder (``--dir`` still parses, hidden). With
    ``default=None`` the command falls back to ``--url`` / ``SHARDNET_URL``, then to
    ``testnets/default``."""
    return click.option(
        "--testnet", name, cls=AliasedOption, hidden_aliases=("--dir",),
        type=click.Path(file_okay=False, exists=exists, path_type=Path), default=default,
        show_default=default is not None, metavar="DIR",
        help=help or (TESTNET_HELP if default is not None else TESTNET_OR_URL_HELP))


def urls_option(name: str = "urls") -> Callable[[F], F]:
    """``--url URL`` (repeatable), else ``$SHARDNET_URL`` (comma-separated: the command
    reads it, ``scripts.cli.load.targets.urls_from_env``)."""
    return click.option("--url", name, multiple=True, metavar="URL", help=URLS_HELP)


def json_option(help: str = "Machine output: JSON on stdout (human messages on stderr).",
                ) -> Callable[[F], F]:
    """``--json``: the command's result as JSON on stdout, everything else on stderr."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def rng_seed_option(default: int = 1, help: str = "Random seed of the run: same seed, "
                    "same run.", name: str = "rng_seed") -> Callable[[F], F]:
    """``--rng-seed N``, a run's random seed (an integer). ``--seed`` is the account seed
    (a string) everywhere: given to a command with ``--rng-seed``, it is refused with the
    new name (``renamed_option``)."""
    def decorate(func: F) -> F:
        func = renamed_option("--seed", "--rng-seed",
                              "--seed is the account seed (a string) in shardnet; the run's "
                              "random seed is --rng-seed N")(func)
        return click.option("--rng-seed", name, type=int, default=default, show_default=True,
                            metavar="N", help=help)(func)

    return decorate


def renamed_option(old: str, new: str, message: str | None = None) -> Callable[[F], F]:
    """A hidden ``old`` that refuses, with one line naming ``new`` (exit 2): for an old
    spelling whose meaning changed, where a silent alias would mislead."""
    from scripts.cli.exits import UsageFailure

    def refuse(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            raise UsageFailure(message or f"{old} is now {new}")

    dest = "renamed_" + old.lstrip("-").replace("-", "_")
    return click.option(old, dest, hidden=True, expose_value=False, default=None,
                        callback=refuse, is_eager=True)


def report_option(help: str = "Write the report's files (JSON, CSV, HTML) to this folder.",
                  name: str = "report_dir", *, exists: bool = False) -> Callable[[F], F]:
    """``--report DIR``: a command that writes several files writes them there."""
    return click.option("--report", name, type=click.Path(file_okay=False, exists=exists,
                                                          path_type=Path),
                        default=None, metavar="DIR", help=help)


def out_option(help: str = "Write the result to this file.", name: str = "out", *,
               default: Path | str | None = None, show_default: bool = True,
               aliases: Sequence[str] = ("--json-out",)) -> Callable[[F], F]:
    """``--out FILE``: a command that writes one file (``--json-out`` still parses,
    hidden)."""
    return click.option("--out", name, cls=AliasedOption, hidden_aliases=tuple(aliases),
                        type=click.Path(dir_okay=False, path_type=Path), default=default,
                        show_default=show_default and default is not None, metavar="FILE",
                        help=help)


JSON_STDOUT_KEY = "shardnet.json_stdout"


def _json_to_stdout(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        import contextlib
        import sys

        ctx.meta[JSON_STDOUT_KEY] = sys.stdout
        ctx.with_resource(contextlib.redirect_stdout(sys.stderr))


def json_stdout_option(help: str = "The JSON result on stdout; tables and progress go to "
                       "stderr.") -> click.Option:
    """``--json`` for a command whose human output is printed all along the way (the
    benchmarks): while it runs, stdout is stderr, and ``json_stdout()`` is the real
    stdout for the one JSON document."""
    return click.Option(["--json", "json_stdout"], is_flag=True, expose_value=False,
                        callback=_json_to_stdout, is_eager=True, help=help)


def json_stdout() -> Any:
    """The stream the JSON result goes to when ``--json`` (``json_stdout_option``) was
    given, else None."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.meta.get(JSON_STDOUT_KEY)
