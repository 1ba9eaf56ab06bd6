"""A policy acts where a decorator written at the definition would (docs/apply.md, "Where the
wrapper sits"): every way a module holds its own function gives the outcome and the graphs of
the hand-decorated source, with ``apply`` before the import and under ``policycompile run``."""

from __future__ import annotations

import importlib
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from ..conftest import python
from .conftest import BACKEND, Modules, applied_around_import, apply, outcome

#: each way a module can hold its own function ``work``, and the call that goes through it
WAYS = {
    "dict registry": "TASKS['work'](x)",
    "decorator registry": "REGISTRY['work'](x)",
    "default argument": "through_default(x)",
    "functools.partial": "PARTIAL(x)",
    "class attribute": "Holder.fn(x)",
    "__all__ re-export": "reexport.work(x)",
}

#: the hand decorator written innermost on ``work``, for each setting the policy gives it
HAND = {
    "error_on_graph_break: true": "@torch._dynamo.error_on_graph_break(True)",
    "disable: true": "@torch.compiler.disable",
}

IMPL = """
import functools
import torch

__all__ = ["work"]
REGISTRY = {{}}


def register(name):
    def decorate(fn):
        REGISTRY[name] = fn
        return fn
    return decorate


@register("work")
{hand}
def work(x):
    x = x + 1
    torch._dynamo.graph_break()
    return x * 2


TASKS = {{"work": work}}
PARTIAL = functools.partial(work)


def through_default(x, fn=work):
    return fn(x) - 1


class Holder:
    fn = staticmethod(work)
"""


def _sources(hand: str, tag: str) -> dict[str, str]:
    impl, reexport = f"impl_{tag}", f"reexport_{tag}"
    calls = "\n".join(
        f"    {way!r}: lambda x: {call.replace('reexport.', f'{reexport}.')},"
        for way, call in WAYS.items()
    )
    return {
        impl: IMPL.format(hand=hand),
        reexport: f"from {impl} import *\n",
        f"ways_{tag}": f"from {impl} import *\nfrom {impl} import REGISTRY, TASKS, PARTIAL, "
        f"through_default, Holder\nimport {reexport}\n\nWAYS = {{\n{calls}\n}}\n",
    }


def _outcomes(ways: Any) -> dict[str, tuple[str | None, int, int]]:
    out = {}
    for way in WAYS:
        call = ways.WAYS[way]
        done = outcome(lambda call=call: torch.compile(call, backend=BACKEND)(torch.ones(3)))
        out[way] = (done.error, done.graphs, done.frames)
    return out


def _write(modules: Modules, sources: dict[str, str]) -> None:
    for name, text in sources.items():
        modules.write(name, text)


@pytest.mark.parametrize("setting", list(HAND))
def test_every_way_a_module_holds_its_function_apply_before_import(
    modules: Modules, setting: str
) -> None:
    import importlib

    _write(modules, _sources(HAND[setting], modules.name("hand")))
    hand = _outcomes(importlib.import_module(f"ways_{modules.name('hand')}"))
    tag = modules.name("policy")
    _write(modules, _sources("", tag))
    policy = modules.policy(f"version: 1\ntargets:\n  impl_{tag}.work: {{{setting}}}\n")
    with apply(policy):
        ways = importlib.import_module(f"ways_{tag}")
        assert "__policycompile_define__" not in vars(importlib.import_module(f"impl_{tag}"))
        under_policy = _outcomes(ways)
    assert under_policy == hand
    if setting.startswith("error_on_graph_break"):  # the hand decorator raises every way
        assert {error for error, _, _ in hand.values()} == {"Unsupported"}


RUN_MAIN = """
import json, sys
import torch
from torch._dynamo.testing import CompileCounter
import ways_{tag} as ways

out = {{}}
for way, call in ways.WAYS.items():
    torch._dynamo.reset()
    counter = CompileCounter()
    try:
        torch.compile(call, backend=counter)(torch.ones(3))
        error = None
    except Exception as exc:
        error = type(exc).__name__
    out[way] = [error, counter.frame_count, counter.op_count]
print("OUTCOMES", json.dumps(out))
"""


def _run_outcomes(cwd: Path, *args: str) -> dict[str, Any]:
    done = python(*args, cwd=cwd)
    lines = [line for line in done.stdout.splitlines() if line.startswith("OUTCOMES ")]
    assert lines, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(lines[0].split(" ", 1)[1])
    return result


@pytest.mark.parametrize("setting", list(HAND))
def test_every_way_a_module_holds_its_function_under_run(tmp_path: Path, setting: str) -> None:
    hand_dir, policy_dir = tmp_path / "hand", tmp_path / "policy"
    for folder, hand in ((hand_dir, HAND[setting]), (policy_dir, "")):
        folder.mkdir()
        for name, text in _sources(hand, "t").items():
            (folder / f"{name}.py").write_text(textwrap.dedent(text))
        (folder / "main.py").write_text(RUN_MAIN.format(tag="t"))
    (policy_dir / "p.yaml").write_text(f"version: 1\ntargets:\n  impl_t.work: {{{setting}}}\n")
    hand = _run_outcomes(hand_dir, "main.py")
    under_policy = _run_outcomes(policy_dir, "-m", "policycompile", "run", "p.yaml", "main.py")
    assert under_policy == hand


#: a subclass that inherits forward, then the module's own code replaces the base's
REPLACING = """
class Base({bases}):
    def forward(self, x):
        return "first"


class Sub(Base):
    pass


def later(self, x):
    return "later"


Base.forward = later
"""

REPLACED_BASE = (
    "import torch\n"
    + REPLACING.format(bases="torch.nn.Module")
    + """

class Steady(torch.nn.Module):
    def forward(self, x):
        return "steady"


class Kept(Steady):
    pass


KEPT = Kept.forward
ALIAS, TABLE, LIST = Kept.forward, {"f": Kept.forward}, [Kept.forward]
"""
)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_subclass_gets_the_forward_its_base_has_once_the_module_ran(
    modules: Modules, when: str
) -> None:
    """A rule on a subclass wraps the ``forward`` it inherits on the subclass: the one the
    base has once the module ran, whether the policy was applied before the import (the
    class was patched as it was defined, then the module replaced the base's) or after; a
    subclass whose base kept its ``forward`` keeps the wrapper its definition got."""
    name = modules.write(modules.name("replaced"), REPLACED_BASE)
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.Sub: {{error_on_graph_break: true}}\n"
        f"  {name}.Kept: {{error_on_graph_break: true}}\n"
    )
    with applied_around_import(policy, name, when) as (module, handle):
        assert module.Sub()(1) == "later"  # what the program computes without a policy
        assert vars(module.Sub)["forward"].__wrapped__ is module.later
        assert sorted(r.plan.target.name for r in handle.records) == [
            f"{name}:Kept.forward",
            f"{name}:Sub.forward",
        ]
        if when == "before":  # a base left as it was: the wrapper made at the definition
            assert vars(module.Kept)["forward"] is module.KEPT
    assert "forward" not in vars(module.Sub) and not handle.warnings
    steady = vars(module.Steady)["forward"]  # what the module's own references held
    assert module.ALIAS is module.TABLE["f"] is module.LIST[0] is steady


REFUSED_BASE = """
import torch

REFUSE = True


class Meta(type(torch.nn.Module)):
    def __delattr__(cls, name):
        if REFUSE and name == "forward":
            raise TypeError("forward cannot be deleted")
        super().__delattr__(name)
""" + REPLACING.format(bases="torch.nn.Module, metaclass=Meta")


def test_a_stale_inherited_forward_that_cannot_be_taken_back_is_said(modules: Modules) -> None:
    """A metaclass that refuses to let the subclass's wrapper go: the import goes on, the
    wrapper made at the definition stays, and a warning says so."""
    name = modules.write(modules.name("refused"), REFUSED_BASE)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.Sub: {{error_on_graph_break: true}}\n")
    handle = apply(policy)
    try:
        module = importlib.import_module(name)
        assert [w for w in handle.warnings if "kept the wrapper" in w] == [
            f"{name}.Sub.forward: kept the wrapper of what it inherited when the class was "
            "made, though the base's changed since (TypeError: forward cannot be deleted)"
        ]
        assert vars(module.Sub)["forward"].__wrapped__.__name__ == "forward"
    finally:
        module.REFUSE = False
        handle.undo()
    assert "forward" not in vars(module.Sub)


CHAINS = """
import torch


class Base(torch.nn.Module):
    def forward(self, x):
        return x


class Sub(Base):
    pass


class SubSub(Sub):
    pass


class Other(torch.nn.Module):
    def forward(self, x):
        return -x


class Taken(Other):
    pass


Other.forward = Taken.forward  # the subclass's wrapper, under the policy, put on the base


class Later(Other):
    pass
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_inherited_forward_is_wrapped_once_whoever_was_patched_first(
    modules: Modules, when: str
) -> None:
    """A subclass made after its base was patched wraps the base's original, not the base's
    wrapper: one wrapper deep everywhere, as when the policy is applied after the import."""
    name = modules.write(modules.name("chains"), CHAINS)
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.**: {{error_on_graph_break: true}}\n"
        f"  {name}.Taken: {{error_on_graph_break: true}}\n"
        f"  {name}.Later: {{error_on_graph_break: true}}\n"
    )
    with applied_around_import(policy, name, when) as (module, _):
        depths = {}
        for cls in ("Base", "Sub", "SubSub", "Taken", "Later"):
            fn, depth = vars(getattr(module, cls))["forward"], 0
            while hasattr(fn, "__policycompile__"):
                fn, depth = fn.__wrapped__, depth + 1
            depths[cls] = (depth, fn.__qualname__)
        assert depths == {
            "Base": (1, "Base.forward"),
            "Sub": (1, "Base.forward"),
            "SubSub": (1, "Base.forward"),
            "Taken": (1, "Other.forward"),
            "Later": (1, "Other.forward"),
        }
        assert module.SubSub()(torch.ones(1)).item() == 1.0
        assert module.Later()(torch.ones(1)).item() == -1.0
