"""Eager per-call overhead: bare function vs the hand-written decorator vs the policy wrapper,
with the error_on_graph_break flag kept (value already in force) and flipped."""

from __future__ import annotations

import sys
import tempfile
import textwrap
import timeit
from pathlib import Path

import torch

import policycompile as pc
from benchmarks._harness import Timing

N = 200_000


def _per_call(fn: object, repeat: int = 9) -> Timing:
    samples = [t / N for t in timeit.repeat("f(1)", globals={"f": fn}, number=N, repeat=repeat)]
    samples.sort()
    return Timing(samples[len(samples) // 2], samples[0], samples[-1])


def run() -> dict[str, Timing]:
    results: dict[str, Timing] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bench_target.py").write_text(
            textwrap.dedent(
                """
                def kept(x):
                    return x

                def flipped(x):
                    return x

                def bare(x):
                    return x
                """
            )
        )
        (root / "policy.yaml").write_text(
            "version: 1\ntargets:\n"
            "  bench_target.kept: {error_on_graph_break: false}\n"
            "  bench_target.flipped: {error_on_graph_break: true}\n"
        )
        sys.path.insert(0, tmp)
        try:
            import bench_target

            hand_kept = torch._dynamo.error_on_graph_break(False)(bench_target.bare)
            hand_flipped = torch._dynamo.error_on_graph_break(True)(bench_target.bare)
            with pc.apply(root / "policy.yaml"):
                for _ in range(2):  # interleave, so drift hits every variant alike
                    results["bare"] = _per_call(bench_target.bare)
                    results["hand_kept"] = _per_call(hand_kept)
                    results["policy_kept"] = _per_call(bench_target.kept)
                    results["hand_flipped"] = _per_call(hand_flipped)
                    results["policy_flipped"] = _per_call(bench_target.flipped)
        finally:
            sys.path.remove(tmp)
            sys.modules.pop("bench_target", None)
    return results


def report(results: dict[str, Timing]) -> str:
    bare = results["bare"].median
    lines = [
        "Eager per-call overhead (ns over the bare call; ratio policy/hand overhead, goal <= 0.5)"
    ]
    lines.append(f"  bare call:                {bare * 1e9:8.1f} ns")
    for case in ("kept", "flipped"):
        hand = results[f"hand_{case}"].median - bare
        policy = results[f"policy_{case}"].median - bare
        lines.append(
            f"  flag {case:<8} hand +{hand * 1e9:7.1f} ns   policy +{policy * 1e9:7.1f} ns"
            f"   ratio {policy / hand:.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))
