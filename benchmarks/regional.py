"""Regional compilation on a real model, side by side: eager, whole-model torch.compile, the
hand-written per-layer recipe, accelerate's compile_regions, and policycompile with
policies/transformers-decoder.yaml. Each variant runs in fresh processes: cold (empty Inductor
cache), then warm (the same cache) three times, interleaved across variants."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._harness import timing, worker
from benchmarks.regional_worker import LAYERS, VARIANTS

ROOT = Path(__file__).parent.parent
WARM_RUNS = 3


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="inductor-caches-") as caches:
        cache = {v: os.path.join(caches, v) for v in VARIANTS}
        colds = {v: worker("benchmarks.regional_worker", v, cache=cache[v]) for v in VARIANTS}
        warms: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for _ in range(WARM_RUNS):  # interleaved, so machine noise hits every variant alike
            for v in VARIANTS:
                warms[v].append(worker("benchmarks.regional_worker", v, cache=cache[v]))
    for variant in VARIANTS:
        cold, warm = colds[variant], warms[variant]
        steady = [ms for w in warm for ms in w["steady_ms"]]
        results[variant] = {
            "cold_first_call_s": timing([cold["first_call_s"]]),
            "warm_first_call_s": timing([w["first_call_s"] for w in warm]),
            "steady_ms": timing(steady),
            "graphs": cold["graphs"],
            "recompiles": cold["recompiles"],
            "peak_rss_mib": cold["peak_rss_mib"],
            "checksum": cold["checksum"],
        }
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        f"Regional compilation, transformers Llama ({LAYERS} layers, hidden 256, 1 x 128 tokens,"
        " inductor, CPU)",
        f"  {'variant':<11} {'cold 1st call':>13} {'warm 1st call':>13} {'steady':>10} "
        f"{'graphs':>6} {'recompiles':>10} {'peak RSS':>9}",
    ]
    for variant in VARIANTS:
        r = results[variant]
        lines.append(
            f"  {variant:<11} {r['cold_first_call_s'].median:>11.2f} s"
            f" {r['warm_first_call_s'].median:>11.2f} s"
            f" {r['steady_ms'].median:>7.2f} ms {r['graphs']:>6} {r['recompiles']:>10}"
            f" {r['peak_rss_mib']:>5.0f} MiB"
        )
    p, w = results["policy"], results["whole"]
    lines.append(
        f"  policy cold start / whole-model: "
        f"{p['cold_first_call_s'].median / w['cold_first_call_s'].median:.2f} (goal <= 0.5)"
    )
    for other in ("hand", "accelerate"):
        ratio = p["steady_ms"].median / results[other]["steady_ms"].median
        lines.append(f"  policy steady state / {other}: {ratio:.2f} (goal <= 1.00 within noise)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))
