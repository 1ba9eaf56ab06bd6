"""A real third-party library patched only through a policy, in a fresh process: transformers'
decoder-only models built from a config (random weights, nothing downloaded). A hand-written
policy on Llama, and policies/transformers-decoder.yaml on two families (Llama, Qwen2): every
decoder layer compiled, one graph shared by all layers, outputs equal to eager."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ..conftest import python

ROOT = Path(__file__).parent.parent.parent
BUNDLED = ROOT / "policies" / "transformers-decoder.yaml"

# Exact names only, written by hand for one family.
HAND_POLICY = """\
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

# The bundled policy, with a counting backend in place of Inductor: `extends` layers it.
BUNDLED_POLICY = f"version: 1\nextends: {BUNDLED}\ncompile: {{backend: count}}\ntargets: {{}}\n"

SCRIPT = """
import json, sys, torch
import policycompile

graphs = []

@torch._dynamo.register_backend(name="count")
def count(gm, example_inputs):
    graphs.append(gm)
    return gm.forward

handle = policycompile.apply("policy.yaml", profile=sys.argv[2] or None)
assert "transformers" not in sys.modules  # patched by the import hook, not afterwards
import transformers

family = sys.argv[1]
sizes = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=8, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=128, max_position_embeddings=64)
config = getattr(transformers, family + "Config")(**sizes)
torch.manual_seed(0)
model = getattr(transformers, family + "ForCausalLM")(config).eval()
ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    out = model(ids, use_cache=False).logits
    first = len(graphs)
    again = model(ids, use_cache=False).logits
    second = len(graphs)
    with torch.compiler.set_stance("force_eager"):
        eager = model(ids, use_cache=False).logits
report = handle.report()
print(json.dumps({
    "patched": sorted(r.plan.target.display for r in handle.records),
    "graphs": [first, second],
    "close": bool(torch.allclose(out, eager, atol=1e-5, rtol=1e-5)),
    "same_twice": bool(torch.equal(out, again)),
    "regions": [[r.name, r.graphs, r.recompiles] for r in report.regions],
    "violations": len(report.violations),
}))
"""


def run(tmp_path: Path, policy: str, family: str, profile: str = "") -> dict[str, object]:
    pytest.importorskip("transformers")
    (tmp_path / "policy.yaml").write_text(policy)
    (tmp_path / "run.py").write_text(SCRIPT)
    done = python("run.py", family, profile, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_llama_regional_compile_through_a_hand_written_policy(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import transformers.models.llama.modeling_llama as modeling

    source = Path(modeling.__file__)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    result = run(tmp_path, HAND_POLICY, "Llama")
    prefix = "transformers.models.llama.modeling_llama."
    patched = result["patched"]
    assert isinstance(patched, list)
    assert f"{prefix}LlamaDecoderLayer.forward" in patched
    assert f"{prefix}apply_rotary_pos_emb" in patched
    assert f"{prefix}LlamaRMSNorm.forward" in patched
    assert result["close"] is True and result["same_twice"] is True
    # one graph serves all eight layers, and the second call compiles nothing
    assert result["graphs"] == [1, 1]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before


@pytest.mark.parametrize(("family", "module"), [("Llama", "llama"), ("Qwen2", "qwen2")])
def test_bundled_policy_compiles_each_family_once(tmp_path: Path, family: str, module: str) -> None:
    result = run(tmp_path, BUNDLED_POLICY, family)
    prefix = f"transformers.models.{module}.modeling_{module}."
    patched = result["patched"]
    assert isinstance(patched, list)
    assert f"{prefix}{family}DecoderLayer.forward" in patched
    assert f"{prefix}{family}MLP.forward" in patched
    assert f"{prefix}{family}RMSNorm.forward" in patched
    assert result["graphs"] == [1, 1], "one graph for all 8 layers, nothing recompiled"
    assert result["close"] is True and result["same_twice"] is True
    assert result["regions"] == [[f"{prefix}{family}DecoderLayer.forward", 1, 0]]
    assert result["violations"] == 0


def test_bundled_strict_profile_holds_for_llama(tmp_path: Path) -> None:
    result = run(tmp_path, BUNDLED_POLICY, "Llama", "strict")
    assert result["graphs"] == [1, 1] and result["violations"] == 0


# The families docs/regional.md says the bundled policy covers: their layer is a compile entry.
COVERED = {
    "llama": "LlamaDecoderLayer",
    "mistral": "MistralDecoderLayer",
    "qwen2": "Qwen2DecoderLayer",
    "qwen3": "Qwen3DecoderLayer",
    "gemma": "GemmaDecoderLayer",
    "phi3": "Phi3DecoderLayer",
    "starcoder2": "Starcoder2DecoderLayer",
    "opt": "OPTDecoderLayer",
    "gpt2": "GPT2Block",
    "gpt_neox": "GPTNeoXLayer",
}


def test_bundled_policy_covers_the_families_the_docs_name(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    docs = (ROOT / "docs" / "regional.md").read_text()
    assert "Llama, Mistral, Qwen2, Qwen3, Gemma, Phi-3, Starcoder2, OPT, GPT-2 and GPT-NeoX" in docs
    modules = [f"transformers.models.{f}.modeling_{f}" for f in COVERED]
    args = ["-m", "policycompile", "plan", str(BUNDLED), "--json", "--import", *modules]
    done = python(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    entries = {
        w["name"]
        for w in json.loads(done.stdout)["wrapped"]
        if any(d.startswith("@torch.compile") for d in w["decorators"])
    }
    for family, layer in COVERED.items():
        assert f"transformers.models.{family}.modeling_{family}.{layer}.forward" in entries, family
