"""One variant of the nested-compile-region benchmark, in its own process (see nested.py).

``python -m benchmarks.nested_worker VARIANT LAYERS``; prints one JSON line: first-call
seconds, steady-state latencies, graphs, recompiles and a checksum of the logits.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
VARIANTS = ("whole", "nested", "regional")
POLICY = ROOT / "policies" / "transformers-decoder.yaml"
#: the policy's profile for each variant (None: no policy, torch.compile by hand)
PROFILES = {"whole": None, "nested": "nested", "regional": ""}


def main(variant: str, layers: int) -> dict[str, Any]:
    import torch

    profile = PROFILES[variant]
    if profile is not None:
        import policycompile

        policycompile.apply(POLICY, profile=profile)
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=2048,
        max_position_embeddings=256,
    )
    model: Any = LlamaForCausalLM(config).eval()
    if variant == "whole":
        model = torch.compile(model, dynamic=False)
    ids = torch.randint(0, 2048, (1, 128), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        start = time.perf_counter()
        out = model(ids, use_cache=False).logits
        first = time.perf_counter() - start
        steady = []
        for _ in range(30):
            start = time.perf_counter()
            model(ids, use_cache=False)
            steady.append(time.perf_counter() - start)
    from torch._dynamo.utils import counters, get_compilation_metrics

    recompiles = sum(1 for m in get_compilation_metrics() if not str(m.compile_id).endswith("/0"))
    return {
        "variant": variant,
        "layers": layers,
        "first_call_s": first,
        "steady_ms": [s * 1e3 for s in steady],
        "steady_median_ms": statistics.median(steady) * 1e3,
        "graphs": int(counters["stats"]["unique_graphs"]),
        "recompiles": recompiles,
        "checksum": float(out.double().abs().sum()),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
