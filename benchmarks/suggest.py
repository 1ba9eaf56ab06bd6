"""What ``policycompile suggest`` costs over running the program plainly: a tiny GPT-2 whose
step the program compiles itself (``benchmarks/suggest_worker.py``), run as ``python -m``,
as ``policycompile run`` with an empty policy, and as ``policycompile suggest``, interleaved,
three runs each. Whole-process wall time, and the program's own first call (which compiles,
through the observing backend under suggest) and steady-state step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import timing

ROOT = Path(__file__).parent.parent
RUNS = 3
WORKER = ["-m", "benchmarks.suggest_worker"]


def _once(kind: str, tmp: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("POLICYCOMPILE_RUN", None)
    policycompile = [sys.executable, "-m", "policycompile"]
    command = {
        "plain": [sys.executable, *WORKER],
        "run": [*policycompile, "run", os.path.join(tmp, "empty.yaml"), *WORKER],
        "suggest": [*policycompile, "suggest", "-o", os.path.join(tmp, "s.yaml"), *WORKER],
    }[kind]
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=tmp, env=env, capture_output=True, text=True, check=False, timeout=600
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{kind}:\n{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return {**figures, "wall_s": wall}


def run() -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "run": [], "suggest": []}
    with tempfile.TemporaryDirectory(prefix="pc-suggest-") as tmp:
        Path(tmp, "empty.yaml").write_text("version: 1\ntargets: {}\n")
        for _ in range(RUNS):  # interleaved: the machine's drift hits all three alike
            for kind, seen in runs.items():
                seen.append(_once(kind, tmp))
    return {
        kind: {key: timing([r[key] for r in seen]) for key in seen[0]}
        for kind, seen in runs.items()
    }


def report(results: dict[str, Any]) -> str:
    plain = results["plain"]
    lines = [
        "policycompile suggest on a tiny GPT-2 the program compiles itself (backend eager, one",
        f"graph break), median of {RUNS} runs, interleaved; ratio to plain python",
        "",
        f"{'':<28} {'wall':>16} {'first call':>16} {'steady step':>18}",
    ]
    for kind, label in (
        ("plain", "python -m PROGRAM"),
        ("run", "policycompile run (empty)"),
        ("suggest", "policycompile suggest"),
    ):
        row = results[kind]
        cells = []
        for key, scale, unit in (
            ("wall_s", 1, "s"),
            ("first_call_s", 1, "s"),
            ("steady_ms", 1, "ms"),
        ):
            value = row[key].median
            ratio = value / plain[key].median
            cells.append(f"{value * scale:7.2f}{unit} {ratio:5.2f}x")
        lines.append(f"{label:<28} {cells[0]:>16} {cells[1]:>16} {cells[2]:>18}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))
