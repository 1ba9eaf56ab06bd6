"""What every Python process a ``policycompile run`` starts pays before its own code: the
``.pth`` start-up with ``POLICYCOMPILE_RUN`` set, against plain ``python -c pass``, in
fresh processes interleaved (a child that never imports torch; docs/distributed.md)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._harness import Timing

RUNS = 21


def _once(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - start


def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "p.yaml"
        policy.write_text("version: 1\ntargets:\n  app.**: {error_on_graph_break: true}\n")
        session = {
            "policy": str(policy),
            "profile": None,
            "audit": False,
            "sha256": "0" * 64,
            "spool": tmp,
            "rank_check": True,
        }
        # bytecode cached, as an installed package has it (pip compiles it at install; an
        # environment with PYTHONDONTWRITEBYTECODE would otherwise compile the package from
        # source in every child), in a prefix of its own for both sides alike
        plain = {
            k: v
            for k, v in os.environ.items()
            if k not in ("POLICYCOMPILE_RUN", "PYTHONDONTWRITEBYTECODE")
        }
        plain["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        child = {**plain, "POLICYCOMPILE_RUN": json.dumps(session)}
        _once(plain), _once(child)  # fills the bytecode cache
        times: dict[str, list[float]] = {"plain": [], "child": []}
        for _ in range(RUNS):  # interleaved, so that the machine's load falls on both
            times["plain"].append(_once(plain))
            times["child"].append(_once(child))
    out: dict[str, object] = {
        k: Timing(statistics.median(v), min(v), max(v)) for k, v in times.items()
    }
    out["ratio"] = statistics.median(times["child"]) / statistics.median(times["plain"])
    return out


def report(results: dict[str, object]) -> str:
    plain, child = results["plain"], results["child"]
    assert isinstance(plain, Timing) and isinstance(child, Timing)
    return "\n".join(
        [
            f"Start-up of a child of `policycompile run` that never imports torch ({RUNS} runs,"
            " bytecode cached as installed):",
            f"  python -c pass:                    {plain.fmt('ms', 1e3)}",
            f"  the same with POLICYCOMPILE_RUN:   {child.fmt('ms', 1e3)}",
            f"  ratio: {results['ratio']:.2f} (goal <= 1.5)",
        ]
    )
