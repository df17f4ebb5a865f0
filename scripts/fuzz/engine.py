"""Run a fuzz target for a counted, seeded number of inputs with hypothesis.

The inputs are drawn in chunks of ``CHUNK`` inputs, each chunk one hypothesis run
seeded from ``(seed, target, chunk)`` whose examples are batches of the target's ``batch`` inputs:
the same ``--rng-seed`` and ``--count`` feed the same inputs. Every input is counted as
accepted or refused (by reason); the first untyped exception stops the target,
hypothesis shrinks the batch's draw (its source, its seed), and the failing input is
reported (as hex) with its error and the command replaying it.
"""

from __future__ import annotations

import hashlib
import shlex
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import HypothesisWarning

from scripts.fuzz.targets import Target

CHUNK = 10_000


@dataclass
class Finding:
    target: str
    input: str  # the input as the target shows it (hex for bytes)
    error: str  # "ExceptionType: message"
    where: str  # the innermost frame: file:line in function
    replay: str  # the command that runs this input again

    def to_json(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class Report:
    target: str
    inputs: int = 0
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    finding: Finding | None = None
    wall_s: float = 0.0
    slowest_cpu_ms: float = 0.0  # one input's most CPU time (a figure, not a verdict)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "inputs": self.inputs, "accepted": self.accepted,
            "refused": dict(sorted(self.refused.items())),
            "failures": 0 if self.finding is None else 1,
            "finding": None if self.finding is None else self.finding.to_json(),
            "wall_s": round(self.wall_s, 2), "slowest_cpu_ms": round(self.slowest_cpu_ms, 2),
        }


class EngineError(Exception):
    """Drawing the inputs failed (a bug of the fuzzer, not of the target)."""


class _Untyped(Exception):
    """The target raised an exception it may not raise (carried to hypothesis)."""


def chunk_seed(seed: int, target: str, chunk: int) -> int:
    digest = hashlib.sha256(f"{seed}:{target}:{chunk}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def run_one(target: Target, value: Any) -> tuple[str | None, BaseException | None]:
    """One input: (refusal reason or None, None), or (None, the untyped exception)."""
    try:
        return target.check(value), None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # sorting typed from untyped is the point
        if target.is_typed(exc):
            return str(getattr(exc, "reason", "error")), None
        return None, exc


def describe(exc: BaseException) -> tuple[str, str]:
    """("Type: message", "file:line in function" of the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
    return f"{type(exc).__name__}: {str(exc)[:300]}", where


def run_target(
    target: Target,
    count: int,
    seed: int,
    *,
    chunk: int = CHUNK,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    report = Report(target.name)
    start = time.perf_counter()
    index = 0
    while report.inputs < count and report.finding is None:
        before = report.inputs
        this_seed = chunk_seed(seed, target.name, index)
        _run_chunk(target, target.inputs(this_seed), min(chunk, count - report.inputs),
                   this_seed, report)
        index += 1
        report.wall_s = time.perf_counter() - start
        if progress is not None:
            progress(report)
        if report.inputs == before:  # hypothesis found nothing new to draw
            break
    report.wall_s = time.perf_counter() - start
    return report


def _run_chunk(target: Target, strategy: Any, inputs: int, chunk_seed_: int,
               report: Report) -> None:
    failing: list[tuple[Any, BaseException]] = []

    quota = report.inputs + inputs

    def one(value: Any) -> None:
        began = time.process_time()
        reason, exc = run_one(target, value)
        if exc is not None:
            if not failing:  # count the first failing input; not the shrinker's tries
                report.inputs += 1
            failing.append((value, exc))
            raise _Untyped from exc
        if failing or report.inputs >= quota:
            return
        report.slowest_cpu_ms = max(report.slowest_cpu_ms, 1000 * (time.process_time() - began))
        report.inputs += 1
        if reason is None:
            report.accepted += 1
        else:
            report.refused[reason] += 1

    def batch(values: list[Any]) -> None:
        for value in values:
            one(value)

    @hypothesis_seed(chunk_seed_)
    @settings(
        max_examples=-(-inputs // target.batch), database=None, deadline=None, derandomize=False,
        phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet, report_multiple_bugs=False, print_blob=False,
    )
    @given(strategy)
    def test(values: list[Any]) -> None:
        batch(values)

    try:
        with warnings.catch_warnings():  # a failing batch's repr may be megabytes: unused
            warnings.simplefilter("ignore", HypothesisWarning)
            test()
    except Exception as raised:
        if not failing:
            cause = raised.exceptions[0] if isinstance(raised, ExceptionGroup) else raised
            raise EngineError(f"{target.name}: drawing inputs failed: "
                              f"{type(cause).__name__}: {str(cause)[:200]}") from raised
        value, exc = failing[-1]
        error, where = describe(exc)
        shown = target.show(value)
        report.finding = Finding(target.name, shown, error, where,
                                 f"shardnet fuzz --target {target.name} --replay "
                                 f"{shlex.quote(shown)}")
