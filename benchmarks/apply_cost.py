"""The cost of apply: time and memory per patched function, and what the import hook adds to
importing a large package the policy does not cover (fresh processes, side by side)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import policycompile as pc
from benchmarks._harness import Timing

FUNCTIONS = 2_000
# large: about 600 modules of transformers, none of which the policy covers
UNCOVERED = "transformers.models.llama.modeling_llama"
RUNS = 7

IMPORT_PROBE = """
import sys, time, json
import torch, torch._dynamo  # apply imports these: take them out of both measurements
import policycompile
if sys.argv[1] == "policy":
    policycompile.apply(sys.argv[2])
start = time.perf_counter()
import {module}
print(json.dumps({{"seconds": time.perf_counter() - start, "modules": len(sys.modules)}}))
"""


def _module_source(n: int) -> str:
    lines = []
    for i in range(n):
        lines.append(f"def f{i}(x, y=1):\n    return x + y\n")
    for i in range(n // 10):
        lines.append(f"class C{i}:\n    def m(self, x):\n        return x\n")
    return "\n".join(lines)


def run() -> dict[str, Timing | float]:
    results: dict[str, Timing | float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bench_many.py").write_text(_module_source(FUNCTIONS))
        (root / "policy.yaml").write_text(
            "version: 1\ntargets:\n  bench_many.**: {error_on_graph_break: true}\n"
        )
        (root / "other.yaml").write_text(
            "version: 1\ntargets:\n  some_project.models.**: {error_on_graph_break: true}\n"
        )
        sys.path.insert(0, tmp)
        try:
            import bench_many  # noqa: F401

            samples = []
            memory = []
            patched = 0
            for _ in range(5):
                start = time.perf_counter()
                handle = pc.apply(root / "policy.yaml")
                samples.append(time.perf_counter() - start)
                patched = len(handle.records)
                handle.undo()
                tracemalloc.start()  # separately: tracing allocations slows apply 2-3x
                handle = pc.apply(root / "policy.yaml")
                memory.append(tracemalloc.get_traced_memory()[0])
                tracemalloc.stop()
                handle.undo()
            per = sorted(s / patched for s in samples)
            results["apply_per_function"] = Timing(statistics.median(per), per[0], per[-1])
            results["memory_per_function"] = statistics.median(memory) / patched
            results["patched"] = float(patched)
        finally:
            sys.path.remove(tmp)
            sys.modules.pop("bench_many", None)

        probe = root / "probe.py"
        probe.write_text(IMPORT_PROBE.format(module=UNCOVERED))
        base, hooked = [], []
        for _ in range(RUNS):  # alternate, so machine noise hits both alike
            for mode, into in (("plain", base), ("policy", hooked)):
                out = subprocess.run(
                    [sys.executable, str(probe), mode, str(root / "other.yaml")],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                into.append(json.loads(out.stdout)["seconds"])
        results["import_plain"] = Timing(statistics.median(base), min(base), max(base))
        results["import_hooked"] = Timing(statistics.median(hooked), min(hooked), max(hooked))
    return results


def report(results: dict[str, Timing | float]) -> str:
    per = results["apply_per_function"]
    plain, hooked = results["import_plain"], results["import_hooked"]
    assert isinstance(per, Timing) and isinstance(plain, Timing) and isinstance(hooked, Timing)
    overhead = hooked.median / plain.median - 1
    return "\n".join(
        [
            f"apply: {int(results['patched'])} functions and methods patched",
            f"  time per patched function:   {per.fmt()}",
            f"  memory per patched function: {results['memory_per_function'] / 1024:.2f} KiB",
            f"import {UNCOVERED} (uncovered) in a fresh process, {RUNS} runs each:",
            f"  without a policy: {plain.fmt('ms', 1e3)}",
            f"  with the hook:    {hooked.fmt('ms', 1e3)}",
            f"  overhead: {overhead * 100:+.1f}% (goal < 3%)",
        ]
    )


if __name__ == "__main__":
    print(report(run()))
