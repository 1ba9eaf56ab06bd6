"""The GPU check, one prepared script for a machine with CUDA (`python -m benchmarks.gpu`).

1. Policy-compiled regions produce Triton kernels (Inductor's generated code is captured).
2. Steady state, eager vs policy-compiled, bf16: the example transformer and a transformers
   Llama.
3. Cold compile of the Llama, regional (policy) vs whole-model, each in a fresh process with an
   empty Inductor cache.

Prints one table. Without a CUDA device it says so and exits 0. Takes under 5 minutes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
LLAMA = dict(
    hidden_size=1024,
    intermediate_size=2816,
    num_hidden_layers=16,
    num_attention_heads=16,
    num_key_value_heads=8,
    vocab_size=32000,
    max_position_embeddings=1024,
)


def _steady(fn: Any, n: int = 50) -> float:
    import torch

    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def _llama(device: str) -> tuple[Any, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**LLAMA)).to(device, torch.bfloat16).eval()
    ids = torch.randint(0, LLAMA["vocab_size"], (4, 512), device=device)
    return model, ids


def child(variant: str) -> dict[str, Any]:
    """Cold first call of the Llama on the GPU (run in a fresh process)."""
    import torch

    if variant == "policy":
        import policycompile

        policycompile.apply(ROOT / "policies" / "transformers-decoder.yaml", profile="")
    model, ids = _llama("cuda")
    if variant == "whole":
        model = torch.compile(model, dynamic=False)
    with torch.no_grad():
        start = time.perf_counter()
        model(ids, use_cache=False)
        torch.cuda.synchronize()
    return {"variant": variant, "cold_s": time.perf_counter() - start}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA GPU on this machine; nothing to measure (exit 0).")
        return 0
    from torch._inductor.utils import run_and_get_code

    import policycompile

    name = torch.cuda.get_device_name()
    rows: list[tuple[str, str]] = [("GPU", name), ("torch", torch.__version__)]

    # 1 + 2a: the example transformer under the demo policy
    handle = policycompile.apply(ROOT / "policies" / "demo.yaml", profile="")
    from policycompile.examples import tiny_transformer

    tiny_transformer.STATS_ENABLED = False  # no host sync in the timed loop
    model = tiny_transformer.build(dim=512, heads=8, layers=8).to("cuda", torch.bfloat16)
    tokens = torch.randint(0, 256, (8, 256), device="cuda")
    with torch.no_grad():
        _, code = run_and_get_code(model, tokens)
        kernels = sum(c.count("@triton.jit") for c in code)
        compiled_ms = _steady(lambda: model(tokens))
        with torch.compiler.set_stance("force_eager"):
            eager_ms = _steady(lambda: model(tokens))
    handle.undo()
    rows += [
        ("demo model: Triton kernels generated", str(kernels)),
        (
            "demo model: eager / policy steady state",
            f"{eager_ms:.2f} ms / {compiled_ms:.2f} ms ({eager_ms / compiled_ms:.2f}x)",
        ),
    ]

    # 2b: transformers Llama, bf16
    handle = policycompile.apply(ROOT / "policies" / "transformers-decoder.yaml", profile="")
    llama, ids = _llama("cuda")
    with torch.no_grad():
        _, code = run_and_get_code(lambda: llama(ids, use_cache=False))
        llama_kernels = sum(c.count("@triton.jit") for c in code)
        policy_ms = _steady(lambda: llama(ids, use_cache=False))
        with torch.compiler.set_stance("force_eager"):
            eager_ms = _steady(lambda: llama(ids, use_cache=False))
    handle.undo()
    rows += [
        ("Llama 16 layers: Triton kernels generated", str(llama_kernels)),
        (
            "Llama: eager / policy steady state",
            f"{eager_ms:.2f} ms / {policy_ms:.2f} ms ({eager_ms / policy_ms:.2f}x)",
        ),
    ]

    # 3: cold compile, fresh processes, empty caches
    cold: dict[str, float] = {}
    for variant in ("policy", "whole"):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.gpu", "--child", variant],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=400,
            )
            cold[variant] = json.loads(done.stdout.strip().splitlines()[-1])["cold_s"]
    rows.append(
        (
            "Llama cold compile: regional (policy) / whole",
            f"{cold['policy']:.1f} s / "
            f"{cold['whole']:.1f} s ({cold['policy'] / cold['whole']:.2f}x)",
        )
    )
    width = max(len(k) for k, _ in rows)
    print("| what | measured |\n|---|---|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")
    ok = kernels > 0 and llama_kernels > 0
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
        sys.exit(0)
    sys.exit(main())
