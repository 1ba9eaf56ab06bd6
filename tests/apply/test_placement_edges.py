"""Definition-time placement against what a hostile review found (docs/apply.md, "Where the
wrapper sits"): containers filled by names patched once the module ran, decorators that look
up a name's previous definition, classes a decorator rebuilds, exact rules under
``lru_cache``, ``typing.overload``, a moved project's cache, a damaged cache file."""

from __future__ import annotations

import functools
import importlib
import marshal
import os
import random
import shutil
import sys
import typing
import warnings
from pathlib import Path

import pytest

from policycompile._engine import cachefile, rewrite
from policycompile._engine.plan import patch_info
from policycompile._errors import PolicyWarning

from .conftest import Modules, applied_around_import, apply

MADE = """
import functools


class tracer:  # a tracing library's decorator, named like torch's: still placed innermost
    @staticmethod
    def trace(fn):
        @functools.wraps(fn)
        def traced(*args, **kwargs):
            return fn(*args, **kwargs)
        return traced


def make():
    def fn(x):
        return x
    fn.__qualname__ = "fn"
    return fn


fn = make()
TASKS = {"fn": fn}
KERNELS = [fn]
HANDLERS = {}


@tracer.trace
def work(x):
    return x


HANDLERS["work"] = work
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_containers_hold_the_wrapper_of_a_name_patched_once_the_module_ran(
    modules: Modules, when: str
) -> None:
    name = modules.write(modules.name("made"), MADE)
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.fn: {{disable: true}}\n  {name}.work: {{disable: true}}\n"
    )
    warnings.simplefilter("error")  # undo says nothing: every slot is put back once
    with applied_around_import(policy, name, when) as (module, handle):
        assert patch_info(module.fn) is not None
        assert module.TASKS["fn"] is module.fn and module.KERNELS[0] is module.fn
        assert handle.unreached == []
        if when == "before":  # innermost: under the tracer's decorator
            assert patch_info(module.HANDLERS["work"].__wrapped__) is not None
    assert patch_info(module.TASKS["fn"]) is None and patch_info(module.KERNELS[0]) is None


HOMONYM = """
import inspect


class multi:
    # the registration of the multimethod package: a second definition of a name finds the
    # first through the caller's locals
    def __new__(cls, func):
        homonym = inspect.currentframe().f_back.f_locals.get(func.__name__)
        if isinstance(homonym, multi):
            homonym.impls[func.__annotations__["x"]] = func
            return homonym
        self = super().__new__(cls)
        self.impls = {func.__annotations__["x"]: func}
        return self

    def __call__(self, x):
        return self.impls[type(x)](x)


@multi
def area(x: int):
    return f"int {x}"


@multi
def area(x: str):
    return f"str {x}"
"""


def test_a_decorator_that_looks_up_the_previous_definition_finds_it(modules: Modules) -> None:
    name = modules.write(modules.name("homonym"), HOMONYM)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.**: {{disable: true}}\n")
    with apply(policy):
        module = importlib.import_module(name)
        assert module.area(3) == "int 3" and module.area("a") == "str a"
        assert sorted(t.__name__ for t in module.area.impls) == ["int", "str"]


REBUILT = """
import dataclasses


@dataclasses.dataclass(slots=True)
class Point:
    x: int

    def norm(self):
        return abs(self.x)
"""


def test_undo_finds_the_wrappers_on_a_class_its_decorator_rebuilt(modules: Modules) -> None:
    name = modules.write(modules.name("rebuilt"), REBUILT)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.Point.norm: {{disable: true}}\n")
    with apply(policy):
        module = importlib.import_module(name)
        assert patch_info(vars(module.Point)["norm"]) is not None
    assert patch_info(vars(module.Point)["norm"]) is None


CACHED = """
import functools


@functools.lru_cache(maxsize=None)
def table(n):
    return n * 2
"""


def test_an_exact_rule_on_a_function_under_lru_cache(modules: Modules) -> None:
    name = modules.write(modules.name("cached"), CACHED)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.table: {{disable: true}}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor a warning at undo: the wrapper stays, by design
        with apply(policy):
            module = importlib.import_module(name)
            assert module.table(2) == 4
            assert patch_info(module.table.__wrapped__) is not None


OVERLOADED = """
from typing import overload


@overload
def f(x: int) -> int: ...
@overload
def f(x: str) -> str: ...
def f(x):
    return x
"""


def test_overload_stubs_are_left_to_typing(modules: Modules) -> None:
    name = modules.write(modules.name("overloaded"), OVERLOADED)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.f: {{disable: true}}\n")
    with apply(policy):
        module = importlib.import_module(name)
        assert len(typing.get_overloads(module.f.__wrapped__)) == 2
        assert patch_info(module.f) is not None


def test_cached_code_names_the_file_it_is_read_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project copied or moved keeps its files' times: the cached code is the same, and
    names the new place, as Python's own loader makes it."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    (first / "mod.py").write_text("def f(x):\n    return x\n")
    rewrite.code_for(str(first / "mod.py"), lambda p: Path(p).read_bytes())
    shutil.copytree(first, second)  # times kept, the cache file too
    moved = second / "mod.py"

    def unread(path: str) -> bytes:
        raise AssertionError("read from the cache, not rewritten")

    code = rewrite.code_for(str(moved), unread)
    assert code.co_filename == str(moved)
    assert {c.co_filename for c in code.co_consts if hasattr(c, "co_filename")} == {str(moved)}


def test_a_damaged_cache_body_is_rewritten_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    source = tmp_path / "damaged.py"
    source.write_text("def f(x):\n    return x\n")
    rewrite.code_for(str(source), lambda p: Path(p).read_bytes())
    cache = rewrite.cache_path(str(source))
    assert cache is not None
    found = cachefile.read(cache, rewrite._HEADER.size)
    assert found is not None
    header, body = found
    generator = random.Random(1)
    for _ in range(100_000):  # a damage that makes marshal raise SystemError, not ValueError
        damaged = bytearray(body)
        for _ in range(2):
            damaged[generator.randrange(len(damaged))] = generator.randrange(256)
        try:
            marshal.loads(bytes(damaged))
        except SystemError:
            break
        except Exception:
            continue
    else:
        pytest.fail("no damage that makes marshal raise SystemError")
    for payload in (bytes(damaged), b"\xff" * 8):
        cachefile.write(cache, header, payload)  # its checksum right: marshal meets it
        code = rewrite.code_for(str(source), lambda p: Path(p).read_bytes())
        assert code.co_filename == str(source)
    cachefile.write(cache, header, body)
    flipped = bytearray(Path(cache).read_bytes())
    flipped[-1] ^= 0x01  # a damage marshal might load: the checksum stops it first
    Path(cache).write_bytes(bytes(flipped))
    assert rewrite._read_cached(cache, source.stat().st_size, source.stat().st_mtime_ns) is None
    os.unlink(cache)


@pytest.mark.parametrize(
    ("size", "rounds", "during_collections"), [(200_000, 30, False), (20_000, 5, True)]
)
def test_a_container_changed_by_another_thread_is_read_as_one_snapshot(
    size: int, rounds: int, during_collections: bool
) -> None:
    """The items of a module-level dict are paired with their keys as read at one moment: a
    thread reordering the dict meanwhile (whenever the interpreter switches threads, or
    during every garbage collection) never makes another key look like the holder, nor
    makes the read fail."""
    import gc
    import threading
    import time
    import types

    from policycompile._engine.containers import in_containers

    def fn() -> None:
        pass

    module = types.ModuleType("churned")
    table: dict[typing.Any, typing.Any] = {i: i for i in range(size)}
    table["fn"] = fn
    module.TABLE = table  # type: ignore[attr-defined]
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            key = next(iter(table))
            table[key] = table.pop(key)

    def switch(phase: str, info: dict[str, int]) -> None:
        time.sleep(0)  # a collection that runs Python code lets the other thread in

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    if during_collections:
        gc.callbacks.append(switch)
    try:
        found = [[h.key for h in in_containers([module], {id(fn): fn})] for _ in range(rounds)]
    finally:
        if during_collections:
            gc.callbacks.remove(switch)
        stop.set()
        thread.join()
    assert found == [["fn"]] * rounds


def test_a_registry_another_module_fills_gets_back_what_that_module_put_there(
    modules: Modules,
) -> None:
    """Two modules under the policy share one dict and one list: what the second one's own
    code stores there is put back at undo, not the first one's function."""
    first = modules.write(
        modules.name("shared"), "def fa(x):\n    return x\nREG = {'k': fa}\nLST = [fa]\n"
    )
    second = modules.write(
        modules.name("filler"),
        f"from {first} import REG, LST\n\ndef fb(x):\n    return -x\n\n"
        "REG['k'] = fb\nLST.insert(0, fb)\n",
    )
    policy = modules.policy(
        f"version: 1\ntargets:\n  {first}.**: {{error_on_graph_break: true}}\n"
        f"  {second}.**: {{error_on_graph_break: true}}\n"
    )
    with apply(policy):
        a, b = importlib.import_module(first), importlib.import_module(second)
        assert patch_info(a.REG["k"]) is not None and patch_info(a.LST[0]) is not None
    assert a.REG["k"] is b.fb
    assert a.LST[0] is b.fb and a.LST[1] is a.fa


def test_a_module_whose_import_failed_is_no_news_at_undo(modules: Modules) -> None:
    """Its second ``def`` replaced the first's wrapper as it ran: no warning at undo, as for
    a module that imported."""
    name = modules.write(
        modules.name("failing"),
        "def f(x):\n    return x\n\ndef f(x):\n    return 2 * x\n\nraise ImportError('no')\n",
    )
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.**: {{error_on_graph_break: true}}\n")
    handle = apply(policy)
    with pytest.raises(ImportError):
        importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handle.undo()


def test_a_static_method_set_to_another_targets_wrapper_gets_its_original_back(
    modules: Modules,
) -> None:
    helper = modules.write(modules.name("helper"), "def helper(x):\n    return x + 1\n")
    user = modules.write(
        modules.name("user"),
        f"from {helper} import helper\n\nclass K:\n    s = staticmethod(helper)\n    c = helper\n",
    )
    policy = modules.policy(
        f"version: 1\ntargets:\n  {helper}.**: {{error_on_graph_break: true}}\n"
        f"  {user}.**: {{error_on_graph_break: true}}\n"
    )
    with apply(policy):
        h, u = importlib.import_module(helper), importlib.import_module(user)
        assert patch_info(vars(u.K)["s"]) is not None
    assert type(vars(u.K)["s"]) is staticmethod and vars(u.K)["s"].__func__ is h.helper
    assert vars(u.K)["c"] is h.helper


METHODS = """
class A:
    @staticmethod
    def s(x):
        return x

    @classmethod
    def c(cls, x):
        return x


class B:
    s = A.s  # the function in A's static method
    s2 = A.__dict__["s"]  # the static method object itself
    c2 = A.__dict__["c"]
    t = staticmethod(A.s)


gs = A.s
REG = {"s": A.s}
"""


def test_static_and_class_method_wrappers_held_elsewhere_get_their_originals_back(
    modules: Modules,
) -> None:
    """What a module (and another module importing it) took of a static or class method's
    wrapper as it ran is, after undo, what a plain import holds there."""
    name = modules.write(modules.name("methods"), METHODS)
    user = modules.write(
        modules.name("methods_user"), f"from {name} import A\n\nns = A.s\nNREG = [A.s]\n"
    )
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.**: {{error_on_graph_break: true}}\n"
        f"  {user}.**: {{error_on_graph_break: true}}\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with apply(policy):
            m, u = importlib.import_module(name), importlib.import_module(user)
            assert patch_info(m.gs) is not None and patch_info(u.ns) is not None
    s, c = vars(m.A)["s"], vars(m.A)["c"]
    assert type(s) is staticmethod and patch_info(s) is None and patch_info(c) is None
    raw = s.__func__
    assert vars(m.B)["s"] is raw and vars(m.B)["s2"] is s and vars(m.B)["c2"] is c
    assert type(vars(m.B)["t"]) is staticmethod and vars(m.B)["t"].__func__ is raw
    assert m.gs is raw and m.REG["s"] is raw and u.ns is raw and u.NREG[0] is raw


ODD = """
import inspect
from collections import defaultdict


def f(x):
    return x


class Unwrapping(dict):  # its items read through __wrapped__
    def __getitem__(self, key):
        return inspect.unwrap(dict.__getitem__(self, key))


class Frozen(dict):  # refuses changes once frozen
    frozen = False

    def __setitem__(self, key, value):
        if self.frozen:
            raise RuntimeError("frozen")
        dict.__setitem__(self, key, value)


U = Unwrapping(f=f)
DD = defaultdict(lambda: None, {"f": f})
FROZEN = Frozen(f=f)
"""


def test_undo_reads_containers_as_it_found_them_and_goes_on_past_one_that_refuses(
    modules: Modules,
) -> None:
    """A dict subclass's ``__getitem__`` is not what undo reads (it may compute another item,
    or insert one); a container that refuses to be put back is said, and the rest is undone
    all the same, its wrappers inert."""
    name = modules.write(modules.name("odd"), ODD)
    module = importlib.import_module(name)
    original = module.f
    handle = apply(modules.policy(f"version: 1\ntargets:\n  {name}.f: {{disable: true}}\n"))
    assert dict.__getitem__(module.U, "f") is not original
    assert dict.__getitem__(module.FROZEN, "f") is not original
    del module.DD["f"]
    module.FROZEN.frozen = True
    with pytest.warns(PolicyWarning) as said:
        handle.undo()
    assert sorted(str(w.message).split()[0] for w in said) == [
        f"{name}.DD['f']",
        f"{name}.FROZEN['f']:",
    ]
    assert module.f is original and dict.__getitem__(module.U, "f") is original
    assert "f" not in module.DD
    handle.undo()  # done: nothing left in the journal
    assert not handle.records


def test_an_attribute_someone_wrapped_after_apply_is_said_at_undo(modules: Modules) -> None:
    """``m.f = functools.lru_cache(m.f)`` after apply is someone else's replacement, though
    the policy's wrapper is inside: undo says so (a decorator written over a definition is
    the module's own doing, and no news)."""
    name = modules.write(modules.name("later_cached"), "def f(x):\n    return x\n")
    module = importlib.import_module(name)
    handle = apply(modules.policy(f"version: 1\ntargets:\n  {name}.f: {{disable: true}}\n"))
    module.f = functools.lru_cache(module.f)
    with pytest.warns(PolicyWarning, match="no longer holds the policy's wrapper"):
        handle.undo()
