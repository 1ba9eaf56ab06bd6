"""The command line and the pytest plugin answer bad input cleanly, and reports say plainly
what torch did: recompile reasons in one line, entries that fell back to eager, compile
entries traced inside others."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

import policycompile as pc

from ..conftest import ROOT
from .conftest import BACKEND, Modules, apply

SCRIPTS = Path(sys.executable).parent


def run_console(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """The installed ``policycompile`` script, as a user runs it (not ``python -m``), without
    the current directory on ``PYTHONPATH`` (``tests.conftest.python`` puts it there, which
    would hide what ``run -m`` must find by itself)."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [str(SCRIPTS / "policycompile"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def test_run_dash_m_finds_a_package_of_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "main.py").write_text(
        "import torch._dynamo.utils\n"
        "def step():\n    return torch._dynamo.utils._error_on_graph_break\n"
        "print(__name__, step())\n"
    )
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  app.main.step: {error_on_graph_break: true}\n"
    )
    status, out, err = run_console(["run", "p.yaml", "-m", "app.main"], tmp_path)
    assert (status, out) == (0, "__main__ True\n"), err


def test_run_says_a_missing_target_once(tmp_path: Path) -> None:
    """The located error names the rule; the report after it does not list it again as a
    rule that matched nothing."""
    (tmp_path / "lib.py").write_text("def fn(x):\n    return x\n")
    (tmp_path / "prog.py").write_text("import lib\n")
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  lib.fnn: {disable: true}\n  other.**: {disable: true}\n"
    )
    status, _, err = run_console(["run", "p.yaml", "prog.py"], tmp_path)
    assert status == 1 and err.count("lib.fnn") == 1, err
    assert "p.yaml:3:3: error: target 'lib.fnn' names nothing" in err
    assert "unused rules (matched nothing):\n    other.** (p.yaml:4)\n" in err


def test_plan_prints_each_missing_target_once(tmp_path: Path) -> None:
    (tmp_path / "lib.py").write_text("def fn(x):\n    return x\n")
    (tmp_path / "p.yaml").write_text("version: 1\ntargets:\n  lib.fnn: {disable: true}\n")
    status, out, _ = run_console(["plan", "p.yaml", "--import", "lib"], tmp_path)
    assert status == 1 and out.count("names nothing") == 1, out
    status, out, _ = run_console(["plan", "p.yaml", "--import", "lib", "--json"], tmp_path)
    assert len(json.loads(out)["problems"]) == 1


def test_plan_warns_about_a_compile_entry_built_inside_another(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "class Block(torch.nn.Module):\n    def forward(self, x):\n        return x\n"
        "class Model(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.blocks = torch.nn.ModuleList([Block() for _ in range(2)])\n"
        "    def forward(self, x):\n        return x\n"
    )
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  net.Model: {compile: true}\n  net.Block: {fullgraph: true}\n"
    )
    status, out, _ = run_console(["plan", "p.yaml", "--import", "net"], tmp_path)
    assert status == 0
    assert "warning: net.Block.forward is a compile entry built inside net.Model.forward" in out
    status, out, _ = run_console(["plan", "p.yaml", "--import", "net", "--json"], tmp_path)
    assert json.loads(out)["nested_entries"] == [
        {"outer": "net.Model.forward", "inner": "net.Block.forward"}
    ]


@pytest.mark.parametrize(
    ("policy", "env", "text"),
    [
        (None, {}, "missing.yaml: error: no such policy file"),
        ("version: 1\ntargets:\n  pkg..fn: {disable: true}\n", {}, "p.yaml:3:7: error: bad"),
        (
            "version: 1\ntargets:\n  pkg.fn: {disable: true}\n",
            {"POLICYCOMPILE_PROFILE": "nope"},
            "unknown profile 'nope'",
        ),
    ],
)
def test_pytest_policy_errors_are_usage_errors(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    policy: str | None,
    env: dict[str, str],
    text: str,
) -> None:
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    name = "missing.yaml"
    if policy is not None:
        (pytester.path / "p.yaml").write_text(policy)
        name = "p.yaml"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest_subprocess("--policy", name, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and text in errors[0], result.errlines
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_recompile_reasons_are_one_line_and_the_limit_is_flagged(modules: Modules) -> None:
    name = modules.write(modules.name("rc"), "def f(x):\n    return x * 2\n")
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}, dynamic: false}}\n"
        f"targets:\n  {name}.f: {{compile: true}}\n"
    )
    with torch._dynamo.config.patch(recompile_limit=2), apply(policy) as handle:
        mod = importlib.import_module(name)
        for n in range(1, 5):
            mod.f(torch.ones(n))
        report = handle.report()
    (region,) = report.regions
    assert region.recompile_limit_hit and region.recompiles == 1
    text = report.text()
    assert "HIT recompile_limit" in text
    recompiled = [line for line in text.splitlines() if "recompiled:" in line]
    assert len(recompiled) == 1 and "size" in recompiled[0]
    assert len(report.text(verbose=True).splitlines()) >= len(text.splitlines())
    assert report.to_dict()["regions"][0]["recompile_limit_hit"] is True
    with torch._dynamo.config.patch(recompile_limit=8), apply(policy) as handle:
        torch._dynamo.reset()
        mod.f(torch.ones(1))
        mod.f(torch.ones(2))
        assert not handle.report().regions[0].recompile_limit_hit


def test_report_names_a_compile_entry_traced_inside_another(modules: Modules) -> None:
    name = modules.write(
        modules.name("nest"),
        """
        import torch
        class Block(torch.nn.Module):
            def forward(self, x):
                return x * 2
        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.blocks = torch.nn.ModuleList([Block() for _ in range(2)])
            def forward(self, x):
                for block in self.blocks:
                    x = block(x)
                return x + 1
        """,
    )
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n"
        f"  {name}.Model: {{compile: true}}\n  {name}.Block: {{fullgraph: true}}\n"
    )
    with apply(policy) as handle:
        mod = importlib.import_module(name)
        assert torch.equal(mod.Model()(torch.ones(2)), torch.full((2,), 5.0))
        report = handle.report()
    (region,) = report.regions  # the blocks never compiled on their own
    assert region.name == f"{name}.Model.forward"
    assert region.nested_entries == (f"{name}.Block.forward",)
    assert f"traces {name}.Block.forward, itself a compile entry" in report.text()


def test_a_backend_registered_before_apply_is_accepted(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\ncompile: {backend: pc_mine}\ntargets:\n  pkg.fn: {compile: true}\n"
    )
    with pytest.raises(pc.PolicyOptionError, match="unknown backend 'pc_mine'"):
        pc.load(policy)
    assert pc.load(policy, backends=["pc_mine"]).path == str(policy)

    @torch._dynamo.register_backend(name="pc_mine")  # type: ignore[misc]
    def mine(gm: torch.fx.GraphModule, example_inputs: object) -> object:
        return gm.forward

    assert pc.load(policy).path == str(policy)


def test_a_lazily_exported_name_points_to_its_module(modules: Modules) -> None:
    pytest.importorskip("transformers")
    import transformers  # noqa: F401 - imported, so the rule is checked at apply

    policy = modules.policy(
        "version: 1\ntargets:\n  transformers.LlamaForCausalLM.forward: {disable: true}\n"
    )
    with pytest.raises(pc.PolicyTargetError) as info:
        pc.apply(policy)
    assert info.value.line == 3
    assert "it is defined in transformers.models.llama.modeling_llama" in str(info.value)
    assert "name it transformers.models.llama.modeling_llama.LlamaForCausalLM.forward" in str(
        info.value
    )


def test_mode_and_options_from_two_rules_are_a_located_error(tmp_path: Path) -> None:
    (tmp_path / "lib_mo.py").write_text("def fn(x):\n    return x\n")
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  lib_mo.**: {compile: {mode: max-autotune}}\n"
        "  lib_mo.fn: {compile: {options: {max_autotune: true}}}\n"
    )
    status, out, err = run_console(["plan", "p.yaml", "--import", "lib_mo"], tmp_path)
    assert status == 1 and "@torch.compile" not in out
    assert "p.yaml:4:3: error: 'mode' (p.yaml:3) and 'options' (p.yaml:4) together" in err
    sys.path.insert(0, str(tmp_path))
    try:
        with apply(tmp_path / "p.yaml"):
            with pytest.raises(pc.PolicyOptionError, match="Either mode or options"):
                importlib.import_module("lib_mo")  # planned when imported: the error then
            assert "lib_mo" not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("lib_mo", None)
