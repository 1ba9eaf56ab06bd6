"""Load+validate time by policy size, and resolve time per name as the rules grow (O(depth))."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import policycompile as pc
from benchmarks._harness import Timing, measure

SIZES = (100, 1_000, 10_000)


def policy_text(n: int, seed: int = 0) -> str:
    """A policy of ``n`` targets: 80% exact names, 15% '*' globs, 5% '**' subtrees."""
    rnd = random.Random(seed)
    lines = ["version: 1", "targets:"]
    for i in range(n):
        kind = rnd.random()
        mod = f"proj.pkg{i % 50}.mod{i}"
        if kind < 0.80:
            pattern = f"{mod}.Class{i % 7}.method{i % 11}"
        elif kind < 0.95:
            pattern = f"{mod}.*Block{i % 5}"
        else:
            pattern = f"{mod}.**"
        value = "true" if i % 2 else "false"
        lines.append(f"  {pattern}: {{error_on_graph_break: {value}}}")
    return "\n".join(lines) + "\n"


def names(count: int, seed: int = 1) -> list[str]:
    """Names 5 to 7 segments deep, half under rules' modules and half elsewhere."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        mod = f"proj.pkg{rnd.randrange(50)}.mod{rnd.randrange(100)}"
        out.append(
            f"{mod}.Class{i % 7}.method{i % 11}" if i % 2 else f"{mod}.XBlock{i % 5}.forward"
        )
    return out


def run() -> dict[str, Timing]:
    results: dict[str, Timing] = {}
    queries = names(2_000)
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            path = Path(tmp) / f"p{n}.yaml"
            path.write_text(policy_text(n))
            results[f"load_validate_{n}"] = measure(lambda p=path: pc.load(p), repeat=5)
            policy = pc.load(path)

            def resolve_all(policy: pc.Policy = policy) -> None:
                policy.tree._cache.clear()  # measure the walk, not the per-name cache
                for q in queries:
                    policy.resolve(q)

            t = measure(resolve_all, repeat=7)
            results[f"resolve_{n}"] = Timing(*(v / len(queries) for v in (t.median, t.min, t.max)))
    return results


def report(results: dict[str, Timing]) -> str:
    lines = ["Resolver: load+validate per policy, resolve per name (cold per-name cache)"]
    for n in SIZES:
        lines.append(
            f"  load+validate {n:>6} targets: {results[f'load_validate_{n}'].fmt('ms', 1e3)}"
        )
    for n in SIZES:
        lines.append(f"  resolve, {n:>6} rules:       {results[f'resolve_{n}'].fmt()}")
    ratio = results[f"resolve_{SIZES[-1]}"].median / results[f"resolve_{SIZES[0]}"].median
    lines.append(f"  resolve ratio {SIZES[-1]} rules / {SIZES[0]} rules: {ratio:.2f} (goal <= 2)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))
