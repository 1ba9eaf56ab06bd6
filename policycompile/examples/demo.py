"""``python -m policycompile.examples.demo``: the example transformer compiled by a policy."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import policycompile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policy", default=str(Path("policies") / "demo.yaml"))
    parser.add_argument("--profile", default=None)
    args = parser.parse_args(argv)

    handle = policycompile.apply(args.policy, profile=args.profile)
    from policycompile.examples import tiny_transformer

    print(f"policy {args.policy}: {len(handle.records)} objects patched")
    for record in handle.records:
        decorators = " ".join(record.plan.decorators)
        print(f"  {record.plan.target.display:<65} {decorators}")
    model = tiny_transformer.build()
    tokens = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        start = time.perf_counter()
        out = model(tokens)
        first = time.perf_counter() - start
        start = time.perf_counter()
        out = model(tokens)
        second = time.perf_counter() - start
    handle.undo()
    with torch.no_grad():
        reference = model(tokens)
    close = torch.allclose(out, reference, atol=1e-4, rtol=1e-4)
    print(f"first call {first:.2f} s (compiles), second call {second * 1e3:.1f} ms")
    print(f"output equals eager: {close} (max abs diff {(out - reference).abs().max():.2e})")
    return 0 if close else 1


if __name__ == "__main__":
    sys.exit(main())
