"""The cost of the ranks' agreement check and of the merged report, at 2 and 4 ranks (gloo on
CPU, torchrun --standalone): the same DDP job under plain ``python`` and under
``policycompile run``, interleaved, three jobs each. Per job, the slowest rank's
``init_process_group`` (where ranks exchange the policy digest) and
``destroy_process_group`` (where rank 0 gathers and merges the reports), and the whole
job's wall time."""

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
RANKS = (2, 4)
JOBS = 3
LAUNCH = (sys.executable, "-m", "torch.distributed.run", "--standalone")
POLICY = """\
version: 1
compile: {backend: eager}
targets:
  benchmarks.distributed_worker.Block:
    compile: true
    error_on_graph_break: true
"""


def _job(nproc: int, policy: str | None, cwd: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("POLICYCOMPILE_RUN", None)
    out = tempfile.mkdtemp(dir=cwd)
    worker = ["-m", "benchmarks.distributed_worker", out]
    command = ["-m", "policycompile", "run", policy, *worker] if policy else worker
    start = time.perf_counter()
    done = subprocess.run(
        [*LAUNCH, "--nproc-per-node", str(nproc), *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{nproc} ranks, policy={policy}:\n{done.stderr[-3000:]}")
    lines = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
    if len(lines) != nproc:
        raise RuntimeError(f"expected {nproc} ranks, got {len(lines)}:\n{done.stderr[-3000:]}")
    job = {"wall_s": wall}
    for key in ("init_s", "destroy_s", "agree_s", "gather_s"):
        values = [line[key] for line in lines if key in line]
        if values:
            job[key] = max(values)  # the job waits for its slowest rank
    return job


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pc-dist-") as tmp:
        policy = os.path.join(tmp, "policy.yaml")
        Path(policy).write_text(POLICY)
        for nproc in RANKS:
            plain: list[dict[str, float]] = []
            ours: list[dict[str, float]] = []
            for _ in range(JOBS):  # interleaved: the machine's drift hits both alike
                plain.append(_job(nproc, None, tmp))
                ours.append(_job(nproc, policy, tmp))
            row: dict[str, Any] = {}
            for key in ("init_s", "destroy_s", "wall_s"):
                row[f"plain_{key}"] = timing([j[key] for j in plain])
                row[f"policy_{key}"] = timing([j[key] for j in ours])
            row["agree_s"] = timing([j["agree_s"] for j in ours])
            row["gather_s"] = timing([j["gather_s"] for j in ours])
            results[f"ranks_{nproc}"] = row
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        "Ranks agreeing on the policy and merging one report (gloo, CPU, torchrun --standalone;",
        f"slowest rank per job, median of {JOBS} jobs; plain python vs policycompile run)",
        "",
        f"{'ranks':>5}  {'what':<34} {'plain':>10} {'policy':>10} {'ratio':>7}",
    ]
    for key, row in results.items():
        n = key.split("_")[1]
        for what, label in (
            ("init_s", "init_process_group (+ agreement)"),
            ("destroy_s", "destroy_process_group (+ gather)"),
            ("wall_s", "whole job"),
        ):
            p, q = row[f"plain_{what}"].median, row[f"policy_{what}"].median
            lines.append(f"{n:>5}  {label:<34} {p * 1e3:8.1f}ms {q * 1e3:8.1f}ms {q / p:6.2f}x")
        lines.append(
            f"{n:>5}  {'of which: agreement, gather':<34} {'':>10} "
            f"{row['agree_s'].median * 1e3:6.1f}ms, {row['gather_s'].median * 1e3:.1f}ms"
        )
    lines.append("")
    lines.append(
        "The whole job's difference is mostly policycompile's own start-up (importing and "
        "applying the policy in each rank), not the exchanges."
    )
    return "\n".join(lines)
