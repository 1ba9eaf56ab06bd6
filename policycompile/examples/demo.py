"""The example transformer, run as a program: ``policycompile run policies/demo.yaml -m
policycompile.examples.demo``. The program itself holds no torch.compile decorator; the
policy decides what is compiled, and ``run`` prints the report at exit."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from policycompile.examples import tiny_transformer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args(argv)

    model = tiny_transformer.build()
    tokens = torch.randint(
        0, 256, (args.batch, args.tokens), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        start = time.perf_counter()
        out = model(tokens)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(10):
            out = model(tokens)
        steady = (time.perf_counter() - start) / 10
        with torch.compiler.set_stance("force_eager"):
            reference = model(tokens)
    close = torch.allclose(out, reference, atol=1e-4, rtol=1e-4)
    print(f"first call {first:.2f} s (compiles), then {steady * 1e3:.1f} ms per call")
    print(f"output equals eager: {close} (max abs diff {(out - reference).abs().max():.2e})")
    return 0 if close else 1


if __name__ == "__main__":
    sys.exit(main())
