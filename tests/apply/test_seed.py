"""Conformance: every code cell of the seed document (PyTorch's error_on_graph_break page),
written undecorated plus a policy, behaves exactly like the hand-decorated cell: the same
error or none, the same result, the same number of graphs and compiled frames; with the
policy applied before the module is imported, and after."""

from __future__ import annotations

import importlib
import textwrap
from dataclasses import dataclass

import pytest
import torch

from .conftest import BACKEND, Modules, apply, outcome

HEADER = f"import torch\nBACKEND = {BACKEND!r}\n"


@dataclass(frozen=True)
class Cell:
    hand: str  # the seed's cell, decorators in the source
    targets: str  # the policy's targets, `M` standing for the module's name
    error: bool  # what the seed says: does calling fn raise?

    @property
    def plain(self) -> str:
        """The same code with every decorator (and the seed's monkeypatch line) taken out."""
        kept = [
            line
            for line in textwrap.dedent(self.hand).splitlines()
            if not line.strip().startswith("@torch.")
            and "= torch._dynamo.error_on_graph_break(" not in line
        ]
        return "\n".join(kept) + "\n"


CELLS = {
    "eogb_false_under_true": Cell(
        hand="""
        @torch._dynamo.error_on_graph_break(False)
        def code_with_a_difficult_graph_break(x):
            x = x + 1
            torch._dynamo.graph_break()
            return x + 2

        def inner(x):
            return code_with_a_difficult_graph_break(x)

        @torch._dynamo.error_on_graph_break(True)
        @torch.compile(backend=BACKEND)
        def fn(x):
            return inner(x)
        """,
        targets="""
          M.code_with_a_difficult_graph_break: {error_on_graph_break: false}
          M.fn: {compile: true, error_on_graph_break: true}
        """,
        error=False,
    ),
    "context_manager_inside": Cell(
        hand="""
        @torch._dynamo.error_on_graph_break(True)
        @torch.compile(backend=BACKEND)
        def fn(x):
            x = x + 1
            with torch._dynamo.error_on_graph_break(False):
                torch._dynamo.graph_break()
            return x + 2
        """,
        targets="""
          M.fn: {compile: true, error_on_graph_break: true}
        """,
        error=False,
    ),
    "third_party_module": Cell(
        hand="""
        class ThirdPartyModule(torch.nn.Module):
            def forward(self, x):
                x = x + 1
                torch._dynamo.graph_break()
                return x + 2

        tp_mod = ThirdPartyModule()
        tp_mod.forward = torch._dynamo.error_on_graph_break(False)(tp_mod.forward)

        @torch._dynamo.error_on_graph_break(True)
        @torch.compile(backend=BACKEND)
        def fn(x):
            return tp_mod.forward(x)
        """,
        targets="""
          M.ThirdPartyModule.forward: {error_on_graph_break: false}
          M.fn: {compile: true, error_on_graph_break: true}
        """,
        error=False,
    ),
    "eogb_true_under_false": Cell(
        hand="""
        @torch._dynamo.error_on_graph_break(True)
        def inner2(x):
            x = x + 1
            torch._dynamo.graph_break()  # error
            return x + 2

        def inner(x):
            return inner2(x)

        @torch.compile(backend=BACKEND)
        def fn(x):
            x = x + 4
            torch._dynamo.graph_break()  # no error
            return inner(x)
        """,
        targets="""
          M.inner2: {error_on_graph_break: true}
          M.fn: {compile: true}
        """,
        error=True,
    ),
    "nesting_context_manager": Cell(
        hand="""
        def inner(x):
            x = x + 1
            torch._dynamo.graph_break()
            return x + 2

        def inner2(x):
            with torch._dynamo.error_on_graph_break(False):
                return inner(x)

        @torch._dynamo.error_on_graph_break(True)
        @torch.compile(backend=BACKEND)
        def fn(x):
            return inner2(x)
        """,
        targets="""
          M.fn: {compile: true, error_on_graph_break: true}
        """,
        error=False,
    ),
    "nested_regions": Cell(
        hand="""
        def inner(x):
            x = x + 1
            with torch._dynamo.error_on_graph_break(False):
                torch._dynamo.graph_break()
            return x + 2

        def inner2(x):
            with torch._dynamo.error_on_graph_break(True):
                return inner(x)

        @torch.compile(backend=BACKEND)
        def fn(x):
            return inner2(x)
        """,
        targets="""
          M.fn: {compile: true}
        """,
        error=False,
    ),
    "fullgraph_beats_eogb": Cell(
        hand="""
        @torch._dynamo.error_on_graph_break(False)
        def inner(x):
            x = x + 1
            torch._dynamo.graph_break()
            return x + 2

        @torch.compile(backend=BACKEND, fullgraph=True)
        def fn(x):
            return inner(x)
        """,
        targets="""
          M.inner: {error_on_graph_break: false}
          M.fn: {fullgraph: true}
        """,
        error=True,
    ),
    "fullgraph_not_toggled_back": Cell(
        hand="""
        @torch.compile(backend=BACKEND, fullgraph=False)
        def inner(x):
            x = x + 1
            torch._dynamo.graph_break()
            return x + 2

        @torch.compile(backend=BACKEND, fullgraph=True)
        def fn(x):
            return inner(x)
        """,
        targets="""
          M.inner: {fullgraph: false}
          M.fn: {fullgraph: true}
        """,
        error=True,
    ),
    "inner_fullgraph": Cell(
        hand="""
        @torch.compile(backend=BACKEND, fullgraph=True)
        def inner(x):
            x = x + 1
            torch._dynamo.graph_break()
            return x + 2

        @torch.compile(backend=BACKEND, fullgraph=False)
        def fn(x):
            return inner(x)
        """,
        targets="""
          M.inner: {fullgraph: true}
          M.fn: {fullgraph: false}
        """,
        error=True,
    ),
}


def policy_text(targets: str, module: str) -> str:
    body = "\n".join("  " + line.strip() for line in targets.strip().splitlines())
    body = body.replace("M.", module + ".")
    return f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n{body}\n"


@pytest.mark.parametrize("when", ["before_import", "after_import"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_policy_equals_hand_decorators(modules: Modules, cell: str, when: str) -> None:
    spec = CELLS[cell]
    hand = importlib.import_module(
        modules.write(modules.name("hand"), HEADER + textwrap.dedent(spec.hand))
    )
    expected = outcome(lambda: hand.fn(torch.ones(3)))
    assert (expected.error is not None) == spec.error, expected
    assert expected.graphs > 0 or expected.error is not None

    name = modules.write(modules.name("plain"), HEADER + spec.plain)
    policy = modules.policy(policy_text(spec.targets, name))
    if when == "before_import":
        handle = apply(policy)
        plain = importlib.import_module(name)
    else:
        plain = importlib.import_module(name)
        handle = apply(policy)
    with handle:
        got = outcome(lambda: plain.fn(torch.ones(3)))
    assert got.same_as(expected), f"policy {got} != hand {expected}"
    # and undone, the module is plain again: no error, whatever the cell said
    plain_again = outcome(lambda: torch.compile(plain.fn, backend=BACKEND)(torch.ones(3)))
    assert plain_again.error is None
