"""``python -m benchmarks``: run every benchmark and print its figures."""

from benchmarks import apply_cost, compiled, overhead, resolver

if __name__ == "__main__":
    for bench in (resolver, overhead, apply_cost, compiled):
        print(bench.report(bench.run()))  # type: ignore[attr-defined]
        print()
