"""Repeat-and-summarise helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Seconds per unit of work over repeated runs."""

    median: float
    min: float
    max: float

    def fmt(self, unit: str = "us", scale: float = 1e6) -> str:
        lo, hi = self.min * scale, self.max * scale
        return f"{self.median * scale:9.2f} {unit} (min {lo:.2f}, max {hi:.2f})"


def measure(fn: Callable[[], object], *, repeat: int = 7, number: int = 1) -> Timing:
    """Run ``fn`` ``number`` times per sample, ``repeat`` samples; seconds per call."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return Timing(statistics.median(samples), min(samples), max(samples))
