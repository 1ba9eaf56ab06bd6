"""One variant of the regional-compilation benchmark, in its own process (see regional.py).

Prints one JSON line: first-call seconds, steady-state latencies, graphs, recompiles, peak RSS.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
LAYERS = 24
SIZES = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=LAYERS,
    num_attention_heads=8,
    num_key_value_heads=4,
    vocab_size=2048,
    max_position_embeddings=256,
)
VARIANTS = ("eager", "whole", "hand", "accelerate", "policy")


def main(variant: str) -> dict[str, Any]:
    import torch

    handle = None
    if variant == "policy":
        import policycompile

        handle = policycompile.apply(ROOT / "policies" / "transformers-decoder.yaml", profile="")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(LlamaConfig(**SIZES)).eval()
    if variant == "whole":
        model = torch.compile(model, dynamic=False)
    elif variant == "hand":
        for layer in model.model.layers:  # the PyTorch regional-compilation recipe
            layer.compile(dynamic=False)
    elif variant == "accelerate":
        from accelerate.utils import compile_regions

        model = compile_regions(model, dynamic=False)
    ids = torch.randint(
        0, SIZES["vocab_size"], (1, 128), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        start = time.perf_counter()
        out = model(ids, use_cache=False).logits
        first = time.perf_counter() - start
        steady = []
        for _ in range(40):
            start = time.perf_counter()
            model(ids, use_cache=False)
            steady.append(time.perf_counter() - start)
    from torch._dynamo.utils import counters, get_compilation_metrics

    recompiles = sum(1 for m in get_compilation_metrics() if not str(m.compile_id).endswith("/0"))
    result = {
        "variant": variant,
        "first_call_s": first,
        "steady_ms": [s * 1e3 for s in steady],
        "steady_median_ms": statistics.median(steady) * 1e3,
        "graphs": int(counters["stats"]["unique_graphs"]),
        "recompiles": recompiles,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checksum": float(out.double().abs().sum()),
    }
    if handle is not None:
        result["patched"] = len(handle.records)
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
