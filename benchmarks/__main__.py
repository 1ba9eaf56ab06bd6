"""``python -m benchmarks`` (``make bench``): run every benchmark, print each report, and write
benchmarks/RESULTS.md and benchmarks/results.json (median, min and max of every figure)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import (
    apply_cost,
    compiled,
    distributed,
    nested,
    overhead,
    placement,
    regional,
    resolver,
    startup,
    suggest,
    tune,
)
from benchmarks._harness import Timing

HERE = Path(__file__).parent
BENCHES = {
    "resolver": resolver,
    "overhead": overhead,
    "apply": apply_cost,
    "compiled": compiled,
    "regional": regional,
    "distributed": distributed,
    "nested": nested,
    "suggest": suggest,
    "startup": startup,
    "placement": placement,
    "tune": tune,
}


def _unit(key: str) -> str:
    for suffix, unit in (("_ms", "ms"), ("_mib", "MiB"), ("_s", "s"), ("_function", "s")):
        if key.endswith(suffix):
            return unit
    return "s"


def flatten(prefix: str, value: Any, out: dict[str, dict[str, Any]]) -> None:
    """One key per figure: Timing -> median/min/max, numbers -> value."""
    if isinstance(value, Timing):
        out[prefix] = {
            "median": value.median,
            "min": value.min,
            "max": value.max,
            "unit": _unit(prefix),
        }
    elif isinstance(value, dict):
        for key, inner in value.items():
            flatten(f"{prefix}.{key}", inner, out)
    elif isinstance(value, int | float):
        out[prefix] = {"value": value}


def machine() -> dict[str, str]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "date": time.strftime("%Y-%m-%d"),
    }


def write(
    figures: dict[str, dict[str, Any]], reports: dict[str, str], info: dict[str, str]
) -> None:
    (HERE / "results.json").write_text(
        json.dumps({"machine": info, "figures": figures, "reports": reports}, indent=2) + "\n"
    )
    lines = ["# Benchmark results", "", "Written by `make bench` (`python -m benchmarks`).", ""]
    lines += ["| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in info.items()]
    lines += ["", "| figure | median | min | max | unit |", "|---|---|---|---|---|"]
    for key, fig in figures.items():
        if "median" in fig:
            lines.append(
                f"| {key} | {fig['median']:.6g} | {fig['min']:.6g} | {fig['max']:.6g}"
                f" | {fig['unit']} |"
            )
        else:
            lines.append(f"| {key} | {fig['value']:.6g} | | | |")
    lines += ["", "## Reports", ""]
    for name, text in reports.items():
        lines += [f"### {name}", "", "```", text, "```", ""]
    gpu = HERE / "GPU.md"
    lines += ["## GPU (Triton)", ""]
    if gpu.exists():
        lines += [gpu.read_text().strip(), ""]
    else:
        lines += [
            "Not measured yet: no GPU machine was at hand. On one, run"
            " `python -m benchmarks.gpu` and save the table it prints as `benchmarks/GPU.md`.",
            "",
        ]
    (HERE / "RESULTS.md").write_text("\n".join(lines))


def main(names: list[str]) -> None:
    """Run the named benchmarks (all by default); a partial run keeps the other benchmarks'
    saved figures rather than dropping them."""
    figures: dict[str, dict[str, Any]] = {}
    reports: dict[str, str] = {}
    saved = HERE / "results.json"
    if names and saved.exists():
        previous = json.loads(saved.read_text())
        reports = {k: v for k, v in previous.get("reports", {}).items() if k not in names}
        figures = {
            k: v for k, v in previous.get("figures", {}).items() if k.split(".")[0] not in names
        }
    for name in names or list(BENCHES):
        bench = BENCHES[name]
        results = bench.run()  # type: ignore[attr-defined]
        reports[name] = bench.report(results)  # type: ignore[attr-defined]
        print(reports[name], "\n", flush=True)
        flatten(name, results, figures)
    write(figures, reports, machine())


if __name__ == "__main__":
    main(sys.argv[1:])
