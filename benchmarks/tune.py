"""``policycompile tune`` on Llamas of 12 and 24 layers whose policy compiles them whole
(inductor): the
chosen strategy's cold start (process start to the end of the first forward, empty caches)
as a ratio of whole-model compilation and of accelerate's ``compile_regions``, measured the
same way in the same run; and tune's own overhead, its total time over the sum of its runs
(the observing run and the candidates)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
ENTRY = "transformers.models.llama.modeling_llama.LlamaForCausalLM.forward"
PROGRAM = str(ROOT / "benchmarks" / "tune_program.py")


LAYERS = (12, 24)


def run() -> dict[str, Any]:
    return {f"layers_{n}": _tune(n) for n in LAYERS}


def _tune(layers: int) -> dict[str, Any]:
    from policycompile._commands.candidates import Candidate, run_candidate

    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        policy = Path(tmp) / "p.yaml"
        policy.write_text(f"version: 1\ntargets:\n  {ENTRY}:\n    compile: {{backend: inductor}}\n")
        start = time.perf_counter()
        command = [sys.executable, "-m", "policycompile", "tune", str(policy), "--json"]
        done = subprocess.run(
            [*command, PROGRAM, str(layers)],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp,
        )
        total = time.perf_counter() - start
        doc = json.loads(done.stdout)
        observed = float(done.stderr.split(" in ", 1)[1].split(" s;", 1)[0])
        # accelerate, measured as tune measures a candidate: the policy covers the model's
        # module (so that the timer sees it) and compiles nothing; the program compiles
        args = argparse.Namespace(
            profile=None, module=None, program=PROGRAM, program_args=[str(layers), "accelerate"]
        )
        accelerate = run_candidate(
            Candidate("accelerate compile_regions", "program", None, {ENTRY: {"compile": False}}),
            args,
            str(policy),
            ENTRY,
            tmp,
        )
    rows = {r["candidate"]: r for r in doc["candidates"]}
    whole = rows["policy (as it is)"]
    chosen = rows[doc["winner"]]
    runs = observed + sum(r["seconds"] for r in doc["candidates"])
    return {
        "candidates": doc["candidates"],
        "winner": doc["winner"],
        "accelerate": [accelerate.row()],  # rows are for the report: lists are not figures
        "whole_cold_s": whole["cold_s"],
        "chosen_cold_s": chosen["cold_s"],
        "accelerate_cold_s": accelerate.cold or 0.0,
        "chosen_over_whole": chosen["cold_s"] / whole["cold_s"],
        "chosen_over_accelerate": chosen["cold_s"] / accelerate.cold if accelerate.cold else 0.0,
        "tune_total_s": total,
        "tune_overhead": total / runs,
    }


def report(results: dict[str, Any]) -> str:
    return "\n".join(_report(n, results[f"layers_{n}"]) for n in LAYERS)


def _report(layers: int, results: dict[str, Any]) -> str:
    lines = [
        f"policycompile tune, {layers}-layer Llama compiled whole by its policy (inductor, CPU), "
        "cold starts in fresh processes with empty caches:",
    ]
    for row in [*results["candidates"], *results["accelerate"]]:
        verdict = f"rejected: {row['rejected']}" if row["rejected"] else "ok"
        lines.append(
            f"  {row['candidate']:<34} cold {row['cold_s']:>7} s  steady {row['steady_ms']} ms"
            f"  recompiles {row['recompiles']}  {verdict}"
        )
    lines += [
        f"  chosen: {results['winner']}",
        f"  chosen / whole-model: {results['chosen_over_whole']:.2f} (goal <= 0.7)",
        f"  chosen / accelerate compile_regions: {results['chosen_over_accelerate']:.2f}",
        f"  tune's total time {results['tune_total_s']:.0f} s, "
        f"{results['tune_overhead']:.2f}x the sum of its runs",
    ]
    return "\n".join(lines)
