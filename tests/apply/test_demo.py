"""The bundled example model under the bundled demo policy; real Inductor code generation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

import policycompile as pc

from ..conftest import python

ROOT = Path(__file__).parent.parent.parent
DEMO = ROOT / "policies" / "demo.yaml"


@pytest.fixture
def inductor_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One cache for the session's inductor tests: the C++ toolchain's cold start is paid once.
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(
        tmp_path_factory.getbasetemp() / "inductor-cache"
    )
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", cache)


@pytest.mark.inductor
def test_demo_policy_generates_cpu_code_once_for_all_blocks(inductor_cache: None) -> None:
    from torch._inductor.utils import run_and_get_code

    with pc.apply(DEMO) as handle:
        from policycompile.examples import tiny_transformer

        model = tiny_transformer.build()
        tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out, code = run_and_get_code(model, tokens)
            graphs = counters["stats"]["unique_graphs"]
            again = model(tokens)
            assert counters["stats"]["unique_graphs"] == graphs  # no recompile
        patched = {r.plan.target.display for r in handle.records}
    prefix = "policycompile.examples.tiny_transformer."
    assert f"{prefix}DecoderBlock.forward" in patched
    assert f"{prefix}DecoderBlock.__init__" not in patched  # dunders are not reached by **
    assert any('extern "C"' in c or "cpp_fused" in c for c in code), "no C++ kernel generated"
    with torch.no_grad():
        eager = model(tokens)
    assert torch.allclose(out, eager, atol=1e-4, rtol=1e-4)
    assert torch.equal(out, again)


def test_demo_strict_profile_forbids_the_stats_hook() -> None:
    with pc.apply(DEMO, profile="strict"):
        from policycompile.examples import tiny_transformer

        model = tiny_transformer.build(layers=1)
        with pytest.raises(torch._dynamo.exc.Unsupported), torch.no_grad():
            model(torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.inductor
def test_make_demo_audit_lists_both_known_breaks(inductor_cache: None, tmp_path: Path) -> None:
    import json

    out = tmp_path / "report.json"
    done = python(
        "-m",
        "policycompile",
        "run",
        str(DEMO),
        "--profile",
        "strict",
        "--audit",
        "--report-json",
        str(out),
        "-m",
        "policycompile.examples.demo",
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 4, done.stderr[-3000:]
    assert "output equals eager: True" in done.stdout
    report = json.loads(out.read_text())
    prefix = "policycompile.examples.tiny_transformer."
    assert sorted(v["function"] for v in report["violations"]) == [
        f"{prefix}check_finite",
        f"{prefix}log_activation_stats",
    ]
    (region,) = report["regions"]
    assert region["name"] == f"{prefix}DecoderBlock.forward" and region["recompiles"] == 0
