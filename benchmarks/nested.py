"""Whole-model compile with the decoder layer as a nested compile region (docs/policy.md),
side by side with plain whole-model ``torch.compile`` and regional compile by policy, on
transformers Llama at 8 and 24 layers (inductor, CPU). Each variant runs in fresh processes:
cold (empty Inductor cache), then once more warm, interleaved across variants; the steady
state is the latency of the calls after the first, over both runs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._harness import timing, worker
from benchmarks.nested_worker import VARIANTS

ROOT = Path(__file__).parent.parent
LAYERS = (8, 24)


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="inductor-nested-") as caches:
        for layers in LAYERS:
            cache = {v: os.path.join(caches, f"{v}-{layers}") for v in VARIANTS}
            cold = {
                v: worker("benchmarks.nested_worker", v, str(layers), cache=cache[v])
                for v in VARIANTS
            }
            warm = {
                v: worker("benchmarks.nested_worker", v, str(layers), cache=cache[v])
                for v in VARIANTS
            }
            row: dict[str, Any] = {}
            for v in VARIANTS:
                row[v] = {
                    "cold_first_call_s": timing([cold[v]["first_call_s"]]),
                    "steady_ms": timing(cold[v]["steady_ms"] + warm[v]["steady_ms"]),
                    "graphs": cold[v]["graphs"],
                    "recompiles": cold[v]["recompiles"],
                    "checksum": cold[v]["checksum"],
                }
            results[f"layers_{layers}"] = row
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        "Nested compile region: transformers Llama (hidden 256, 1 x 128 tokens, inductor, CPU)",
        "  whole: torch.compile(model); nested: the same by policy (profile nested: the model",
        "  a compile entry, each decoder layer a nested_compile_region); regional: each layer a",
        "  compile entry by policy",
        f"  {'layers':>6} {'variant':<9} {'cold 1st call':>13} {'vs whole':>8} {'steady':>10}"
        f" {'vs whole':>8} {'graphs':>6} {'recompiles':>10}",
    ]
    for key, row in results.items():
        layers = key.split("_")[1]
        whole = row["whole"]
        for v in VARIANTS:
            r = row[v]
            cold = r["cold_first_call_s"].median / whole["cold_first_call_s"].median
            steady = r["steady_ms"].median / whole["steady_ms"].median
            lines.append(
                f"  {layers:>6} {v:<9} {r['cold_first_call_s'].median:>11.2f} s {cold:>7.2f}x"
                f" {r['steady_ms'].median:>7.2f} ms {steady:>7.2f}x {r['graphs']:>6}"
                f" {r['recompiles']:>10}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))
