"""Per-function Dynamo controls (docs/policy.md) beyond conformance: what torch lacks, combinations
across rules, stance and dynamo_config off a compile entry, and what explain, plan and the
report say about them."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from pathlib import Path

import pytest
import torch

import policycompile as pc
from policycompile._commands.cli import main

from .conftest import BACKEND, GRAPHS, Modules, apply


def test_a_key_the_installed_torch_lacks_names_its_version(
    modules: Modules, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older torch without nonstrict_trace, emulated by taking it away."""
    monkeypatch.delattr(torch._dynamo, "nonstrict_trace")
    policy = modules.policy("version: 1\ntargets:\n  pkg.fn:\n    nonstrict_trace: true\n")
    with pytest.raises(pc.PolicyOptionError) as info:
        pc.load(policy)
    assert info.value.line == 4 and info.value.column == 5
    assert f"torch._dynamo.nonstrict_trace, which torch {torch.__version__}" in str(info.value)


def test_combinations_across_rules_name_both(modules: Modules) -> None:
    name = modules.write(modules.name("m"), "def helper(x):\n    return x\n")
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.*:\n    nonstrict_trace: true\n"
        f"  {name}.helper:\n    allow_in_graph: true\n"
    )
    importlib.import_module(name)
    with pytest.raises(pc.PolicyConflictError) as info:
        apply(policy)
    message = str(info.value)
    assert f"{name}.* ({policy}:4)" in message and f"{name}.helper ({policy}:6)" in message
    assert "two ways of the same thing" in message


def test_stance_reaches_compile_entries_only(modules: Modules) -> None:
    source = "def entry(x):\n    return x * 2\n\ndef helper(x):\n    return x\n"
    name = modules.write(modules.name("m"), source)
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n"
        f"  {name}.entry: {{compile: true}}\n"
        f"  {name}.*:\n    stance: eager_on_recompile\n"
        f"    dynamo_config: {{recompile_limit: 2}}\n"
    )
    module = importlib.import_module(name)
    with apply(policy) as handle:
        plans = {r.plan.target.attr: r.plan for r in handle.records}
    assert set(plans) == {"entry"}  # helper is not an entry: the pattern does not reach it
    assert plans["entry"].decorators == [
        "@torch.compiler.set_stance('eager_on_recompile')",
        "@torch._dynamo.config.patch(recompile_limit=2)",
        f"@torch.compile(backend='{BACKEND}')",
    ]
    # a rule naming a function that is not an entry: an error, not a silent no-op
    exact = modules.policy(
        f"version: 1\ntargets:\n  {name}.helper:\n    stance: force_eager\n", "exact.yaml"
    )
    helper = vars(module)["helper"]
    with pytest.raises(pc.PolicyTargetError) as info:
        apply(exact)
    assert "is not a compile entry" in str(info.value) and info.value.line == 4
    assert vars(module)["helper"] is helper  # nothing stays patched


def test_fail_on_recompile_is_reported_as_a_stance_error(
    modules: Modules, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The program's own error reaches ``policycompile run``, which hands it to the report."""
    source = (
        "import torch\n\ndef entry(x):\n    return x * 2\n\n"
        "if __name__ == '__main__':\n    entry(torch.ones(2))\n"
    )
    name = modules.write(modules.name("m"), source)
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n"
        f"  {name}.entry: {{compile: true, stance: fail_on_recompile}}\n"
    )
    monkeypatch.chdir(modules.root)
    out = tmp_path / "r.json"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["run", str(policy), "--report-json", str(out), "-m", name])
    assert status == 1 and "fail_on_recompile" in err.getvalue()  # the program failed
    report = pc.Report.from_dict(json.loads(out.read_text()))
    (region,) = report.regions
    assert (region.name, region.stance_errors, region.graphs) == (f"{name}.entry", 1, 0)
    assert report.graph_breaks == ()
    assert "stopped by stance fail_on_recompile: 1 time(s)" in err.getvalue()


def test_explain_tree_and_plan_show_the_new_keys(modules: Modules) -> None:
    name = modules.write(modules.name("m"), "def outer(x):\n    return x\n")
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.outer:\n    disable: {{recursive: false}}\n"
        f"    nested_compile_region: false\n    reason: callees compile\n"
    )
    out = io.StringIO()
    assert main(["explain", str(policy), f"{name}.outer"], out=out) == 0
    assert 'disable = {"recursive": false}' in out.getvalue()
    out = io.StringIO()
    assert main(["tree", str(policy)], out=out) == 0
    assert 'disable={"recursive": false}' in out.getvalue()
    out = io.StringIO()
    assert main(["plan", str(policy), "--import", name], out=out) == 0
    assert "@torch.compiler.disable(recursive=False)" in out.getvalue()


def test_a_break_inside_nonstrict_trace_is_not_a_break(modules: Modules) -> None:
    source = (
        "import torch\n"
        "def helper(x):\n    torch._dynamo.graph_break()\n    return x * 2\n"
        "def entry(x):\n    return helper(x + 1) - 1\n"
    )
    name = modules.write(modules.name("m"), source)
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n"
        f"  {name}.entry: {{fullgraph: true}}\n  {name}.helper: {{nonstrict_trace: true}}\n"
    )
    for audit in (False, True):
        with apply(policy, audit=audit) as handle:
            module = importlib.import_module(name)
            assert torch.equal(module.entry(torch.ones(2)), torch.full((2,), 3.0))
            report = handle.report()
        torch._dynamo.reset()
        assert report.graph_breaks == () and report.violations == ()
        assert [(r.name, r.graphs) for r in report.regions] == [(f"{name}.entry", 1)]


def test_marks_reach_direct_names_only_and_undo_leaves_originals_unmarked(
    modules: Modules,
) -> None:
    source = (
        "import torch\nSCALE = torch.tensor([3.0])\n"
        "def helper(x):\n    return x.sin() + 1\n"
        "def scale():\n    return SCALE.item()\n"
        "def fn(x):\n    return helper(x) * scale()\n"
    )
    name = modules.write(modules.name("m"), source)
    module = importlib.import_module(name)
    broad = modules.policy(
        f"version: 1\ntargets:\n  {name}:\n    allow_in_graph: true\n    nonstrict_trace: false\n",
        "broad.yaml",
    )
    with apply(broad) as handle:
        # a rule on the module reaches none of its functions with what only direct rules set
        assert handle.records == ()
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.helper: {{allow_in_graph: true}}\n"
        f"  {name}.scale: {{assume_constant_result: true}}\n"
    )
    original = module.helper
    with apply(policy):
        assert module.helper is not original and module.helper.__wrapped__ is original
    # undone: the originals were never marked, so Dynamo traces into helper and scale again
    assert not hasattr(module.scale, "_dynamo_marked_constant")
    GRAPHS.clear()
    torch._dynamo.reset()
    torch.compile(module.fn, backend=BACKEND)(torch.ones(2))
    names = [str(getattr(n.target, "__name__", n.target)) for g in GRAPHS for n in g.graph.nodes]
    assert "helper" not in names and "sin" in names


def test_dynamo_config_resolves_name_by_name(modules: Modules) -> None:
    name = modules.write(modules.name("m"), "def entry(x):\n    return x * 2\n")
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n"
        f"  {name}.**:\n    dynamo_config: {{capture_scalar_outputs: true, recompile_limit: 4}}\n"
        f"  {name}.entry:\n    compile: true\n    dynamo_config: {{recompile_limit: 2}}\n"
    )
    importlib.import_module(name)
    with apply(policy) as handle:
        (record,) = handle.records
    assert record.plan.dynamo_config == {"capture_scalar_outputs": True, "recompile_limit": 2}
    out = io.StringIO()
    assert main(["explain", str(policy), f"{name}.entry"], out=out) == 0
    text = out.getvalue()
    assert "dynamo_config.capture_scalar_outputs = true" in text
    assert "dynamo_config.recompile_limit = 2" in text and "lost:" in text


def test_a_compile_option_newer_torch_added_is_named_with_its_release(
    modules: Modules,
) -> None:
    """Keys follow the installed torch.compile: where torch has ``recompile_limit`` it works
    as written by hand; where it lacks ``dynamic_shapes``, the error names the release that
    has it."""
    from policycompile._torch import catalog

    accepted = catalog.torch_compile_keywords()[1]
    shapes = modules.policy("version: 1\ncompile: {dynamic_shapes: true}\ntargets: {}\n", "s.yaml")
    if "dynamic_shapes" in accepted:
        pc.load(shapes)
    else:
        with pytest.raises(pc.PolicyOptionError, match=r"torch 2\.14 has it") as info:
            pc.load(shapes)
        assert info.value.line == 2
    if "recompile_limit" not in accepted:
        pytest.skip(f"torch {torch.__version__} has no torch.compile(recompile_limit=...)")
    name = modules.write(modules.name("m"), "def entry(x):\n    return x * 2\n")
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}, dynamic: false}}\ntargets:\n"
        f"  {name}.entry: {{compile: {{recompile_limit: 1}}}}\n"
    )
    with apply(policy):
        module = importlib.import_module(name)
        for n in (2, 3, 4):
            module.entry(torch.ones(n))
    by_policy = len(GRAPHS)
    hand = torch.compile(lambda x: x * 2, backend=BACKEND, dynamic=False, recompile_limit=1)
    GRAPHS.clear()
    torch._dynamo.reset()
    for n in (2, 3, 4):
        hand(torch.ones(n))
    assert by_policy == len(GRAPHS) == 1  # as the hand-written option: one graph, then eager
