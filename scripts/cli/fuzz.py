"""``shardnet fuzz``: feed the decoders of untrusted bytes hostile inputs and count them.

``--target NAME`` (or several, comma-separated, or ``all``) runs each target of
``scripts/fuzz/targets.py`` for ``--count`` inputs (per target) drawn with hypothesis
from ``--rng-seed``: random bytes, encodings of the decoder's own type, and mutations of
valid signed samples (bit flips, truncation, splicing, length lies, deep nesting, huge
declared sizes). A decoder may refuse an input only with its typed error (a
``ShardnetError`` and its reason); any other exception is a finding: the target stops,
the input is shrunk and printed as hex with the command replaying it, and the exit
status is 1. A crash of the interpreter prints its traceback (``faulthandler``).

Prints a table (target, inputs, accepted, refused by reason, failures); ``--json``
prints the report as JSON instead, ``--out PATH`` also writes it. ``--replay
HEX`` runs one input of one target and says what the decoder did with it.

``--target api`` (named, not in ``all``) sends ``--count`` schemathesis requests drawn
from the node's ``/v1/openapi.json`` to a one-shard testnet it starts on 127.0.0.1 and
stops after, or to ``--url``: any 5xx but the documented 503s, an answer off the
document, an untyped error or a logged ``api.internal_error`` is a finding, printed as
the request's JSON with its curl command (``scripts/fuzz/api.py``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import click

from scripts.cli.params import json_option, out_option, rng_seed_option
from scripts.fuzz.engine import EngineError, Report, describe, run_one, run_target
from scripts.fuzz.targets import TARGETS, Target


def _enable_faulthandler() -> None:
    """A crash of the interpreter (a C extension's segfault) prints its Python traceback."""
    # Not where stderr has no file descriptor (an embedding, a test runner).
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        faulthandler.enable(file=sys.__stderr__ or sys.stderr)


def _targets(spec: str) -> list[Target]:
    names = ([n for n, t in TARGETS.items() if not t.needs_node] if spec == "all"
             else [n.strip() for n in spec.split(",") if n.strip()])
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names:
        named = ", ".join(unknown) or repr(spec)
        raise click.UsageError(f"unknown target {named}; known: all, {', '.join(TARGETS)}")
    return [TARGETS[n] for n in names]


def _table(reports: list[Report]) -> str:
    rows = [("target", "inputs", "accepted", "failures", "refused by reason")]
    for r in reports:
        refused = ", ".join(f"{k} {v}" for k, v in r.refused.most_common()) or "-"
        rows.append((r.target, str(r.inputs), str(r.accepted),
                     "0" if r.finding is None else "1", refused))
    rows.append(("total", str(sum(r.inputs for r in reports)),
                 str(sum(r.accepted for r in reports)),
                 str(sum(r.finding is not None for r in reports)), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:4], widths[1:],
                                                                           strict=True)), row[4]])
        for row in rows)


def summarize(reports: list[Report], seed: int, count: int, wall_s: float,
              cpu_s: float) -> dict[str, Any]:
    return {
        "seed": seed, "count_per_target": count,
        "inputs": sum(r.inputs for r in reports),
        "accepted": sum(r.accepted for r in reports),
        "failures": sum(r.finding is not None for r in reports),
        "wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.machine()},
        "targets": [r.to_json() for r in reports],
    }


def _replay(target: Target, text: str) -> None:
    try:
        value = target.parse(text)
    except ValueError as exc:
        raise click.UsageError(f"--replay: not an input of {target.name}: {exc}") from None
    reason, failure = run_one(target, value)
    if failure is not None:
        error, where = describe(failure)
        click.echo(f"{target.name}: finding: {error} at {where}")
        raise SystemExit(1)
    click.echo(f"{target.name}: " + ("accepted" if reason is None else f"refused: {reason}"))


@click.command()
@click.option("--target", "target_spec", default="all", show_default=True,
              metavar="NAME[,NAME...]|all", help=f"Targets: {', '.join(TARGETS)}.")
@click.option("--count", type=click.IntRange(1), default=1000, show_default=True,
              help="Inputs per target.")
@rng_seed_option(0, "The same seed and count feed the same inputs.", name="seed")
@json_option("Print the report as JSON on stdout, not a table.")
@out_option("Also write the JSON report here.", name="json_out")
@click.option("--replay", default=None, metavar="HEX",
              help="Run this one input of --target (a finding's input: hex, or for api "
                   "the request's JSON) and exit.")
@click.option("--progress", is_flag=True, help="A line on stderr after each chunk of inputs.")
@click.option("--url", default=None, metavar="URL",
              help="--target api: fuzz the node at this URL (default: start a one-shard "
                   "testnet on 127.0.0.1 and stop it after).")
def fuzz(target_spec: str, count: int, seed: int, as_json: bool, json_out: Path | None,
         replay: str | None, progress: bool, url: str | None) -> None:
    """Fuzz the decoders of untrusted bytes, or the HTTP API (--target api, not in
    all); exit 1 on any untyped exception or answer the API may not give."""
    _enable_faulthandler()
    targets = _targets(target_spec)
    with contextlib.ExitStack() as stack:
        api_run = None
        if any(t.needs_node for t in targets):
            from scripts.fuzz import api

            api_run = stack.enter_context(api.fuzzing(url))
        if replay is not None:
            if len(targets) != 1:
                raise click.UsageError("--replay needs exactly one --target")
            _replay(targets[0], replay)
            return
        _run(targets, count, seed, as_json, json_out, progress, api_run)


def _run(targets: list[Target], count: int, seed: int, as_json: bool, json_out: Path | None,
         progress: bool, api_run: Any) -> None:
    def tell(report: Report) -> None:
        click.echo(f"{report.target}: {report.inputs} inputs, {report.wall_s:.0f} s", err=True)

    wall, cpu = time.perf_counter(), time.process_time()
    try:
        reports = [run_target(t, count, seed, progress=tell if progress else None)
                   for t in targets]
    except EngineError as exc:
        raise click.ClickException(str(exc)) from None
    if api_run is not None:  # the node's api.internal_error events are findings too
        api_run.settle(next(r for r in reports if r.target == "api"))
    summary = summarize(reports, seed, count, time.perf_counter() - wall,
                        time.process_time() - cpu)
    if api_run is not None:
        summary["api"] = api_run.to_json()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(_table(reports))
        if api_run is not None:
            click.echo(api_run.line())
        for r in reports:
            if r.finding is not None:
                click.echo(f"FINDING {r.target}: {r.finding.error} at {r.finding.where}\n"
                           f"  input: {r.finding.input}\n  replay: {r.finding.replay}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2) + "\n")
    if summary["failures"]:
        raise SystemExit(1)
