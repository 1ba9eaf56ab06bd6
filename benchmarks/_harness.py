"""Repeat-and-summarise helpers shared by the benchmarks."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


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


def timing(values: list[float]) -> Timing:
    """Median, min and max of measured values."""
    return Timing(statistics.median(values), min(values), max(values))


def worker(module: str, *args: str, cache: str) -> dict[str, Any]:
    """Run ``python -m MODULE ARGS`` in a fresh process with its own Inductor cache; its last
    line of output is a JSON object, returned."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("POLICYCOMPILE_PROFILE", None)
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
