"""`policycompile plan`: what would be wrapped, without patching anything."""

from __future__ import annotations

import io
import json
import sys

import pytest

from policycompile._commands.cli import main
from policycompile._engine.plan import patch_info
from policycompile._runtime.state import STATE

from .conftest import Modules


def test_plan_lists_without_patching(modules: Modules) -> None:
    name = modules.write(
        modules.name("app"),
        """
        import torch
        class Block(torch.nn.Module):
            def forward(self, x):
                return x
        def helper(x):
            return x
        """,
    )
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: eager}}\ntargets:\n"
        f"  {name}.Block: {{compile: true}}\n"
        f"  {name}.helper: {{error_on_graph_break: true, reason: keep it clean}}\n"
        f"  {name}_missing.**: {{disable: true}}\n"
    )
    out = io.StringIO()
    assert main(["plan", str(policy), "--import", name, "--json"], out=out) == 0
    doc = json.loads(out.getvalue())
    wrapped = {w["name"]: w for w in doc["wrapped"]}
    assert wrapped[f"{name}.Block.forward"]["decorators"] == ["@torch.compile(backend='eager')"]
    assert (
        wrapped[f"{name}.helper"]["rules"]["error_on_graph_break"] == f"{name}.helper ({policy}:5)"
    )
    assert doc["unused_rules"] == [f"{name}_missing.** ({policy}:6)"]
    assert STATE.active is None
    assert patch_info(sys.modules[name].helper) is None  # nothing patched

    out = io.StringIO()
    assert main(["plan", str(policy), "--import", name], out=out) == 0
    text = out.getvalue()
    assert text.startswith(f"2 objects would be wrapped by {policy}")
    assert "    @torch._dynamo.error_on_graph_break(True)" in text


def test_plan_reports_missing_exact_targets(modules: Modules) -> None:
    name = modules.write(modules.name("app"), "def helper(x):\n    return x\n")
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.helpr: {{disable: true}}\n")
    out = io.StringIO()
    assert main(["plan", str(policy), "--import", name], out=out) == 1
    assert "did you mean 'helper'?" in out.getvalue()


def test_plan_unknown_module_is_a_usage_error(
    modules: Modules, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = modules.policy("version: 1\ntargets:\n  x.y: {disable: true}\n")
    assert main(["plan", str(policy), "--import", "no_such_module_xyz"], out=io.StringIO()) == 2
    assert "cannot import no_such_module_xyz" in capsys.readouterr().err


def test_plan_names_every_module_level_place_that_holds_an_original(modules: Modules) -> None:
    """What apply would point at the wrapper (a dict's value, a list's item), and what it
    could not (a tuple, a partial, a default argument), each by where it is."""
    name = modules.write(
        modules.name("held"),
        """
        import functools
        def work(x):
            return x
        def other(x):
            return x
        TASKS = {"work": work, "other": other}
        HANDLERS = [other, work]
        FROZEN = (work,)
        PARTIAL = functools.partial(work)
        def run(x, fn=work):
            return fn(x)
        """,
    )
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.work: {{disable: true}}\n")
    out = io.StringIO()
    assert main(["plan", str(policy), "--import", name, "--json"], out=out) == 0
    doc = json.loads(out.getvalue())
    held = f"holds the original of {name}.work"
    assert doc["rebound"] == [f"{name}.TASKS['work'] {held}", f"{name}.HANDLERS[1] {held}"]
    assert sorted(doc["unreached"]) == sorted(
        [
            f"{name}.FROZEN[0] {held}",
            f"{name}.PARTIAL (a functools.partial) {held}",
            f"the default fn= of {name}.run {held}",
        ]
    )
    text = io.StringIO()
    assert main(["plan", str(policy), "--import", name], out=text) == 0
    assert f"unreached: {name}.FROZEN[0] {held}: calls through it" in text.getvalue()
    assert patch_info(sys.modules[name].TASKS["work"]) is None  # plan changes nothing
