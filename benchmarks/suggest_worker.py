"""The program ``benchmarks/suggest.py`` times: a tiny GPT-2 (4 layers) whose training-style
step the program compiles itself, with a data-dependent branch after the model (one graph
break). Prints, as its last line, JSON with its first call and steady-state step time."""

from __future__ import annotations

import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def step(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits: torch.Tensor = model(ids).logits
    if logits.mean() > 0:  # data-dependent: a graph break after the model
        logits = logits * 2
    return logits


def main() -> None:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=4,
        n_embd=128,
        n_head=4,
        vocab_size=512,
        n_positions=128,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config).eval()
    compiled = torch.compile(step, backend="eager")
    ids = torch.randint(0, 512, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = time.perf_counter()
        compiled(model, ids)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(30):
            compiled(model, ids)
        steady = (time.perf_counter() - start) / 30
    print(json.dumps({"first_call_s": first, "steady_ms": steady * 1e3}))


if __name__ == "__main__":
    main()
