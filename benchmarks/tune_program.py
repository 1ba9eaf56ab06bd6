"""The program ``benchmarks/tune.py`` tunes: a transformers Llama of LAYERS layers (its first
argument), three forward passes (scoring, no cache); ``accelerate`` as its second argument
compiles it with accelerate's ``compile_regions`` itself."""

from __future__ import annotations

import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main() -> None:
    layers = int(sys.argv[1])
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        max_position_embeddings=128,
    )
    model = LlamaForCausalLM(config).eval()
    if sys.argv[2:] == ["accelerate"]:
        from accelerate.utils import compile_regions

        model = compile_regions(model)
    ids = torch.randint(0, 512, (1, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for _ in range(3):
            model(input_ids=ids, use_cache=False)


if __name__ == "__main__":
    main()
