"""Compiled steady state: the example transformer hand-decorated vs policy-driven (the same
decorators placed by policies/demo.yaml), side by side: graphs, recompiles, latency."""

from __future__ import annotations

import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch._dynamo.utils import counters

import policycompile as pc
from benchmarks._harness import Timing
from policycompile.examples import tiny_transformer

ROOT = Path(__file__).parent.parent
GRAPHS: dict[str, int] = {"n": 0}
BACKEND = "bench_counting_inductor"


def _register() -> None:
    if BACKEND in torch._dynamo.list_backends(exclude_tags=()):
        return

    @torch._dynamo.register_backend(name=BACKEND)  # type: ignore[misc]
    def counting(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        from torch._inductor.compile_fx import compile_fx

        GRAPHS["n"] += 1
        return compile_fx(gm, example_inputs)


def hand_decorated_source() -> str:
    """tiny_transformer.py with the demo policy's decorators written into the source."""
    src = Path(tiny_transformer.__file__).read_text()
    eogb_true = "@torch._dynamo.error_on_graph_break(True)\n"
    for name in ("rotate_half", "apply_rotary", "build"):
        src = src.replace(f"\ndef {name}(", f"\n{eogb_true}def {name}(")
    for name in ("log_activation_stats", "check_finite"):
        src = src.replace(
            f"\ndef {name}(", f"\n@torch._dynamo.error_on_graph_break(False)\ndef {name}("
        )
    lines = src.split("\n")
    out, cls = [], ""
    for line in lines:
        if line.startswith("class "):
            cls = line.split()[1].split("(")[0]
        stripped = line.strip()
        if line.startswith("    def ") and not stripped.startswith("def __"):
            out.append(f"    {eogb_true.strip()}")
            if cls == "DecoderBlock" and stripped.startswith("def forward("):
                out.append(f"    @torch.compile(backend={BACKEND!r}, dynamic=False)")
        out.append(line)
    return "\n".join(out)


def _warm_up(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[int, int]:
    """Call twice (compile, then reuse); the graphs and recompiles that took."""
    GRAPHS["n"] = 0
    counters.clear()
    with torch.no_grad():
        model(tokens)
        model(tokens)
    return GRAPHS["n"], int(sum(counters["recompiles"].values()))


def _latency(model: torch.nn.Module, tokens: torch.Tensor, n: int = 60) -> list[float]:
    samples = []
    with torch.no_grad():
        for _ in range(n):
            start = time.perf_counter()
            model(tokens)
            samples.append(time.perf_counter() - start)
    return samples


def run() -> dict[str, Any]:
    _register()
    tokens = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(0))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tiny_transformer_hand.py").write_text(hand_decorated_source())
        policy = Path(tmp) / "demo.yaml"
        policy.write_text(
            (ROOT / "policies" / "demo.yaml")
            .read_text()
            .replace("backend: inductor", f"backend: {BACKEND}")
        )
        sys.path.insert(0, tmp)
        try:
            torch._dynamo.reset()
            hand = importlib.import_module("tiny_transformer_hand").build()
            results["hand_graphs"], results["hand_recompiles"] = _warm_up(hand, tokens)

            handle = pc.apply(policy)
            sys.modules.pop("policycompile.examples.tiny_transformer", None)
            tt = importlib.import_module("policycompile.examples.tiny_transformer")
            model = tt.build()
            results["policy_graphs"], results["policy_recompiles"] = _warm_up(model, tokens)

            hand_s, policy_s = [], []
            for _ in range(5):  # alternate blocks of calls
                hand_s += _latency(hand, tokens)
                policy_s += _latency(model, tokens)
            handle.undo()
            eager_s = _latency(model, tokens)
        finally:
            sys.path.remove(tmp)
            sys.modules.pop("tiny_transformer_hand", None)
            sys.modules.pop("policycompile.examples.tiny_transformer", None)
    for key, samples in (("hand", hand_s), ("policy", policy_s), ("eager", eager_s)):
        results[f"{key}_latency"] = Timing(statistics.median(samples), min(samples), max(samples))
    return results


def report(results: dict[str, Any]) -> str:
    hand, policy, eager = (results[f"{k}_latency"] for k in ("hand", "policy", "eager"))
    return "\n".join(
        [
            "Compiled steady state, example transformer (4 blocks, batch 4 x 64 tokens, inductor)",
            f"  hand-decorated: {results['hand_graphs']} graphs, {results['hand_recompiles']} "
            f"recompiles, {hand.fmt('ms', 1e3)}",
            f"  policy:         {results['policy_graphs']} graphs, "
            f"{results['policy_recompiles']} recompiles, {policy.fmt('ms', 1e3)}",
            f"  eager:          {eager.fmt('ms', 1e3)}",
            f"  latency ratio policy/hand: {policy.median / hand.median:.3f}"
            " (goal 1.00 within noise)",
        ]
    )


if __name__ == "__main__":
    print(report(run()))
