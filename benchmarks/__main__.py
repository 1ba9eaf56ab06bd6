"""``python -m benchmarks``: run every benchmark and print its figures."""

from benchmarks import resolver

if __name__ == "__main__":
    print(resolver.report(resolver.run()))
