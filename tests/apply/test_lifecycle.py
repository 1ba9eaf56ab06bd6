"""apply() and undo() leave nothing half done: modules still executing, finders inserted in
front of ours, aliases taken after apply, circular imports, re-exports in either order,
undo racing an import or interrupted, exact rules through aliases, and what cannot be
patched. Each effect is checked by behaviour: ``probe()`` returns torch's own
error_on_graph_break flag as it runs, so a wrapped probe returns True."""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import sys
import textwrap
import threading
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch._dynamo.utils

import policycompile as pc
from policycompile._engine.hook import PolicyFinder

from ..conftest import python
from .conftest import Modules, apply

PROBE = """
import torch._dynamo.utils

def probe():
    return torch._dynamo.utils._error_on_graph_break
"""


def eogb(*names: str) -> str:
    return "version: 1\ntargets:\n" + "".join(
        f"  {n}: {{error_on_graph_break: true}}\n" for n in names
    )


# -- modules still executing when apply runs ----------------------------------------------


PAUSE = "import pc_gate\npc_gate.started.set()\npc_gate.gate.wait(30)\n"


@contextlib.contextmanager
def imported_half_way(name: str) -> Iterator[list[types.ModuleType]]:
    """Import ``name`` in another thread and hold it where its source says ``PAUSE``; the
    body runs while the import waits there; on leaving, the import finishes. Yields the list
    that receives the module."""
    gate, started = threading.Event(), threading.Event()
    sys.modules["pc_gate"] = types.SimpleNamespace(gate=gate, started=started)  # type: ignore[assignment]
    done: list[types.ModuleType] = []
    worker = threading.Thread(target=lambda: done.append(importlib.import_module(name)))
    worker.start()
    try:
        assert started.wait(30)
        yield done
    finally:
        gate.set()
        worker.join(30)
        del sys.modules["pc_gate"]


def test_module_imported_by_another_thread_is_patched_when_it_finishes(modules: Modules) -> None:
    name = modules.name("slow")
    modules.write(
        name,
        "import torch._dynamo.utils\n"
        "def early():\n    return torch._dynamo.utils._error_on_graph_break\n"
        + PAUSE
        + "def late():\n    return torch._dynamo.utils._error_on_graph_break\n",
    )
    with imported_half_way(name) as done:
        # `late` does not exist yet: no "names nothing" error, it is checked at the end
        handle = apply(modules.policy(eogb(f"{name}.early", f"{name}.late")))
    with handle:
        (mod,) = done
        assert mod.early() is True and mod.late() is True
    assert mod.early() is False and mod.late() is False


def test_apply_called_inside_a_covered_module(modules: Modules) -> None:
    name = modules.name("selfapply")
    policy = modules.policy(eogb(f"{name}.before", f"{name}.after"))
    modules.write(
        name,
        f"""
        import policycompile, torch._dynamo.utils
        def before():
            return torch._dynamo.utils._error_on_graph_break
        HANDLE = policycompile.apply({str(policy)!r})
        def after():
            return torch._dynamo.utils._error_on_graph_break
        """,
    )
    mod = importlib.import_module(name)
    with mod.HANDLE:
        assert mod.before() is True and mod.after() is True


def test_missing_name_in_a_module_that_finished_is_still_an_error(modules: Modules) -> None:
    name = modules.name("selfapply_typo")
    policy = modules.policy(eogb(f"{name}.aftr"))
    modules.write(
        name,
        f"""
        import policycompile
        HANDLE = policycompile.apply({str(policy)!r})
        def after():
            return 1
        """,
    )
    with pytest.raises(pc.PolicyTargetError, match="did you mean 'after'"):
        importlib.import_module(name)


def test_apply_at_the_top_of_a_plain_script_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(eogb("train.step"))
    (tmp_path / "train.py").write_text(
        "import policycompile\nhandle = policycompile.apply('p.yaml')\ndef step():\n    return 1\n"
    )
    done = python("train.py", cwd=tmp_path)
    assert done.returncode == 1
    assert "p.yaml:3:3: error: target 'train.step' names nothing yet" in done.stderr
    assert "train.py:2" in done.stderr and "policycompile run p.yaml" in done.stderr
    # applied after the definitions, the same script works, and so does `policycompile run`
    (tmp_path / "late.py").write_text(
        "import policycompile, torch._dynamo.utils\n"
        "def step():\n    return torch._dynamo.utils._error_on_graph_break\n"
        "with policycompile.apply('p2.yaml'):\n    print(step())\n"
    )
    (tmp_path / "p2.yaml").write_text(eogb("late.step"))
    done = python("late.py", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "True\n"), done.stderr
    assert "not patched" not in done.stderr  # nothing it reaches comes after the apply line
    # a pattern reaching a function defined below the apply line: a warning that names it
    (tmp_path / "early.py").write_text(
        "import policycompile\nhandle = policycompile.apply('p4.yaml')\n"
        "def helper():\n    return 1\nclass Unrelated:\n    pass\n"
    )
    (tmp_path / "p4.yaml").write_text(
        "version: 1\ntargets:\n  early.h*: {error_on_graph_break: true}\n"
    )
    done = python("early.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "early: helper not patched: apply() was called at" in done.stderr
    assert "Unrelated" not in done.stderr
    (tmp_path / "run.py").write_text(
        "import torch._dynamo.utils\n"
        "def step():\n    return torch._dynamo.utils._error_on_graph_break\nprint(step())\n"
    )
    (tmp_path / "p3.yaml").write_text(eogb("run.step"))
    done = python("-m", "policycompile", "run", "p3.yaml", "run.py", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "True\n"), done.stderr


# -- finders and aliases --------------------------------------------------------------------


class FrontFinder(importlib.abc.MetaPathFinder):
    """A finder inserted in front of everything after apply, answering for one module with
    a loader of its own (as typeguard's hook and pytest's assertion rewriter do)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loaded: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        assert spec is not None
        real = spec.loader
        finder = self

        class Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> None:
                return None

            def exec_module(self, module: types.ModuleType) -> None:
                finder.loaded.append(module.__name__)
                real.exec_module(module)  # type: ignore[union-attr]

        spec.loader = Loader()
        return spec


def test_a_finder_inserted_in_front_after_apply_does_not_bypass_patching(
    modules: Modules,
) -> None:
    """``sys.meta_path`` stays the list it is, so a finder inserted in front of the policy's
    answers first for what it finds; the module it loaded is patched (after it ran) at the
    next import that reaches the policy's finder, which moves back in front."""
    name = modules.write(modules.name("front"), PROBE)
    later = modules.write(modules.name("later"), "")
    meta_path = sys.meta_path
    with apply(modules.policy(eogb(f"{name}.probe"))):
        assert sys.meta_path is meta_path
        front = FrontFinder(name)
        sys.meta_path.insert(0, front)
        try:
            mod = importlib.import_module(name)
            assert front.loaded == [name]  # its loader ran
            importlib.import_module(later)
        finally:
            sys.meta_path.remove(front)
        assert isinstance(sys.meta_path[0], PolicyFinder)
        assert mod.probe() is True  # and the module was patched all the same
    assert sys.meta_path is meta_path


def test_aliases_taken_after_apply_are_restored_by_undo(modules: Modules) -> None:
    lib = modules.write(modules.name("lib"), PROBE)
    with apply(modules.policy(eogb(f"{lib}.probe"))):
        user = importlib.import_module(
            modules.write(modules.name("user"), f"from {lib} import probe\n")
        )
        assert user.probe() is True
    original = importlib.import_module(lib).probe
    assert user.probe is original and user.probe() is False


def test_circular_import_rebinds_the_alias(modules: Modules) -> None:
    a, b = modules.name("circ_a"), modules.name("circ_b")
    modules.write(a, PROBE + f"\nimport {b}\n")
    modules.write(b, f"from {a} import probe\n")
    with apply(modules.policy(eogb(f"{a}.probe"))):
        mod_a, mod_b = importlib.import_module(a), sys.modules[b]
        assert mod_b.probe is mod_a.probe and mod_b.probe() is True
    assert mod_b.probe is mod_a.probe and mod_b.probe() is False


@pytest.mark.parametrize("when", ["before_import", "after_import"])
def test_reexport_with_rules_on_both_names(modules: Modules, when: str) -> None:
    pkg = modules.name("pkg")
    modules.write(f"{pkg}.impl", PROBE)
    (modules.root / pkg / "__init__.py").write_text("from .impl import probe\n")
    policy = modules.policy(
        f"version: 1\ntargets:\n  {pkg}.impl.probe: {{error_on_graph_break: true}}\n"
        f"  {pkg}.probe: {{error_on_graph_break: false}}\n"
    )
    if when == "after_import":
        importlib.import_module(pkg)
    with warnings.catch_warnings():  # nor does undo warn of anything
        warnings.simplefilter("error")
        with apply(policy):
            mod = importlib.import_module(pkg)
            impl = sys.modules[f"{pkg}.impl"]
            # as by hand: impl.probe = eogb(True)(f); pkg.probe = eogb(False)(impl.probe)
            assert impl.probe() is True
            assert mod.probe() is True  # the inner (defining) wrapper is closer to the function
            assert mod.probe.__wrapped__ is impl.probe
    assert mod.probe is impl.probe and impl.probe() is False
    assert not hasattr(impl.probe, "__wrapped__")


# -- undo -----------------------------------------------------------------------------------


def test_undo_while_another_thread_imports_leaves_nothing_wrapped(modules: Modules) -> None:
    name = modules.name("racing")
    modules.write(name, PROBE + PAUSE)
    handle = apply(modules.policy(eogb(f"{name}.probe")))
    with imported_half_way(name) as done:
        handle.undo()  # the import is half way: its patching must not happen after this
    (mod,) = done
    assert mod.probe() is False
    assert not hasattr(mod.probe, "__wrapped__")


def test_an_alias_that_refuses_rebinding_is_said_not_hidden(modules: Modules) -> None:
    """A module type whose ``__setattr__`` refuses keeps the original under its alias: the
    calls through it are not under the policy, which a warning and the report say."""
    name = modules.write(modules.name("aliased"), "def fn():\n    return 1\n")
    mod = importlib.import_module(name)
    holder = importlib.import_module(modules.write(modules.name("holder"), HOSTILE))
    readonly = holder.ReadOnly(f"{name}_ro_holder")
    vars(readonly)["alias"] = mod.fn
    sys.modules[readonly.__name__] = readonly
    with pytest.warns(pc.PolicyWarning, match="refused to be rebound") as seen:
        handle = apply(modules.policy(eogb(f"{name}.fn")))
    with handle:
        assert vars(readonly)["alias"] is vars(mod.fn)["__wrapped__"]  # still the original
        (text,) = [str(w.message) for w in seen if "refused" in str(w.message)]
        assert text.startswith("1 alias(es) hold an original and refused to be rebound")
        assert f"{name}_ro_holder.alias (of {name}.fn: AttributeError: read-only module)" in text
        assert text in handle.report().warnings


def test_a_wrapper_that_cannot_be_taken_back_is_said_at_undo(modules: Modules) -> None:
    """A read-only module that took a wrapper after apply (``from mod import fn`` in a module
    imported later) keeps it after undo: a warning says so."""
    name = modules.write(modules.name("swept"), "def fn():\n    return 1\n")
    mod = importlib.import_module(name)
    holder = importlib.import_module(modules.write(modules.name("holder"), HOSTILE))
    readonly = holder.ReadOnly(f"{name}_ro_taker")
    sys.modules[readonly.__name__] = readonly
    handle = apply(modules.policy(eogb(f"{name}.fn")))
    vars(readonly)["alias"] = mod.fn  # taken under the policy
    with pytest.warns(pc.PolicyWarning, match="still holds the policy's wrapper") as seen:
        handle.undo()
    (text,) = [str(w.message) for w in seen if "still holds" in str(w.message)]
    assert text.startswith(f"{name}_ro_taker.alias still holds")
    assert "AttributeError: read-only module" in text
    assert vars(mod)["fn"] is not vars(readonly)["alias"]


def test_interrupted_undo_is_finished_by_a_second_undo(modules: Modules) -> None:
    name = modules.write(
        modules.name("interrupt"),
        PROBE
        + textwrap.dedent(
            """
            class Touchy(type):
                sets = 0
                def __setattr__(cls, attr, value):
                    Touchy.sets += 1
                    if Touchy.sets == 2:  # the first restore, in undo
                        raise KeyboardInterrupt
                    super().__setattr__(attr, value)

            class C(metaclass=Touchy):
                def meth(self):
                    return probe()

            def other():
                return probe()
            """
        ),
    )
    mod = importlib.import_module(name)
    originals = (mod.probe, vars(mod.C)["meth"], mod.other)
    handle = apply(modules.policy(eogb(f"{name}.**")))
    assert mod.C().meth() is True and mod.other() is True
    with pytest.raises(KeyboardInterrupt):
        handle.undo()
    handle.undo()
    assert (mod.probe, vars(mod.C)["meth"], mod.other) == originals
    assert mod.C().meth() is False
    handle.undo()  # and a third is harmless


# -- exact rules through aliases ------------------------------------------------------------

ALIASES = """
import torch._dynamo.utils

def _flag():
    return torch._dynamo.utils._error_on_graph_break

lam = lambda: _flag()

class _Impl:
    def forward(self):
        return _flag()

Public = _Impl

def make():
    class Made:
        def forward(self):
            return _flag()
    return Made

Made = make()
"""


@pytest.mark.parametrize(
    ("rule", "call"),
    [
        ("lam", lambda m: m.lam()),
        ("Public.forward", lambda m: m.Public().forward()),
        ("Public", lambda m: m.Public().forward()),
        ("Made.forward", lambda m: m.Made().forward()),
    ],
)
def test_exact_rules_through_aliases_patch(modules: Modules, rule: str, call: Any) -> None:
    name = modules.write(modules.name("aliases"), ALIASES)
    mod = importlib.import_module(name)
    assert call(mod) is False
    with apply(modules.policy(eogb(f"{name}.{rule}"))):
        assert call(mod) is True
    assert call(mod) is False


def test_exact_rule_through_an_imported_module_is_a_located_error(modules: Modules) -> None:
    name = modules.write(modules.name("np_alias"), "import textwrap as tw\n")
    importlib.import_module(name)
    policy = modules.policy(eogb(f"{name}.tw.dedent"))
    with pytest.raises(pc.PolicyTargetError) as info:
        apply(policy)
    assert info.value.line == 3
    assert "is the module textwrap" in str(info.value) and "textwrap.dedent" in str(info.value)


# -- what cannot be patched ------------------------------------------------------------------

HOSTILE = """
import types

class ReadOnly(types.ModuleType):
    def __setattr__(self, name, value):
        raise AttributeError("read-only module")

def make_readonly(name):
    mod = ReadOnly(name)
    exec("def fn():\\n    return 1\\n", vars(mod))
    vars(mod)["fn"].__module__ = name
    return mod

class Shifty:
    @property
    def __class__(self):
        raise RuntimeError("no class for you")

weird = Shifty()

def fine():
    return 1
"""


def test_patterns_skip_what_cannot_be_patched(modules: Modules) -> None:
    name = modules.write(modules.name("hostile"), HOSTILE)
    mod = importlib.import_module(name)
    ro_name = f"{name}_ro"
    sys.modules[ro_name] = mod.make_readonly(ro_name)
    nameless = types.ModuleType(f"{name}_nameless")
    del nameless.__name__
    sys.modules[f"{name}_nameless"] = nameless
    try:
        policy = modules.policy(
            f"version: 1\ntargets:\n  {name}*.**: {{error_on_graph_break: true}}\n"
        )
        with pytest.warns(pc.PolicyWarning, match="read-only module") as seen:
            handle = apply(policy)
        with handle:
            assert mod.fine is not None and hasattr(mod.fine, "__wrapped__")
        assert len([w for w in seen if "read-only module" in str(w.message)]) == 1
        exact = modules.policy(eogb(f"{ro_name}.fn"), "exact.yaml")
        with pytest.raises(pc.PolicyTargetError, match="read-only module") as info:
            apply(exact)
        assert info.value.line == 3
    finally:
        del sys.modules[ro_name], sys.modules[f"{name}_nameless"]


@pytest.mark.parametrize("pattern", ["torch.utils.**", "torch.fx.**", "torch.nn.**"])
def test_broad_torch_patterns_apply_and_undo_cleanly(modules: Modules, pattern: str) -> None:
    import torch.fx

    before = torch.fx.symbolic_trace
    policy = modules.policy(f"version: 1\ntargets:\n  {pattern}: {{error_on_graph_break: false}}\n")
    with apply(policy) as handle:
        assert len(handle.records) > 50
        traced = torch.fx.symbolic_trace(torch.nn.Linear(2, 2))  # torch still works
        assert isinstance(traced, torch.fx.GraphModule)
        compiled = torch.compile(torch.nn.Linear(2, 2), backend="eager")
        assert compiled(torch.ones(2)).shape == (2,)
    assert torch.fx.symbolic_trace is before


def test_torch_compile_machinery_is_never_wrapped(modules: Modules) -> None:
    # Dynamo's first compile in a process wraps torch.jit.trace_module and the optimizers'
    # methods in its own disable; let that happen before apply, whatever ran before this test
    torch.compile(lambda x: x + 1, backend="eager")(torch.ones(1))
    policy = modules.policy("version: 1\ntargets:\n  torch.**: {error_on_graph_break: false}\n")
    with pytest.warns(pc.PolicyWarning) as seen:
        handle = apply(policy)
    lines = [str(w.message) for w in seen]
    # one line each for what cannot take a wrapper: C types holding Python functions, and
    # functions of torch's config modules (which refuse unknown attributes)
    assert any(line.startswith("skipped torch.FloatTensor: a C type") for line in lines)
    assert any("torch._functorch.config" in line for line in lines)
    assert len(lines) == len(set(lines))
    with handle:
        wrapped = {r.plan.target.module for r in handle.records}
        assert "torch.nn.functional" in wrapped
        assert not [m for m in wrapped if m.startswith(("torch._dynamo", "torch._inductor"))]
        assert torch._dynamo.utils._error_on_graph_break is False
        f = torch.compile(lambda x: torch.nn.functional.relu(x) + 1, backend="eager")
        assert f(torch.ones(2)).tolist() == [2.0, 2.0]
    exact = modules.policy(eogb("torch._dynamo.utils.is_compile_supported"), "exact.yaml")
    with pytest.raises(pc.PolicyTargetError, match=r"part of torch\.compile itself"):
        apply(exact)
