"""Rate control, pure: the offered rate over time and when each arrival is due.

``--rate`` forms: ``500`` (constant), ``500:3000:30s`` (linear ramp over 30 s),
``500,1000,2000:20s`` (steps of 20 s each). Arrival k (k = 1, 2, ...) is due when
the expected count Lambda(t) = integral of rate(t) reaches c_k: c_k = k for evenly
spaced arrivals, a running sum of Exp(1) draws for Poisson arrivals (the time-change
construction of a non-homogeneous Poisson process). Time is an input (seconds since
the start); randomness a seeded ``random.Random``.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

RATE_MAX_TPS = 1_000_000.0


class RateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Stage:
    start_tps: float
    end_tps: float
    duration_s: float | None  # None: until the run's --duration

    def count_within(self, t: float) -> float:
        """Expected arrivals in the first ``t`` seconds of this stage."""
        if self.duration_s is None or self.duration_s == 0:
            return self.start_tps * t
        slope = (self.end_tps - self.start_tps) / self.duration_s
        return self.start_tps * t + slope * t * t / 2

    def rate_within(self, t: float) -> float:
        if self.duration_s is None or self.duration_s == 0:
            return self.start_tps
        return self.start_tps + (self.end_tps - self.start_tps) * t / self.duration_s


def parse_duration(text: str) -> float:
    """``30s``, ``2m``, ``500ms`` or a bare number of seconds."""
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if not found:
        raise RateError(f"{text!r} is not a duration (like 30s, 2m, 500ms)")
    value = float(found.group(1))
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[found.group(2) or "s"]


def _tps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RateError(f"{text!r} is not a rate in tx/s") from None
    if not 0 < value <= RATE_MAX_TPS:
        raise RateError(f"rate {text} must be in (0, {RATE_MAX_TPS:g}] tx/s")
    return value


@dataclass(frozen=True, slots=True)
class RateSchedule:
    stages: tuple[Stage, ...]

    @classmethod
    def parse(cls, text: str) -> RateSchedule:
        parts = text.strip().split(":")
        if len(parts) == 1 and "," not in parts[0]:
            return cls((Stage(_tps(parts[0]), _tps(parts[0]), None),))
        if len(parts) == 3:
            return cls((Stage(_tps(parts[0]), _tps(parts[1]), parse_duration(parts[2])),))
        if len(parts) == 2 and "," in parts[0]:
            each = parse_duration(parts[1])
            return cls(tuple(Stage(_tps(r), _tps(r), each) for r in parts[0].split(",")))
        raise RateError(f"--rate {text!r}: expected TPS, FROM:TO:DURATION or "
                        "R1,R2,...:DURATION")

    @property
    def total_s(self) -> float | None:
        """The schedule's own length (None when it runs until --duration)."""
        if any(stage.duration_s is None for stage in self.stages):
            return None
        return sum(stage.duration_s or 0.0 for stage in self.stages)

    def rate_at(self, t: float) -> float:
        for stage in self.stages:
            if stage.duration_s is None or t < stage.duration_s:
                return stage.rate_within(max(0.0, t))
            t -= stage.duration_s
        return 0.0

    def expected_count(self, t: float) -> float:
        """Lambda(t): arrivals expected in [0, t]."""
        total = 0.0
        for stage in self.stages:
            if stage.duration_s is None or t < stage.duration_s:
                return total + stage.count_within(max(0.0, t))
            total += stage.count_within(stage.duration_s)
            t -= stage.duration_s
        return total


class Arrivals:
    """How many arrivals are due by time ``t``: evenly spaced or Poisson."""

    def __init__(self, schedule: RateSchedule, *, poisson: bool, rng: random.Random) -> None:
        self.schedule = schedule
        self.poisson = poisson
        self._rng = rng
        self._released = 0
        self._next_mark = self._draw(0.0)

    def _draw(self, previous: float) -> float:
        return previous + (self._rng.expovariate(1.0) if self.poisson else 1.0)

    def due(self, t: float) -> int:
        """Arrivals newly due in (last call, t]; ``t`` must not go backwards."""
        budget = self.schedule.expected_count(t)
        count = 0
        while self._next_mark <= budget + 1e-9:
            count += 1
            self._next_mark = self._draw(self._next_mark)
        self._released += count
        return count

    @property
    def released(self) -> int:
        return self._released


def describe(schedule: RateSchedule) -> str:
    parts = []
    for stage in schedule.stages:
        span = "" if stage.duration_s is None else f" for {stage.duration_s:g} s"
        if math.isclose(stage.start_tps, stage.end_tps):
            parts.append(f"{stage.start_tps:g} tx/s{span}")
        else:
            parts.append(f"{stage.start_tps:g} -> {stage.end_tps:g} tx/s{span}")
    return ", then ".join(parts)
