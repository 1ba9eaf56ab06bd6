"""The import hook: later imports, packages, namespace packages, reload, threads, other hooks,
and the real start-up usage in a fresh process."""

from __future__ import annotations

import importlib
import importlib.machinery
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import policycompile as pc
from policycompile._engine.hook import ChainedLoader, PolicyFinder
from policycompile._engine.plan import patch_info

from ..conftest import python
from .conftest import Modules, apply

ROOT = Path(__file__).parent.parent.parent


def is_wrapped(obj: object) -> bool:
    return patch_info(obj) is not None


def test_packages_submodules_and_import_module(modules: Modules) -> None:
    pkg = modules.name("pkg")
    modules.write(f"{pkg}.models.llama", "def attn(x):\n    return x\ndef mlp(x):\n    return x\n")
    modules.write(f"{pkg}.utils", "def log(x):\n    return x\n")
    modules.write(f"{pkg}.__init__", "def top(x):\n    return x\n")
    policy = modules.policy(
        f"version: 1\ntargets:\n  {pkg}.models.**: {{error_on_graph_break: true}}\n"
        f"  {pkg}.top: {{disable: true}}\n"
    )
    with apply(policy) as handle:
        llama = importlib.import_module(f"{pkg}.models.llama")
        utils = importlib.import_module(f"{pkg}.utils")
        top = sys.modules[pkg]
        assert is_wrapped(llama.attn) and is_wrapped(llama.mlp)
        assert not is_wrapped(utils.log)
        assert is_wrapped(top.top)
        # the real loader is back on the module and its spec
        assert not isinstance(llama.__loader__, ChainedLoader)
        assert not isinstance(llama.__spec__.loader, ChainedLoader)
        assert len(handle.records) == 3


def test_boundary_pkg_vs_pkg_other(modules: Modules) -> None:
    pkg = modules.name("pkg")
    modules.write(pkg, "def f(x):\n    return x\n")
    modules.write(f"{pkg}_other", "def f(x):\n    return x\n")
    policy = modules.policy(f"version: 1\ntargets:\n  {pkg}.**: {{disable: true}}\n")
    with apply(policy) as handle:
        finder = handle.finder
        assert finder.covers(pkg) and not finder.covers(f"{pkg}_other")
        assert is_wrapped(importlib.import_module(pkg).f)
        assert not is_wrapped(importlib.import_module(f"{pkg}_other").f)


def test_namespace_package(modules: Modules) -> None:
    ns = modules.name("ns")
    (modules.root / ns / "sub").mkdir(parents=True)
    (modules.root / ns / "sub" / "mod.py").write_text("def f(x):\n    return x\n")
    importlib.invalidate_caches()
    policy = modules.policy(f"version: 1\ntargets:\n  {ns}.sub.mod.f: {{disable: true}}\n")
    with apply(policy):
        mod = importlib.import_module(f"{ns}.sub.mod")
        assert not hasattr(sys.modules[ns], "__file__") or sys.modules[ns].__file__ is None
        assert is_wrapped(mod.f)


def test_reload_repatches(modules: Modules) -> None:
    name = modules.write(modules.name("m"), "def f(x):\n    return x\n")
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.f: {{disable: true}}\n")
    with apply(policy) as handle:
        mod = importlib.import_module(name)
        first = mod.f
        importlib.reload(mod)
        assert is_wrapped(mod.f) and mod.f is not first
        assert len(handle.records) == 1  # the stale record of the old object is gone
    assert not is_wrapped(mod.f)


def test_two_threads_importing_at_once(modules: Modules) -> None:
    names = [
        modules.write(
            modules.name(f"t{i}"), "import time\ntime.sleep(0.05)\ndef f(x):\n    return x\n"
        )
        for i in range(6)
    ]
    body = "".join(f"  {n}.f: {{error_on_graph_break: true}}\n" for n in names)
    policy = modules.policy(f"version: 1\nstrict: false\ntargets:\n{body}")
    errors: list[BaseException] = []

    def work(order: list[str]) -> None:
        try:
            for n in order:
                importlib.import_module(n)
        except BaseException as exc:
            errors.append(exc)

    with apply(policy) as handle:
        threads = [threading.Thread(target=work, args=(o,)) for o in (names, names[::-1])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "deadlock"
        assert errors == []
        assert sorted(r.plan.target.module for r in handle.records) == sorted(names)
        for n in names:
            assert is_wrapped(sys.modules[n].f)
            assert patch_info(sys.modules[n].f).target.func.__module__ == n  # type: ignore[union-attr]


def test_finder_delegates_and_decides_purely() -> None:
    seen: list[str] = []
    finder = PolicyFinder(
        lambda name: name.startswith("json"), lambda m, fresh: seen.append(m.__name__)
    )
    assert finder.find_spec("not_covered_at_all", None) is None
    finder.install()
    try:
        sys.modules.pop("json.tool", None)
        importlib.import_module("json.tool")
        assert seen == ["json.tool"]
    finally:
        finder.uninstall()
        finder.uninstall()
    assert finder not in sys.meta_path


def test_undo_leaves_sys_meta_path_the_list_it_found(modules: Modules) -> None:
    """Code may hold ``sys.meta_path`` itself: after undo it is the same list object, holding
    what was inserted into it meanwhile (behind the policy's finder, while applied)."""
    name = modules.write(modules.name("mp"), "def f(x):\n    return x\n")
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.f: {{disable: true}}\n")
    before = sys.meta_path
    other = importlib.machinery.PathFinder()
    handle = apply(policy)
    sys.meta_path.insert(0, other)
    handle.undo()
    assert sys.meta_path is before
    assert other in before and not any(isinstance(f, PolicyFinder) for f in before)
    before.remove(other)


def test_under_pytest_assertion_rewriting(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        app="""
        import torch
        def step(x):
            x = x + 1
            torch._dynamo.graph_break()
            return x
        """,
        test_app="""
        import sys
        import policycompile, torch
        from policycompile._engine.plan import patch_info

        def test_rewritten_and_patched(tmp_path):
            p = tmp_path / "p.yaml"
            p.write_text("version: 1\\ntargets:\\n  test_helper.**: {disable: true}\\n"
                         "  app.step: {error_on_graph_break: true}\\n")
            with policycompile.apply(str(p)):
                import test_helper
                import app
                assert patch_info(test_helper.check) is not None
                # pytest rewrote the assert in test_helper: its message shows the values
                try:
                    test_helper.check(1)
                except AssertionError as e:
                    assert "1 == 2" in str(e)
                else:
                    raise RuntimeError("not rewritten")
                assert patch_info(app.step) is not None
        """,
        test_helper="""
        def check(x):
            assert x == 2
        """,
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def run_python(code: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return python(*args, *(["-c", code] if code else []), cwd=cwd, timeout=120)


APP = """
import torch

def helper(x):
    x = x + 1
    torch._dynamo.graph_break()
    return x + 2

def step(x):
    return helper(x) * 2

def main():
    try:
        torch.compile(step, backend="eager")(torch.ones(3))
    except Exception as e:
        print("ERROR", type(e).__name__)
    else:
        print("OK")
"""


def test_subprocess_apply_at_startup(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  app.helper: {error_on_graph_break: true}\n"
    )
    done = run_python(
        "import policycompile; policycompile.apply('p.yaml'); import app; app.main()", tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ERROR Unsupported"
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  app.helper: {error_on_graph_break: false}\n"
    )
    done = run_python(
        "import policycompile; policycompile.apply('p.yaml'); import app; app.main()", tmp_path
    )
    assert done.stdout.strip() == "OK", done.stderr


def test_python_dash_m(tmp_path: Path) -> None:
    pkg = tmp_path / "tool"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text(APP)
    (pkg / "__main__.py").write_text(
        textwrap.dedent(
            """
            import policycompile
            policycompile.apply("p.yaml")
            from tool import core
            core.main()
            """
        )
    )
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  tool.core.helper: {error_on_graph_break: true}\n"
    )
    done = run_python("", tmp_path, "-m", "tool")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ERROR Unsupported"


def test_main_module_run_with_dash_m_is_named_by_its_spec(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(
        APP
        + textwrap.dedent(
            """
            import policycompile
            handle = policycompile.apply("p.yaml")
            print("PATCHED", [r.plan.target.display for r in handle.records])
            main()
            """
        )
    )
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  script.helper: {error_on_graph_break: true}\n"
    )
    done = run_python("", tmp_path, "-m", "script")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["PATCHED ['script.helper']", "ERROR Unsupported"]


def test_bad_policy_at_startup_is_one_located_line(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  app.helper: {error_on_graph_brake: true}\n"
    )
    done = run_python("import policycompile; policycompile.apply('p.yaml')", tmp_path)
    assert done.returncode == 1
    assert "p.yaml:3:16: error: unknown key 'error_on_graph_brake'" in done.stderr
    assert "Traceback" in done.stderr  # a plain uncaught exception; its message is located
    assert isinstance(pc.PolicySchemaError("x"), ValueError)
