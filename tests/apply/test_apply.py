"""apply() as a whole: undo, atomicity, one policy at a time, missing and unpatchable targets."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

import policycompile as pc
from policycompile._engine.hook import PolicyFinder

from .conftest import Modules, apply

LIB = """
import torch

def fn(x):
    return x + 1

def other(x):
    return x * 2

class C:
    def meth(self, x):
        return x
    @staticmethod
    def s(x):
        return x
    @classmethod
    def k(cls, x):
        return x
"""


def test_undo_restores_identical_objects_and_is_idempotent(modules: Modules) -> None:
    name = modules.write(modules.name("lib"), LIB)
    user = modules.write(modules.name("user"), f"from {name} import fn as alias\n")
    mod, usermod = importlib.import_module(name), importlib.import_module(user)
    before = {
        "fn": mod.fn,
        "other": mod.other,
        "meth": vars(mod.C)["meth"],
        "s": vars(mod.C)["s"],
        "k": vars(mod.C)["k"],
    }
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.**: {{error_on_graph_break: true}}\n")
    handle = apply(policy)
    assert len(handle.records) == 5
    assert mod.fn is not before["fn"] and usermod.alias is mod.fn
    assert any(isinstance(f, PolicyFinder) for f in sys.meta_path)
    handle.undo()
    assert mod.fn is before["fn"] and mod.other is before["other"]
    for attr in ("meth", "s", "k"):
        assert vars(mod.C)[attr] is before[attr]
    assert usermod.alias is before["fn"]
    assert not any(isinstance(f, PolicyFinder) for f in sys.meta_path)
    handle.undo()  # harmless
    assert mod.fn is before["fn"]
    assert not handle.active


def test_undo_leaves_attributes_replaced_since_and_warns(modules: Modules) -> None:
    name = modules.write(modules.name("lib"), LIB)
    mod = importlib.import_module(name)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.fn: {{error_on_graph_break: true}}\n")
    handle = apply(policy)

    def mine(x: object) -> object:
        return x

    mod.fn = mine
    with pytest.warns(pc.PolicyWarning, match="no longer holds the policy's wrapper"):
        handle.undo()
    assert mod.fn is mine


def test_context_manager(modules: Modules) -> None:
    name = modules.write(modules.name("lib"), LIB)
    mod = importlib.import_module(name)
    original = mod.fn
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.fn: {{disable: true}}\n")
    with apply(policy) as handle:
        assert mod.fn is not original
        assert handle.active
    assert mod.fn is original


def test_second_apply_names_the_first(modules: Modules) -> None:
    name = modules.write(modules.name("lib"), LIB)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.fn: {{disable: true}}\n")
    with pc.apply(policy):
        with pytest.raises(pc.PolicyStateError) as info:
            pc.apply(policy)
        assert f"a policy is already applied: {policy}" in str(info.value)
        assert "test_apply.py" in str(info.value)  # where the first was applied
        assert isinstance(info.value, RuntimeError)
    with apply(policy):  # after undo, applying again is fine
        pass


FROZEN = """
def fn(x):
    return x

class Frozen(type):
    def __setattr__(cls, name, value):
        raise TypeError("this class is frozen")

class F(metaclass=Frozen):
    def meth(self, x):
        return x
"""


def test_atomic_when_a_patch_fails_part_way(modules: Modules) -> None:
    # `other` is imported first, so it is patched before the failure in `lib`: the rollback
    # has real work to do, in another module and in the failing module itself.
    other = modules.write(modules.name("other"), "def g(x):\n    return x\n")
    othermod = importlib.import_module(other)
    name = modules.write(modules.name("lib"), FROZEN)
    mod = importlib.import_module(name)
    assert list(sys.modules).index(other) < list(sys.modules).index(name)
    fn, g = mod.fn, othermod.g
    policy = modules.policy(
        f"version: 1\ntargets:\n  {other}.g: {{disable: true}}\n  {name}.fn: {{disable: true}}\n"
        f"  {name}.F.meth: {{disable: true}}\n"
    )
    meta_path = list(sys.meta_path)
    with pytest.raises(pc.PolicyTargetError) as info:
        pc.apply(policy)
    assert f"{policy}:5:3: error: target '{name}.F.meth' cannot be patched" in str(info.value)
    assert "this class is frozen" in str(info.value)
    assert mod.fn is fn and othermod.g is g
    assert "meth" in vars(mod.F) and not hasattr(vars(mod.F)["meth"], "__policycompile__")
    assert sys.meta_path == meta_path
    ok = modules.policy(f"version: 1\ntargets:\n  {other}.g: {{disable: true}}\n", "ok.yaml")
    with apply(ok):
        pass  # the failed apply left no active policy behind


REFUSING = """
MADE = []

class Refusing(type):
    def __init__(cls, *args):
        super().__init__(*args)
        MADE.append(cls)

    def __setattr__(cls, name, value):
        if name == "b":
            raise TypeError("b is read-only")
        super().__setattr__(name, value)
"""

TWO_MEMBERS = """
from {meta} import Refusing

class K(metaclass=Refusing):
    def a(self, x):
        return x

    def b(self, x):
        return x
"""


@pytest.mark.parametrize("when", ["after the import", "before the import"])
def test_a_member_refused_after_another_was_patched_takes_that_one_back(
    modules: Modules, when: str
) -> None:
    # One walk over one class sets `a`'s wrapper, then `b`'s is refused: `a` gets its
    # function back, whether the class was patched as it was defined or once imported.
    meta = modules.write(modules.name("meta"), REFUSING)
    name = modules.write(modules.name("lib"), TWO_MEMBERS.format(meta=meta))
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.K.a: {{disable: true}}\n  {name}.K.b: {{disable: true}}\n"
    )
    made = importlib.import_module(meta).MADE

    def patch() -> None:
        if when == "after the import":
            importlib.import_module(name)
            pc.apply(policy)
        else:
            with apply(policy):
                importlib.import_module(name)

    with pytest.raises(pc.PolicyTargetError, match="b is read-only"):
        patch()
    (k,) = made
    assert not hasattr(vars(k)["a"], "__policycompile__")
    assert not hasattr(vars(k)["b"], "__policycompile__")
    assert vars(k)["a"].__code__.co_filename == vars(k)["b"].__code__.co_filename


def test_patterns_skip_what_refuses_setattr_with_one_warning(modules: Modules) -> None:
    name = modules.write(modules.name("lib"), FROZEN)
    mod = importlib.import_module(name)
    fn = mod.fn
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.**: {{disable: true}}\n")
    with pytest.warns(pc.PolicyWarning) as seen:
        handle = apply(policy)
    with handle:
        assert mod.fn is not fn  # apply went on past the class it could not patch
        assert [r.plan.target.attr for r in handle.records] == ["fn"]
    lines = [str(w.message) for w in seen if "F.meth" in str(w.message)]
    assert len(lines) == 1 and "this class is frozen" in lines[0]


def test_missing_exact_target_is_an_error_with_suggestion(modules: Modules) -> None:
    name = modules.write(modules.name("lib"), LIB)
    importlib.import_module(name)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.fnn: {{disable: true}}\n")
    with pytest.raises(pc.PolicyTargetError) as info:
        pc.apply(policy)
    assert str(info.value) == (
        f"{policy}:3:3: error: target '{name}.fnn' names nothing: module {name} has no "
        "attribute 'fnn'; did you mean 'fn'?"
    )
    assert isinstance(info.value, LookupError)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.C.mehh: {{disable: true}}\n", "2.yaml")
    with pytest.raises(
        pc.PolicyTargetError, match=r"class .*C has no attribute 'mehh'; did you mean 'meth'"
    ):
        pc.apply(policy)


def test_missing_exact_target_at_import_time(modules: Modules) -> None:
    name = modules.write(modules.name("lib"), LIB)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.C.ss: {{disable: true}}\n")
    with apply(policy):
        with pytest.raises(pc.PolicyTargetError, match="did you mean 's'"):
            importlib.import_module(name)
        assert name not in sys.modules


def test_not_strict_warns_and_lists_unused(modules: Modules) -> None:
    name = modules.write(modules.name("lib"), LIB)
    policy = modules.policy(
        f"version: 1\nstrict: false\ntargets:\n  {name}.fnn: {{disable: true}}\n"
        f"  {name}.fn: {{disable: true}}\n  nothing_here.**: {{disable: true}}\n"
    )
    with apply(policy) as handle, pytest.warns(pc.PolicyWarning, match="names nothing"):
        importlib.import_module(name)
    assert [w for w in handle.warnings if ": warning: target" in w]
    assert {r.pattern.text for r in handle.unused_rules()} == {f"{name}.fnn", "nothing_here.**"}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("torch._C.TensorBase.add", "torch._C.TensorBase is a C type"),
        ("math.sqrt", "math.sqrt is a builtin function"),
        ("torch.float32", "is a dtype object, not a function"),
    ],
)
def test_unpatchable_exact_targets(modules: Modules, target: str, message: str) -> None:
    import math  # noqa: F401 - imported, so the rule is checked at apply

    policy = modules.policy(f"version: 1\ntargets:\n  {target}: {{error_on_graph_break: true}}\n")
    with pytest.raises(pc.PolicyTargetError, match="cannot be patched") as info:
        pc.apply(policy)
    assert message in str(info.value)
    assert info.value.line == 3


def test_patterns_skip_unpatchable_objects(modules: Modules) -> None:
    name = modules.write(
        modules.name("lib"),
        """
        import math
        sqrt = math.sqrt
        def fn(x):
            return x
        class C:
            size = property(lambda self: 1)
        """,
    )
    importlib.import_module(name)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.**: {{error_on_graph_break: true}}\n")
    with apply(policy) as handle:
        assert [r.plan.target.attr for r in handle.records] == ["fn"]


def test_wrapped_code_runs_eagerly_with_the_flag_set(modules: Modules) -> None:
    import torch._dynamo.utils as dynamo_utils  # torch's own flag, not our accessor

    name = modules.write(
        modules.name("lib"),
        """
        import torch._dynamo.utils
        def probe():
            return torch._dynamo.utils._error_on_graph_break
        """,
    )
    mod = importlib.import_module(name)
    hand = torch._dynamo.error_on_graph_break(True)(mod.probe)
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.probe: {{error_on_graph_break: true}}\n"
    )
    with apply(policy):
        assert mod.probe() is hand() is True
        assert dynamo_utils._error_on_graph_break is False
        dynamo_utils._error_on_graph_break = True  # already set: still True inside, kept after
        try:
            assert mod.probe() is hand() is True
            assert dynamo_utils._error_on_graph_break is True
        finally:
            dynamo_utils._error_on_graph_break = False


def test_flag_restored_after_exception(modules: Modules) -> None:
    from policycompile._torch import dynamo as _dynamo

    name = modules.write(modules.name("lib"), "def boom():\n    raise KeyError('x')\n")
    mod = importlib.import_module(name)
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.boom: {{error_on_graph_break: true}}\n"
    )
    with apply(policy):
        with pytest.raises(KeyError):
            mod.boom()
        assert _dynamo.get_error_on_graph_break() is False


def test_apply_accepts_a_loaded_policy_and_profile(modules: Modules) -> None:
    name = modules.write(modules.name("lib"), LIB)
    mod = importlib.import_module(name)
    path = modules.policy(
        f"version: 1\ntargets:\n  {name}.fn: {{disable: true}}\n"
        f"profiles:\n  ci:\n    targets:\n      {name}.other: {{disable: true}}\n"
    )
    with apply(pc.load(path)) as handle:
        assert len(handle.records) == 1
    with apply(path, profile="ci") as handle:
        assert {r.plan.target.attr for r in handle.records} == {"fn", "other"}
    assert torch.equal(mod.fn(torch.ones(1)), torch.full((1,), 2.0))
