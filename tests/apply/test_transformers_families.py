"""A broad policy over real third-party code, family by family: every function and method of
a transformers modeling module under ``error_on_graph_break: true``, its decoder layer a
compile entry. Compared, in the same process, with the same decorators placed by a script
(torch's own ``error_on_graph_break`` and ``torch.compile`` set on the same attributes): the
same outcome, the same number of graphs, the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import python

FAMILIES = {
    "llama": ("LlamaDecoderLayer", "Llama"),
    "mistral": ("MistralDecoderLayer", "Mistral"),
    "qwen2": ("Qwen2DecoderLayer", "Qwen2"),
    "qwen3": ("Qwen3DecoderLayer", "Qwen3"),
    "gemma": ("GemmaDecoderLayer", "Gemma"),
    "phi3": ("Phi3DecoderLayer", "Phi3"),
    "starcoder2": ("Starcoder2DecoderLayer", "Starcoder2"),
    "gpt2": ("GPT2Block", "GPT2"),
    "gpt_neox": ("GPTNeoXLayer", "GPTNeoX"),
    "opt": ("OPTDecoderLayer", "OPT"),
}

SCRIPT = r"""
import functools, json, sys, torch, transformers
import policycompile
from policycompile._engine.targets import Kind

counts = {"policy": 0, "hand": 0}

def counting(which):
    def backend(gm, example_inputs):
        counts[which] += 1
        return gm.forward
    return backend

torch._dynamo.register_backend(name="count_policy")(counting("policy"))
torch._dynamo.register_backend(name="count_hand")(counting("hand"))

SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=64, max_position_embeddings=32, head_dim=8,
             bos_token_id=0, eos_token_id=0, pad_token_id=0)
SPECIAL = {
    "GPT2": dict(n_embd=32, n_layer=3, n_head=4, vocab_size=64, n_positions=32,
                 bos_token_id=0, eos_token_id=0),
    "GPTNeoX": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                    num_attention_heads=4, vocab_size=64, max_position_embeddings=32,
                    bos_token_id=0, eos_token_id=0),
    "OPT": dict(hidden_size=32, ffn_dim=64, num_hidden_layers=3, num_attention_heads=4,
                vocab_size=64, max_position_embeddings=32, word_embed_proj_dim=32,
                bos_token_id=0, eos_token_id=0, pad_token_id=1),
}

def run_model(prefix):
    config = getattr(transformers, prefix + "Config")(**SPECIAL.get(prefix, SIZES))
    torch.manual_seed(0)
    head = "LMHeadModel" if prefix == "GPT2" else "ForCausalLM"
    model = getattr(transformers, prefix + head)(config).eval()
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            first = model(ids, use_cache=False).logits
            second = model(ids, use_cache=False).logits
    except Exception as exc:
        return {"error": type(exc).__name__}, None
    return {"error": None, "same_twice": bool(torch.equal(first, second))}, first

out = {}
for family, layer, prefix in json.loads(sys.argv[1]):
    module = f"transformers.models.{family}.modeling_{family}"
    with open("policy.yaml", "w") as f:
        f.write(f"version: 1\ncompile: {{backend: count_policy, dynamic: false}}\ntargets:\n"
                f"  {module}.**: {{error_on_graph_break: true}}\n"
                f"  {module}.{layer}: {{compile: true}}\n")
    counts.update(policy=0, hand=0)
    torch._dynamo.reset()
    handle = policycompile.apply("policy.yaml")
    got, policy_logits = run_model(prefix)
    got["graphs"] = counts["policy"]
    targets = [(r.plan.target, r.original, r.plan.compile is not None,
                r.plan.error_on_graph_break) for r in handle.records]
    handle.undo()

    # the same decorators, placed by this script with torch's own functions
    torch._dynamo.reset()
    placed = []
    for target, original, entry, value in targets:
        raw = target.raw
        func = raw.__func__ if target.kind in (Kind.STATICMETHOD, Kind.CLASSMETHOD) else raw
        new = func
        if entry:
            new = torch.compile(new, backend="count_hand", dynamic=False)
        if value is not None:
            new = torch._dynamo.error_on_graph_break(value)(new)
            if target.kind is Kind.CLASSMETHOD:  # docs/torch.md: the bare one breaks here
                new = functools.wraps(func)(new)
        if target.kind is Kind.STATICMETHOD:
            new = staticmethod(new)
        elif target.kind is Kind.CLASSMETHOD:
            new = classmethod(new)
        placed.append((target.owner, target.attr, vars(target.owner).get(target.attr)))
        setattr(target.owner, target.attr, new)
    expected, hand_logits = run_model(prefix)
    expected["graphs"] = counts["hand"]
    for owner, attr, before in reversed(placed):
        if before is None:
            delattr(owner, attr)
        else:
            setattr(owner, attr, before)
    close = None
    if policy_logits is not None and hand_logits is not None:
        close = bool(torch.allclose(policy_logits, hand_logits, atol=1e-5, rtol=1e-5))
    out[family] = {"policy": got, "hand": expected, "close": close, "wrapped": len(targets),
                   "entries": sum(1 for t in targets if t[2])}
print(json.dumps(out))
"""


def test_broad_policy_equals_script_placed_decorators_on_ten_families(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    (tmp_path / "run.py").write_text(SCRIPT)
    families = [[family, layer, prefix] for family, (layer, prefix) in FAMILIES.items()]
    done = python("run.py", json.dumps(families), cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(results) == sorted(FAMILIES)
    for family, result in results.items():
        assert result["entries"] == 1, family  # the decoder layer's forward
        assert result["wrapped"] > 10, family
        assert result["policy"] == result["hand"], family
        assert result["hand"]["graphs"] >= 1, family
        if result["hand"]["error"] is None:
            assert result["close"] is True, family
