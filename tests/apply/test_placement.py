"""Definition-time placement around the edges (docs/apply.md, "Where the wrapper sits"):
threads importing while ``apply`` runs, undo that leaves nothing, wrappers that keep the
function's ``__dict__`` and pickle by reference, the cache of rewritten code, and module
shapes a hostile user would write."""

from __future__ import annotations

import importlib
import json
import os
import pickle
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from policycompile._engine import rewrite
from policycompile._engine.plan import patch_info

from ..conftest import python
from .conftest import BACKEND, Modules, Outcome, apply, outcome


def test_modules_imported_by_another_thread_during_apply_are_patched_exactly_once(
    modules: Modules,
) -> None:
    """The hook is installed before the sweep of ``sys.modules``: a module another thread
    imports meanwhile is patched by the one or the other, never by neither nor twice."""
    source = "import time\ntime.sleep(0.002)\n\n\ndef f(x):\n    return x\n"
    names = [modules.write(modules.name(f"t{i}"), source) for i in range(150)]
    rules = "\n".join(f"  {n}.f: {{disable: true}}" for n in names)
    policy = modules.policy(f"version: 1\ntargets:\n{rules}\n")
    started = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i, name in enumerate(names):
                importlib.import_module(name)
                if i == 3:
                    started.set()
        except BaseException as exc:
            errors.append(exc)
            started.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL back and forth as a loaded machine would
    try:
        thread = threading.Thread(target=work)
        thread.start()
        started.wait(30)
        with apply(policy) as handle:
            thread.join(60)
            assert not thread.is_alive() and errors == []
            unpatched = [n for n in names if patch_info(sys.modules[n].f) is None]
            twice = [n for n in names if patch_info(getattr(sys.modules[n].f, "__wrapped__", None))]
            assert (unpatched, twice) == ([], [])
            assert len(handle.records) == len(names)
    finally:
        sys.setswitchinterval(interval)


UNDONE = """
import functools
import torch


def plain(x):
    return x + 1


def nested(x):
    return x * 2


def allowed(x):
    return x - 1


class Model(torch.nn.Module):
    def forward(self, x):
        return nested(x)

    @staticmethod
    def helper(x):
        return plain(x)


TASKS = {"plain": plain}
HANDLERS = [nested, allowed]
KINDS = {plain}
"""


def _state(module: types.ModuleType) -> dict[str, Any]:
    """Everything the policy could touch, by identity: the module's globals, each function's
    and class's own attributes, and the items of its containers."""
    state: dict[str, Any] = {f"global {k}": v for k, v in vars(module).items()}
    for name, value in vars(module).items():
        if isinstance(value, types.FunctionType):
            state |= {f"{name}.{k}": v for k, v in vars(value).items()}
            state[f"{name}.__defaults__"] = value.__defaults__
        elif isinstance(value, type) and value.__module__ == module.__name__:
            state |= {f"{name}.{k}": v for k, v in vars(value).items()}
        elif isinstance(value, dict):
            state |= {f"{name}[{k!r}]": v for k, v in value.items()}
        elif isinstance(value, list | set):
            state |= {f"{name} item {id(v)}": v for v in value}
    return state


def test_undo_leaves_every_attribute_the_policy_touched_as_it_found_it(
    modules: Modules,
) -> None:
    name = modules.write(modules.name("undone"), UNDONE)
    module = importlib.import_module(name)
    policy = modules.policy(
        f"""
        version: 1
        targets:
          {name}.plain: {{error_on_graph_break: true}}
          {name}.nested: {{nested_compile_region: true}}
          {name}.allowed: {{allow_in_graph: true}}
          {name}.Model: {{compile: {{backend: {BACKEND}}}}}
          {name}.Model.helper: {{disable: true}}
        """
    )
    before = _state(module)
    meta_path, finders = sys.meta_path, list(sys.meta_path)
    with apply(policy) as handle:
        assert sys.meta_path is meta_path
        assert patch_info(module.TASKS["plain"]) is not None  # rebound while applied
        assert patch_info(module.HANDLERS[0]) is not None
        assert handle.records
    after = _state(module)
    gone = object()
    changed = sorted(
        k for k in before.keys() | after.keys() if before.get(k, gone) is not after.get(k, gone)
    )
    assert changed == []
    assert sys.meta_path is meta_path and sys.meta_path == finders


def test_a_module_imported_under_the_policy_gives_its_registries_the_original_at_undo(
    modules: Modules,
) -> None:
    name = modules.write(modules.name("later"), UNDONE)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.plain: {{disable: true}}\n")
    with apply(policy):
        module = importlib.import_module(name)
        wrapper = module.plain
        assert module.TASKS["plain"] is wrapper and patch_info(wrapper) is not None
    assert module.TASKS["plain"] is module.plain is wrapper.__wrapped__


def test_registries_filled_with_a_wrapper_after_the_import_get_the_original_at_undo(
    modules: Modules,
) -> None:
    """Undo looks at the containers of the modules imported under the policy as they are
    then: an item the program set to a wrapper after the import (a registry filled at run
    time, a list grown) gets the original too, and so does a dict that another name holds."""
    name = modules.write(modules.name("filled_later"), UNDONE)
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.plain: {{error_on_graph_break: true}}\n"
        f"  {name}.nested: {{error_on_graph_break: true}}\n"
    )
    with apply(policy):
        module = importlib.import_module(name)
        wrapper, nested = module.plain, module.nested
        module.TASKS["later"] = wrapper
        module.HANDLERS.append(wrapper)
        module.KINDS.add(nested)
        module.ALIAS = module.TASKS
    assert patch_info(wrapper) is not None and patch_info(nested) is not None
    assert {"plain": module.plain, "later": module.plain} == module.TASKS
    assert [module.nested, module.allowed, module.plain] == module.HANDLERS
    assert {module.plain, module.nested} == module.KINDS
    assert module.plain is wrapper.__wrapped__ and module.nested is nested.__wrapped__


def test_wrappers_keep_the_functions_dict_but_torchs_marks(modules: Modules) -> None:
    name = modules.write(
        modules.name("marked"),
        """
        def f(x):
            return x
        f.__is_defined_by_strict_decorator__ = True
        f.note = "kept"
        """,
    )
    module = importlib.import_module(name)
    original = module.f
    original._torchdynamo_inline = original  # a mark of torch's: never copied
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.f: {{error_on_graph_break: true}}\n")
    with apply(policy):
        assert module.f is not original
        assert module.f.__is_defined_by_strict_decorator__ is True and module.f.note == "kept"
        assert "_torchdynamo_inline" not in vars(module.f)
    assert module.f is original


def test_strict_dataclasses_of_transformers_under_a_broad_rule(tmp_path: Path) -> None:
    """huggingface_hub's strict dataclasses look for a marker in each validator's
    ``__dict__``: a wrapper without it made ``BertConfig()`` raise."""
    pytest.importorskip("transformers")
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  transformers.**: {error_on_graph_break: true}\n"
    )
    code = (
        "import policycompile\n"
        "handle = policycompile.apply('p.yaml')\n"
        "from transformers import BertConfig\n"
        "config = BertConfig(hidden_size=64)\n"
        "print('OK', config.hidden_size, len(handle.records) > 100)\n"
    )
    done = python("-c", code, cwd=tmp_path)
    assert done.stdout.strip().splitlines()[-1:] == ["OK 64 True"], done.stderr[-3000:]


FINGERPRINT = """
import json, sys, types, warnings

import torch, transformers

import policycompile

under = sys.argv[1] == "policy"
if under:
    handle = policycompile.apply("p.yaml")
from transformers.models.llama import modeling_llama  # noqa: E402
from transformers.models.mixtral import modeling_mixtral  # noqa: E402
from transformers.models.whisper import modeling_whisper, tokenization_whisper  # noqa: E402
if under:
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        handle.undo()
    assert not said, [str(w.message) for w in said]


def code(value):
    func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
    if type(func) is not types.FunctionType:
        return None
    inner = getattr(func, "__wrapped__", None)  # copy_func(f): f's code, f as __wrapped__
    inner = getattr(inner, "__func__", inner)  # (f, a method: copy_func(Base.from_config))
    copied = type(inner) is types.FunctionType and inner.__code__ is func.__code__
    c = func.__code__
    return [c.co_filename, c.co_firstlineno, c.co_name, copied]


seen = {}
for name, module in sorted(sys.modules.items()):
    if not name.startswith("transformers.") or not isinstance(module, types.ModuleType):
        continue
    for attr, value in list(vars(module).items()):
        seen[f"{name}.{attr}"] = code(value)
        if type(value) is dict:
            for key, item in list(value.items()):
                seen[f"{name}.{attr}[{key!r}]"] = code(item)
        if isinstance(value, type) and value.__module__ == name:
            for member, item in list(vars(value).items()):
                seen[f"{name}.{attr}.{member}"] = code(item)
print(json.dumps({k: v for k, v in seen.items() if v is not None}))
"""


def test_undo_after_importing_transformers_under_the_policy_leaves_the_plain_import(
    tmp_path: Path,
) -> None:
    """Applied before transformers is imported, then undone: every function its modules hold
    (globals, class attributes, dict items) is the one a plain import holds, and undo says
    nothing, though transformers rebinds its own names (a second ``def``, ``@contextmanager``,
    a decorator that keeps no ``__wrapped__``), shares registries between modules
    (``ROPE_INIT_FUNCTIONS``), and its ``Enum`` classes copy their base's members. Only copies
    the program made of a wrapper (``copy_func``) keep it, inert (the next test)."""
    pytest.importorskip("transformers")
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  transformers.**: {error_on_graph_break: true}\n"
    )
    (tmp_path / "fingerprint.py").write_text(FINGERPRINT)
    runs = {mode: python("fingerprint.py", mode, cwd=tmp_path) for mode in ("plain", "policy")}
    for done in runs.values():
        assert done.returncode == 0, done.stderr[-3000:]
    plain, undone = (json.loads(runs[m].stdout.splitlines()[-1]) for m in ("plain", "policy"))
    assert len(plain) > 3000
    differ = sorted(k for k in plain.keys() | undone.keys() if plain.get(k) != undone.get(k))
    copies = {k for k, v in plain.items() if v[3]}
    assert [k for k in differ if k not in copies] == []
    assert len(differ) < len(copies)


COPIED = """
import torch
from transformers.utils.doc import copy_func


def breaks(x):
    torch._dynamo.graph_break()
    return x + 1


COPY = copy_func(breaks)


def entry(x):
    return COPY(x) * 2
"""


def test_a_copy_the_program_made_of_a_wrapper_is_inert_after_undo(modules: Modules) -> None:
    """transformers' ``copy_func`` copies the function it is given, here the wrapper made at
    the definition: under the policy the copy acts as the hand-decorated source's does, and
    after undo, where it still is, as the plain source's."""
    pytest.importorskip("transformers")
    name = modules.write(modules.name("copied"), COPIED)
    hand = modules.write(
        modules.name("copied_hand"),
        COPIED.replace("def breaks", "@torch._dynamo.error_on_graph_break(True)\ndef breaks"),
    )
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.breaks: {{error_on_graph_break: true}}\n"
    )

    def run(entry: Any) -> Outcome:
        return outcome(lambda: torch.compile(entry, backend=BACKEND)(torch.ones(2)))

    with apply(policy):
        module = importlib.import_module(name)
        under = run(module.entry)
        assert under.same_as(run(importlib.import_module(hand).entry))
        assert under.error == "Unsupported"
    assert module.COPY.__wrapped__ is not module.breaks  # still the copy of the wrapper
    undone = run(module.entry)
    plain = run(importlib.import_module(modules.write(modules.name("copied_plain"), COPIED)).entry)
    # (the copy is still a frame between them: Dynamo may count one more frame resumed)
    assert (undone.error, undone.graphs) == (plain.error, plain.graphs)
    assert torch.equal(undone.value, plain.value)
    assert undone.error is None


PICKLED = """
import torch


def plain(x):
    return x + 1


TASKS = {"plain": plain}
"""


def test_a_wrapper_pickles_by_reference(modules: Modules) -> None:
    name = modules.write(modules.name("pickled"), PICKLED)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.plain: {{disable: true}}\n")
    with apply(policy):
        module = importlib.import_module(name)
        taken = pickle.dumps(module.TASKS["plain"])
        assert pickle.loads(taken) is module.plain and patch_info(module.plain) is not None
    assert pickle.loads(taken) is module.plain  # the original, now


SPAWNED = """
import multiprocessing as mp
import sys

import torch
from torch.utils.data import DataLoader

import work


def main():
    with mp.get_context("spawn").Pool(2) as pool:
        print("POOL", pool.map(work.TASKS["plain"], [1, 2, 3]))
    loader = DataLoader(
        list(range(4)),
        batch_size=2,
        num_workers=2,
        multiprocessing_context="spawn",
        worker_init_fn=work.init_worker,
    )
    print("LOADER", [batch.tolist() for batch in loader])


if __name__ == "__main__":
    main()
"""

WORK = """
import torch

from policycompile._engine.plan import patch_info


def plain(x):
    return (x + 1, patch_info(TASKS["plain"]) is not None)


TASKS = {"plain": plain}


def init_worker(worker_id):
    assert patch_info(init_worker_seen()) is not None


def init_worker_seen():
    import sys
    return sys.modules[__name__].init_worker
"""


def test_spawn_pool_and_dataloader_under_run(tmp_path: Path) -> None:
    """Under ``run``, the registry holds the wrapper, which a spawn child unpickles (it runs
    under the same policy) to its own wrapper; so does a DataLoader's ``worker_init_fn``."""
    (tmp_path / "work.py").write_text(WORK)
    (tmp_path / "main.py").write_text(SPAWNED)
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  work.plain: {disable: true}\n  work.init_worker: {disable: true}\n"
    )
    done = python("-m", "policycompile", "run", "p.yaml", "main.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "POOL [(2, True), (3, True), (4, True)]" in done.stdout
    assert "LOADER [[0, 1], [2, 3]]" in done.stdout
    plain = python("main.py", cwd=tmp_path)  # the same program without the policy
    assert "POOL [(2, False), (3, False), (4, False)]" in plain.stdout


def test_rewritten_code_is_cached_by_source_size_and_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "cached.py"
    source.write_text("def f(x):\n    return x\n")
    reads: list[str] = []

    def read(path: str) -> bytes:
        reads.append(path)
        return Path(path).read_bytes()

    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    first = rewrite.code_for(str(source), read)
    cache = rewrite.cache_path(str(source))
    assert (
        cache is not None
        and os.path.exists(cache)
        and cache.endswith(f".policycompile-{rewrite.VERSION}.pyc")
    )
    second = rewrite.code_for(str(source), read)
    assert reads == [str(source)] and second == first  # from the cache
    time.sleep(0.01)
    source.write_text("def f(x):\n    return x + 1\n")  # another source: rewritten again
    rewrite.code_for(str(source), read)
    assert reads == [str(source)] * 2
    Path(cache).write_bytes(b"garbage")  # a broken cache is ignored, never trusted
    assert rewrite.code_for(str(source), read).co_filename == str(source)


HOSTILE = """
import functools
import torch

try:
    from not_a_module_anywhere import g
except ImportError:
    def g(x):
        x = x + 1
        torch._dynamo.graph_break()
        return x

if True:
    @functools.lru_cache(maxsize=None)
    def cached(n):
        return n

    async def coro():
        return 1

def g2(x):
    return g(x)
g2 = g2  # rebinding itself

lam = lambda x: g(x)


@torch.jit.script
def scripted(x: torch.Tensor) -> torch.Tensor:
    return x + 1

class Outer:
    class Inner:
        def m(self, x):
            return g(x)
    def m(self, x):
        return g(x)
"""


def test_module_shapes_a_hostile_user_writes(modules: Modules) -> None:
    """Definitions inside ``try``/``if``, an outer ``lru_cache``, ``async def``, nested
    classes, lambdas: each governed as the hand decorator would be, the module's own names
    intact, nothing of the rewrite left in the namespace. A decorator that compiles the
    function from its code (``torch.jit.script``) gets the function itself, as before."""
    name = modules.write(modules.name("hostile"), HOSTILE)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.**: {{error_on_graph_break: true}}\n")
    with apply(policy):
        module = importlib.import_module(name)
        assert "__policycompile_define__" not in vars(module)
        assert isinstance(module.scripted, torch.jit.ScriptFunction)
        assert torch.equal(module.scripted(torch.ones(2)), torch.full((2,), 2.0))
        assert patch_info(module.g) is not None
        assert module.cached(3) == 3 and module.cached.cache_info().hits == 0
        assert patch_info(module.cached.__wrapped__) is not None  # inside lru_cache, as by hand
        assert patch_info(module.Outer.Inner.m) is not None and patch_info(module.Outer.m)
        for call in (lambda: module.lam(torch.ones(2)), lambda: module.Outer().m(torch.ones(2))):
            done = outcome(lambda call=call: torch.compile(call, backend=BACKEND)())
            assert done.error == "Unsupported"
