"""policies/transformers-decoder.yaml on two decoder-only families (Llama, Qwen2): every decoder
layer compiled, one graph shared by all layers, outputs equal to eager."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import python

ROOT = Path(__file__).parent.parent.parent
BUNDLED = ROOT / "policies" / "transformers-decoder.yaml"

SCRIPT = """
import json, sys, torch
import policycompile

graphs = []

@torch._dynamo.register_backend(name="count")
def count(gm, example_inputs):
    graphs.append(gm)
    return gm.forward

handle = policycompile.apply("policy.yaml", profile=sys.argv[2] or None)
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
    model(ids, use_cache=False)
    second = len(graphs)
    with torch.compiler.set_stance("force_eager"):
        eager = model(ids, use_cache=False).logits
report = handle.report()
print(json.dumps({
    "patched": sorted(r.plan.target.display for r in handle.records),
    "graphs": [first, second],
    "close": bool(torch.allclose(out, eager, atol=1e-5, rtol=1e-5)),
    "regions": [[r.name, r.graphs, r.recompiles] for r in report.regions],
    "violations": len(report.violations),
}))
"""


def run(tmp_path: Path, family: str, profile: str = "") -> dict[str, object]:
    pytest.importorskip("transformers")
    # the bundled policy, with a counting backend in place of Inductor: `extends` layers it
    (tmp_path / "policy.yaml").write_text(
        f"version: 1\nextends: {BUNDLED}\ncompile: {{backend: count}}\ntargets: {{}}\n"
    )
    (tmp_path / "run.py").write_text(SCRIPT)
    done = python("run.py", family, profile, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(("family", "module"), [("Llama", "llama"), ("Qwen2", "qwen2")])
def test_bundled_policy_compiles_each_family_once(tmp_path: Path, family: str, module: str) -> None:
    result = run(tmp_path, family)
    prefix = f"transformers.models.{module}.modeling_{module}."
    patched = result["patched"]
    assert isinstance(patched, list)
    assert f"{prefix}{family}DecoderLayer.forward" in patched
    assert f"{prefix}{family}MLP.forward" in patched
    assert f"{prefix}{family}RMSNorm.forward" in patched
    assert result["graphs"] == [1, 1], "one graph for all 8 layers, nothing recompiled"
    assert result["close"] is True
    assert result["regions"] == [[f"{prefix}{family}DecoderLayer.forward", 1, 0]]
    assert result["violations"] == 0


def test_strict_profile_holds_for_llama(tmp_path: Path) -> None:
    result = run(tmp_path, "Llama", "strict")
    assert result["graphs"] == [1, 1] and result["violations"] == 0
