"""Each kind of target (method, staticmethod, classmethod, nn.Module.forward, __call__,
inherited member, alias) patched by a policy behaves like the hand-decorated source."""

from __future__ import annotations

import importlib
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
import torch

import policycompile as pc

from .conftest import BACKEND, Modules, Outcome, apply, outcome

HEADER = f"""
import functools
import torch
BACKEND = {BACKEND!r}

def eogb_wraps(value):
    # The hand decorator plus functools.wraps: under a classmethod the bare one fails in a
    # compiled caller (AttributeError: type object 'C' has no attribute 'inner'; docs/torch.md).
    return lambda f: functools.wraps(f)(torch._dynamo.error_on_graph_break(value)(f))
"""
EOGB = "@torch._dynamo.error_on_graph_break({})"
EOGB_WRAPS = "@eogb_wraps({})"


def compare(
    modules: Modules,
    template: str,
    decorators: dict[str, str],
    targets: str,
    call: Callable[[Any], Any],
) -> tuple[Outcome, Outcome]:
    """Import ``template`` hand-decorated and plain+policy; return both outcomes of ``call``."""
    hand_src = textwrap.dedent(template).format(**decorators)
    plain_src = textwrap.dedent(template).format(**{k: "" for k in decorators})
    hand = importlib.import_module(modules.write(modules.name("hand"), HEADER + hand_src))
    expected = outcome(lambda: call(hand))
    name = modules.write(modules.name("plain"), HEADER + plain_src)
    body = "\n".join("  " + t.strip() for t in textwrap.dedent(targets).strip().splitlines())
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n{body.replace('M.', name + '.')}\n"
    )
    with apply(policy):
        plain = importlib.import_module(name)
        got = outcome(lambda: call(plain))
    assert got.same_as(expected), f"policy {got} != hand {expected}"
    return expected, got


BREAKING_METHODS = """
class C:
    {meth}
    def meth(self, x):
        x = x + 1
        torch._dynamo.graph_break()
        return x + 2

    @staticmethod
    {static}
    def static(x):
        x = x + 1
        torch._dynamo.graph_break()
        return x + 2

    @classmethod
    {cls}
    def klass(cls, x):
        x = x + 1
        torch._dynamo.graph_break()
        return x + 2

c = C()

@torch.compile(backend=BACKEND)
def via_method(x):
    return c.meth(x) * 2

@torch.compile(backend=BACKEND)
def via_static(x):
    return C.static(x) * 2

@torch.compile(backend=BACKEND)
def via_instance_static(x):
    return c.static(x) * 2

@torch.compile(backend=BACKEND)
def via_classmethod(x):
    return C.klass(x) * 2

@torch.compile(backend=BACKEND)
def via_instance_classmethod(x):
    return c.klass(x) * 2
"""


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize(
    ("key", "target", "entry"),
    [
        ("meth", "M.C.meth", "via_method"),
        ("static", "M.C.static", "via_static"),
        ("static", "M.C.static", "via_instance_static"),
        ("cls", "M.C.klass", "via_classmethod"),
        ("cls", "M.C.klass", "via_instance_classmethod"),
    ],
)
def test_error_on_graph_break_on_methods(
    modules: Modules, key: str, target: str, entry: str, value: bool
) -> None:
    decorators = {"meth": "", "static": "", "cls": ""}
    decorators[key] = (EOGB_WRAPS if key == "cls" else EOGB).format(value)
    expected, _ = compare(
        modules,
        BREAKING_METHODS,
        decorators,
        f"{target}: {{error_on_graph_break: {str(value).lower()}}}",
        lambda m: getattr(m, entry)(torch.ones(3)),
    )
    assert (expected.error == "Unsupported") is value


CLASS_WITH_DUNDER = (
    BREAKING_METHODS
    + """
def neg(self):
    x = self.value + 1
    torch._dynamo.graph_break()
    return x * 2

C.__neg__ = neg  # a dunder the class defines (set after the class body: same __dict__)
C.value = torch.ones(3)

@torch.compile(backend=BACKEND)
def via_dunder(x):
    return -c + x
"""
)


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ("via_method", "Unsupported"),
        ("via_static", "Unsupported"),
        ("via_instance_static", "Unsupported"),
        ("via_classmethod", "Unsupported"),
        ("via_instance_classmethod", "Unsupported"),
        ("via_dunder", None),  # the hand-written class leaves __neg__ alone: no error
    ],
)
def test_class_rule_reaches_every_method_but_not_dunders(
    modules: Modules, entry: str, error: str | None
) -> None:
    expected, _ = compare(
        modules,
        CLASS_WITH_DUNDER,
        {"meth": EOGB.format(True), "static": EOGB.format(True), "cls": EOGB_WRAPS.format(True)},
        "M.C: {error_on_graph_break: true}",
        lambda m: getattr(m, entry)(torch.ones(3)),
    )
    assert expected.error == error


MODULE_FORWARD = """
class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    {fwd}
    def forward(self, x):
        return torch.relu(self.lin(x)) + 1

    def helper(self, x):
        return x * 3

class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = torch.nn.ModuleList([Block() for _ in range(3)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x

model = Model()
"""


def test_rule_on_module_class_compiles_its_forward(modules: Modules) -> None:
    expected, got = compare(
        modules,
        MODULE_FORWARD,
        {"fwd": "@torch.compile(backend=BACKEND)"},
        "M.Block: {compile: true}",
        lambda m: m.model(torch.ones(2, 4)),
    )
    assert expected.error is None
    assert got.graphs == expected.graphs >= 1


def test_compile_does_not_reach_other_methods(modules: Modules) -> None:
    name = modules.write(modules.name("m"), HEADER + MODULE_FORWARD.format(fwd=""))
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.Block: {{compile: true}}\n")
    with apply(policy) as handle:
        mod = importlib.import_module(name)
        patched = {r.plan.target.display for r in handle.records}
        assert patched == {f"{name}.Block.forward"}
        assert "helper" in vars(mod.Block) and not hasattr(
            vars(mod.Block)["helper"], "__policycompile__"
        )


def test_call_dunder_inherits_but_init_does_not(modules: Modules) -> None:
    name = modules.write(
        modules.name("m"),
        """
        class F:
            def __init__(self):
                self.k = 2
            def __call__(self, x):
                return x * self.k
            def __repr__(self):
                return "F()"
        """,
    )
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.F: {{error_on_graph_break: true}}\n")
    with apply(policy) as handle:
        importlib.import_module(name)
        assert {r.plan.target.attr for r in handle.records} == {"__call__"}
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.F.__init__: {{error_on_graph_break: true}}\n", "2.yaml"
    )
    with apply(policy) as handle:
        assert {r.plan.target.attr for r in handle.records} == {"__init__"}


def test_inherited_member_is_wrapped_on_the_subclass_only(modules: Modules) -> None:
    name = modules.write(
        modules.name("m"),
        """
        class Base:
            def step(self, x):
                return x + 1
        class Sub(Base):
            pass
        """,
    )
    mod = importlib.import_module(name)
    original = vars(mod.Base)["step"]
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.Sub.step: {{error_on_graph_break: true}}\n"
    )
    with apply(policy) as handle:
        (record,) = handle.records
        assert record.owner is mod.Sub
        assert vars(mod.Base)["step"] is original
        assert "inherited from" in record.plan.notes[0]
        assert mod.Sub().step(1) == 2
    assert "step" not in vars(mod.Sub)


def test_inherited_forward_of_module_subclass(modules: Modules) -> None:
    name = modules.write(
        modules.name("m"),
        """
        import torch
        class Base(torch.nn.Module):
            def forward(self, x):
                return x + 1
        class Sub(Base):
            pass
        """,
    )
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n  {name}.Sub: {{compile: true}}\n"
    )
    with apply(policy) as handle:
        mod = importlib.import_module(name)
        (record,) = handle.records
        assert record.owner is mod.Sub and record.attr == "forward"
        assert torch.equal(mod.Sub()(torch.ones(2)), torch.full((2,), 2.0))
        assert "forward" not in vars(mod.Base) or not hasattr(
            vars(mod.Base)["forward"], "__policycompile__"
        )


def test_wrappers_keep_identity_and_signature(modules: Modules) -> None:
    name = modules.write(
        modules.name("m"),
        '''
        def fn(x: int, *, scale: float = 2.0) -> float:
            """Doc of fn."""
            return x * scale
        class C:
            @staticmethod
            def s(a, b=1):
                "static doc"
                return a + b
            @classmethod
            def k(cls, a):
                return a
        ''',
    )
    mod = importlib.import_module(name)
    sig = inspect.signature(mod.fn)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.**: {{error_on_graph_break: true}}\n")
    with apply(policy):
        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            assert getattr(mod.fn, attr) == getattr(mod.fn.__wrapped__, attr)
        assert mod.fn.__name__ == "fn" and mod.fn.__doc__ == "Doc of fn."
        assert inspect.signature(mod.fn) == sig
        assert isinstance(vars(mod.C)["s"], staticmethod)
        assert isinstance(vars(mod.C)["k"], classmethod)
        assert mod.C.s.__doc__ == "static doc" and inspect.signature(mod.C.s).parameters.keys() == {
            "a",
            "b",
        }
        assert mod.C().s(1) == 2 and mod.C.k(5) == 5 and mod.C().k(6) == 6
        assert mod.fn(3) == 6.0


def test_alias_is_rebound_and_restored(modules: Modules) -> None:
    lib = modules.write(
        modules.name("lib"),
        """
        import torch
        def inner(x):
            x = x + 1
            torch._dynamo.graph_break()
            return x + 2
        """,
    )
    app = modules.write(
        modules.name("app"),
        f"""
        import torch
        from {lib} import inner
        from {lib} import inner as renamed
        holder = [inner]
        frozen = (inner,)

        @torch.compile(backend={BACKEND!r})
        def fn(x):
            return renamed(inner(x))
        """,
    )
    libmod, appmod = importlib.import_module(lib), importlib.import_module(app)
    original = libmod.inner
    policy = modules.policy(
        f"version: 1\ntargets:\n  {lib}.inner: {{error_on_graph_break: true}}\n"
    )
    with apply(policy) as handle:
        assert appmod.inner is libmod.inner is appmod.renamed is not original
        assert {(a.module.__name__, a.name) for a in handle.aliases} == {
            (app, "inner"),
            (app, "renamed"),
        }
        assert outcome(lambda: appmod.fn(torch.ones(3))).error == "Unsupported"
        # a module-level list is rebound one level deep, as a decorator at the definition
        # would have had it; a tuple cannot change in place: reported, by where it is
        assert appmod.holder[0] is libmod.inner
        assert handle.unreached == [f"{app}.frozen[0] holds the original of {lib}.inner"]
        assert handle.report().unreached == (handle.unreached[0],)
        assert f"unreached: {app}.frozen[0] holds" in handle.report().text()
        assert handle.report().to_dict()["unreached"] == handle.unreached
        assert any("held by a tuple" in u for u in handle.unreached_references())
    assert appmod.inner is original and appmod.renamed is original and libmod.inner is original
    assert appmod.holder[0] is original


def test_already_compiled_in_source_gets_no_second_compile(modules: Modules) -> None:
    name = modules.write(
        modules.name("m"),
        f"""
        import torch
        @torch.compile(backend={BACKEND!r})
        def fn(x):
            return x + 1
        """,
    )
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n"
        f"  {name}.fn: {{compile: true, error_on_graph_break: true}}\n"
    )
    with apply(policy) as handle:
        mod = importlib.import_module(name)
        (record,) = handle.records
        assert record.plan.compile is None and record.plan.error_on_graph_break is True
        assert "already compiled in the source" in record.plan.notes[0]
        got = outcome(lambda: mod.fn(torch.ones(2)))
    assert got.graphs == 1 and got.error is None


def test_plan_decorators_read_like_the_source(modules: Modules) -> None:
    name = modules.write(modules.name("m"), "def f(x):\n    return x\n")
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: eager}}\ntargets:\n"
        f"  {name}.f: {{fullgraph: true, error_on_graph_break: false}}\n"
    )
    with apply(policy) as handle:
        importlib.import_module(name)
        (record,) = handle.records
        assert record.plan.decorators == [
            "@torch._dynamo.error_on_graph_break(False)",
            "@torch.compile(backend='eager', fullgraph=True)",
        ]
    assert isinstance(pc.PolicyHandle, type)


def test_nested_classes_are_reached(modules: Modules) -> None:
    name = modules.write(
        modules.name("m"),
        """
        class Outer:
            class Inner:
                def deep(self, x):
                    return x
            def shallow(self, x):
                return x
        """,
    )
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.Outer.Inner: {{error_on_graph_break: true}}\n"
    )
    with apply(policy) as handle:
        mod = importlib.import_module(name)
        assert [r.plan.target.display for r in handle.records] == [f"{name}.Outer.Inner.deep"]
        assert mod.Outer.Inner().deep(3) == 3


def test_method_compile_entry_keeps_attributes_like_torch_compile(modules: Modules) -> None:
    name = modules.write(
        modules.name("attrs"),
        """
        class C:
            def meth(self, x):
                return x + 1
        C.meth.marker = "kept"
        """,
    )
    mod = importlib.import_module(name)
    hand = torch.compile(vars(mod.C)["meth"], backend=BACKEND)
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\n"
        f"targets:\n  {name}.C.meth: {{compile: true}}\n"
    )
    with apply(policy):
        patched = vars(mod.C)["meth"]
        assert patched.marker == hand.marker == "kept"
        assert torch.equal(mod.C().meth(torch.ones(2)), torch.full((2,), 2.0))
