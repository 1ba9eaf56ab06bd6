"""The bundled policy's `nested` profile on transformers' Llama (code nobody here wrote):
whole-model compile with each decoder layer a nested compile region, equal to the same two
decorators placed by hand with torch's own functions: the same graphs, the same calls in
them, the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import ROOT, python

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, sys, torch, transformers, policycompile
from transformers.models.llama import modeling_llama

graphs = []

def count(gm, example_inputs):
    graphs.append(sorted(
        str(getattr(n.target, "__name__", n.target))
        for n in gm.graph.nodes if n.op == "call_function"
    ))
    return gm.forward

torch._dynamo.register_backend(name="count")(count)

if sys.argv[1] == "policy":
    policycompile.apply(sys.argv[2], profile="nested")
else:  # by hand, with torch's own functions, on the same attributes
    layer = modeling_llama.LlamaDecoderLayer
    layer.forward = torch.compiler.nested_compile_region(layer.forward)
    model_cls = modeling_llama.LlamaForCausalLM
    model_cls.forward = torch.compile(model_cls.forward, backend="count", dynamic=False)

torch.manual_seed(0)
config = transformers.LlamaConfig(
    hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=64, max_position_embeddings=32, head_dim=8,
)
model = transformers.LlamaForCausalLM(config).eval()
ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    logits = model(ids, use_cache=False).logits
print(json.dumps({"graphs": graphs, "logits": logits.flatten().tolist()}))
"""


def test_nested_profile_equals_hand_decorators_on_llama(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nextends: {ROOT / 'policies' / 'transformers-decoder.yaml'}\n"
        "compile: {backend: count}\ntargets: {}\n"
    )
    results = {}
    for mode in ("policy", "hand"):
        done = python("script.py", mode, str(policy), cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["policy"] == results["hand"]
    (calls,) = results["hand"]["graphs"]  # one graph for the whole model
    assert calls.count("invoke_subgraph") == 3  # each layer, one traced subgraph reused
