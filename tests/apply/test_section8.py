"""Conformance of the per-function Dynamo controls (docs/policy.md), as in test_seed.py: each module
written with the hand decorators, and the same module undecorated under a policy, applied before and
after import, give the same error or none, the same result, the same number of graphs and compiled
frames, and the same calls in each graph."""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from .conftest import BACKEND, GRAPHS, Modules, Outcome, apply, outcome

HEADER = f"import torch\nBACKEND = {BACKEND!r}\n"


def once(m: Any) -> Any:
    return m.fn(torch.ones(3))


def new_shapes(m: Any) -> Any:
    return [float(m.fn(torch.ones(n)).sum()) for n in (2, 3, 4)]


@dataclass(frozen=True)
class Case:
    hand: str  # decorators in the source
    targets: str  # the policy's targets, `M` standing for the module's name
    error: bool  # does the hand-written module raise?
    call: Callable[[Any], Any] = once
    key: str = ""  # the decorator that makes the difference; "": the first one not compile

    @property
    def without_key(self) -> str:
        """The hand-written module without the decorator of the key under test (the first
        one that is not torch.compile): it must behave differently, or the case proves
        nothing."""
        lines = textwrap.dedent(self.hand).splitlines()
        index = next(
            i
            for i, line in enumerate(lines)
            if line.strip().startswith("@torch.")
            and not line.strip().startswith("@torch.compile(")
            and self.key in line
        )
        return "\n".join(lines[:index] + lines[index + 1 :]) + "\n"

    @property
    def plain(self) -> str:
        kept = [
            line
            for line in textwrap.dedent(self.hand).splitlines()
            if not line.strip().startswith("@torch.")
        ]
        return "\n".join(kept) + "\n"


CASES = {
    "nonstrict_trace_hides_a_break": Case(
        hand="""
        @torch._dynamo.nonstrict_trace
        def helper(x):
            torch._dynamo.graph_break()
            return x * 2

        @torch.compile(backend=BACKEND, fullgraph=True)
        def fn(x):
            return helper(x + 1) - 1
        """,
        targets="""
          M.helper: {nonstrict_trace: true}
          M.fn: {fullgraph: true}
        """,
        error=False,
    ),
    "allow_in_graph_one_node": Case(
        hand="""
        @torch.compiler.allow_in_graph
        def helper(x):
            return x.sin() + 1

        @torch.compile(backend=BACKEND)
        def fn(x):
            return helper(x) * 2
        """,
        targets="""
          M.helper: {allow_in_graph: true}
          M.fn: {compile: true}
        """,
        error=False,
    ),
    "assume_constant_result_folds_a_break": Case(
        hand="""
        SCALE = torch.tensor([3.0])

        @torch.compiler.assume_constant_result
        def scale():
            return SCALE.item()

        @torch.compile(backend=BACKEND, fullgraph=True)
        def fn(x):
            return x * scale()
        """,
        targets="""
          M.scale: {assume_constant_result: true}
          M.fn: {fullgraph: true}
        """,
        error=False,
    ),
    "disable_not_recursive_compiles_callees": Case(
        hand="""
        def callee(x):
            return x.cos() + 1

        @torch.compiler.disable(recursive=False)
        def outer(x):
            return callee(x) * 2

        @torch.compile(backend=BACKEND)
        def fn(x):
            return outer(x + 1) - 1
        """,
        targets="""
          M.outer: {disable: {recursive: false}}
          M.fn: {compile: true}
        """,
        error=False,
    ),
    "disable_recursive": Case(
        hand="""
        def callee(x):
            return x.cos() + 1

        @torch.compiler.disable
        def outer(x):
            return callee(x) * 2

        @torch.compile(backend=BACKEND)
        def fn(x):
            return outer(x + 1) - 1
        """,
        targets="""
          M.outer: {disable: true}
          M.fn: {compile: true}
        """,
        error=False,
    ),
    "nested_compile_region_reused": Case(
        hand="""
        @torch.compiler.nested_compile_region
        def block(x):
            return torch.sin(x) * 2

        @torch.compile(backend=BACKEND, fullgraph=True)
        def fn(x):
            return block(block(x))
        """,
        targets="""
          M.block: {nested_compile_region: true}
          M.fn: {fullgraph: true}
        """,
        error=False,
    ),
    "dynamo_config_recompile_limit": Case(
        hand="""
        @torch._dynamo.config.patch(recompile_limit=1)
        @torch.compile(backend=BACKEND, dynamic=False)
        def fn(x):
            return x * 2
        """,
        targets="""
          M.fn: {compile: {dynamic: false}, dynamo_config: {recompile_limit: 1}}
        """,
        error=False,
        call=new_shapes,
    ),
    "stance_fail_on_recompile": Case(
        hand="""
        @torch.compiler.set_stance("fail_on_recompile")
        @torch.compile(backend=BACKEND, dynamic=False)
        def fn(x):
            return x * 2
        """,
        targets="""
          M.fn: {compile: {dynamic: false}, stance: fail_on_recompile}
        """,
        error=True,
        call=new_shapes,
    ),
    "stance_eager_on_recompile": Case(
        hand="""
        @torch.compiler.set_stance("eager_on_recompile")
        @torch.compile(backend=BACKEND, dynamic=False)
        def fn(x):
            return x * 2
        """,
        targets="""
          M.fn: {compile: {dynamic: false}, stance: eager_on_recompile}
        """,
        error=False,
        call=new_shapes,
    ),
    "eogb_outside_config_outside_compile": Case(
        hand="""
        @torch._dynamo.error_on_graph_break(True)
        @torch._dynamo.config.patch(capture_scalar_outputs=True)
        @torch.compile(backend=BACKEND)
        def fn(x):
            return x * x.sum().item()
        """,
        targets="""
          M.fn:
            compile: true
            error_on_graph_break: true
            dynamo_config: {capture_scalar_outputs: true}
        """,
        error=False,
        key="config.patch",  # without it, .item() breaks the graph, which raises
    ),
    "dont_skip_tracing_on_a_method": Case(
        hand="""
        from torch._dynamo import test_dont_skip_tracing_functions as skipped

        class Helper:
            @torch._dynamo.dont_skip_tracing
            def run(self, x):
                return skipped.f5(x, 10)

        HELPER = Helper()

        @torch.compile(backend=BACKEND)
        def fn(x):
            return HELPER.run(x) * 2
        """,
        targets="""
          M.Helper.run: {dont_skip_tracing: true}
          M.fn: {compile: true}
        """,
        error=False,
    ),
}


def policy_text(targets: str, module: str) -> str:
    body = textwrap.indent(textwrap.dedent(targets).strip(), "  ").replace("M.", module + ".")
    return f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n{body}\n"


def calls() -> list[list[str]]:
    """The calls in each graph compiled so far, by name: what the graph does."""
    out = []
    for gm in GRAPHS:
        names = []
        for node in gm.graph.nodes:
            if node.op in ("call_function", "call_method", "call_module"):
                target = node.target
                names.append(str(getattr(target, "__name__", target)))
        out.append(names)
    return out


def run(case: Case, module: Any) -> tuple[Outcome, list[list[str]]]:
    got = outcome(lambda: case.call(module))
    return got, calls()


@pytest.mark.parametrize("when", ["before_import", "after_import"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_policy_equals_hand_decorators(modules: Modules, case: str, when: str) -> None:
    spec = CASES[case]
    hand = importlib.import_module(
        modules.write(modules.name("hand"), HEADER + textwrap.dedent(spec.hand))
    )
    expected, expected_calls = run(spec, hand)
    assert (expected.error is not None) == spec.error, expected

    other = importlib.import_module(
        modules.write(modules.name("without"), HEADER + spec.without_key)
    )
    without, without_calls = run(spec, other)
    assert not without.same_as(expected) or without_calls != expected_calls, (
        f"{case}: the key's decorator changes nothing here"
    )

    name = modules.write(modules.name("plain"), HEADER + spec.plain)
    policy = modules.policy(policy_text(spec.targets, name))
    if when == "before_import":
        handle = apply(policy)
        plain = importlib.import_module(name)
    else:
        plain = importlib.import_module(name)
        handle = apply(policy)
    with handle:
        got, got_calls = run(spec, plain)
    assert got.same_as(expected), f"policy {got} != hand {expected}"
    assert got_calls == expected_calls
