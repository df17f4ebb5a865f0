"""A bounded time series: the last ``window_s`` seconds, never more than ``max_points``."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class TimeSeries(Generic[T]):
    def __init__(self, window_s: float, max_points: int) -> None:
        if window_s <= 0 or max_points < 1:
            raise ValueError("window_s and max_points must be positive")
        self.window_s = window_s
        self._points: deque[tuple[float, T]] = deque(maxlen=max_points)

    def append(self, t: float, value: T) -> None:
        """Add a point at time ``t`` (seconds, not before the last point's) and forget
        the points older than ``t - window_s``."""
        if self._points and t < self._points[-1][0]:
            raise ValueError("points must be appended in time order")
        self._points.append((t, value))
        while self._points and self._points[0][0] < t - self.window_s:
            self._points.popleft()

    def points(self) -> list[tuple[float, T]]:
        return list(self._points)

    def last(self) -> T | None:
        return self._points[-1][1] if self._points else None

    def __len__(self) -> int:
        return len(self._points)


def downsample(points: Sequence[tuple[float, T]], limit: int) -> list[tuple[float, T]]:
    """At most ``limit`` points, evenly strided, the first and the last always kept
    (a chart of 600 points is slow to draw and no easier to read than one of 120)."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]
