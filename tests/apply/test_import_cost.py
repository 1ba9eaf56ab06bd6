"""What makes an import under a policy cheap must not change what it does (docs/apply.md,
"Where the wrapper sits"): the pass once a module ran skips a class its definition patched
only while the class is as the definition left it, and the wrappers' code kept on disk for
the next process is used only where it is the code that would have been made."""

from __future__ import annotations

import importlib
import json
import marshal
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from policycompile._engine import codes
from policycompile._engine.plan import patch_info
from policycompile._errors import PolicyWarning

from .conftest import Modules, apply

CHANGED = """
def make():
    def made(self, x):
        return x
    return made


class A:
    def m(self, x):
        return x

    class Inner:
        def m(self, x):
            return x


class B:
    def m(self, x):
        return x


class C:
    def m(self, x):
        return x


class D:
    class Inner:
        def m(self, x):
            return x


A.extra = make()  # a member added once the class was made
A.Inner.extra = make()  # ... to a nested class
D.Inner.extra = make()  # ... to a nested class only
B.m = make()  # a member replaced
del C.m  # a member removed, another put in its place: the same number of members
C.n = make()
"""


def test_classes_changed_after_their_definition_are_patched_once_the_module_ran(
    modules: Modules,
) -> None:
    """A class patched as its ``class`` statement made it, then changed by the module's
    later code, is looked at again once the module ran, as when it was patched then only."""
    name = modules.write(modules.name("changed"), CHANGED)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.**: {{error_on_graph_break: true}}\n")
    handle = apply(policy)
    try:
        module = importlib.import_module(name)
        expect = {
            (module.A, "m"): f"{name}:A.m",
            (module.A, "extra"): f"{name}:A.extra",
            (module.A.Inner, "m"): f"{name}:A.Inner.m",
            (module.A.Inner, "extra"): f"{name}:A.Inner.extra",
            (module.B, "m"): f"{name}:B.m",
            (module.C, "n"): f"{name}:C.n",
            (module.D.Inner, "extra"): f"{name}:D.Inner.extra",
        }
        for (owner, attr), target in expect.items():
            info = patch_info(vars(owner)[attr])
            assert info is not None and info.target.name == target, (owner, attr)
        assert vars(module.B)["m"].__wrapped__.__qualname__ == "make.<locals>.made"
    finally:
        with pytest.warns(PolicyWarning) as said:
            handle.undo()
    # what the module replaced itself is left as it is at undo, and said
    assert sorted(str(w.message).split()[0] for w in said) == [f"{name}.B.m", f"{name}.C.m"]


SHAPES = """
def plain(a, b):
    return (a, b)

def defaults(a, b=2, *rest, c, d=4, **more):
    return (a, b, rest, c, d, more)

def only(a, /, b, *, c):
    return (a, b, c)

class K:
    def m(self, x, y=1):
        return (x, y)
"""

PROBE = """
import importlib, json, sys
import policycompile
from policycompile._engine import codes
handle = policycompile.apply(sys.argv[1])
m = importlib.import_module(sys.argv[2])
calls = [m.plain(1, 2), m.defaults(1, c=3, e=5), m.only(1, b=2, c=3), m.K().m(1)]
print(json.dumps({"compiled": codes.shape_code.cache_info().misses,
                  "patched": len(handle.records), "calls": repr(calls),
                  "kept": codes.cache_path()}))
"""


def _probe(modules: Modules, name: str, policy: Path, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(policy), name],
        env=env,
        cwd=modules.root,
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def test_wrapper_codes_are_kept_for_the_next_process(modules: Modules, tmp_path: Path) -> None:
    """The first process compiles the wrappers' code and keeps it; the next compiles none and
    its wrappers take the same calls. Without bytecode written, nothing is kept."""
    name = modules.write(modules.name("shapes"), SHAPES)
    policy = modules.policy(f"version: 1\ntargets:\n  {name}.**: {{error_on_graph_break: true}}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"PYTHONPYCACHEPREFIX": str(tmp_path / "cache"), "PYTHONPATH": str(modules.root)}
    first = _probe(modules, name, policy, env)
    kept = first["kept"]
    assert isinstance(kept, str) and kept.startswith(str(tmp_path / "cache"))
    assert os.path.exists(kept) and first["compiled"] == 4 and first["patched"] == 4
    second = _probe(modules, name, policy, env)
    assert second["compiled"] == 0 and second["calls"] == first["calls"]
    os.unlink(kept)
    third = _probe(modules, name, policy, env | {"PYTHONDONTWRITEBYTECODE": "1"})
    assert third["compiled"] == 4 and not os.path.exists(kept)


def _samples() -> list[types.FunctionType]:
    namespace: dict[str, object] = {}
    exec(textwrap.dedent(SHAPES), namespace)
    k = namespace["K"]
    assert isinstance(k, type)
    found = [namespace[n] for n in ("plain", "defaults", "only")] + [vars(k)["m"]]
    return [f for f in found if isinstance(f, types.FunctionType)]


def test_wrapper_codes_read_from_a_foreign_or_damaged_file_are_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a file of this interpreter and template is read, and of it only the codes that
    take the parameters their key names; a file that cannot be read is no cache."""
    path = tmp_path / "codes.pyc"
    monkeypatch.setattr(codes, "cache_path", lambda: str(path))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    made = {}
    for func in _samples():
        shape, names = codes.call_shape(func)
        made[(*shape, names)] = codes.named_code(shape, names)
    cache = codes._Cache()
    cache.codes, cache.new = dict(made), len(made)
    cache.save()
    assert codes._read(str(path)) == made  # the round trip
    data = path.read_bytes()
    header, table = data[: codes._HEADER.size], marshal.loads(data[codes._HEADER.size :])
    keys = list(made)
    swapped = dict(table)
    swapped[keys[0]], swapped[keys[1]] = table[keys[1]], table[keys[0]]  # codes under wrong keys
    path.write_bytes(header + marshal.dumps(swapped))
    assert codes._read(str(path)) == {k: v for k, v in made.items() if k not in keys[:2]}
    magic, _ = codes._HEADER.unpack_from(header)
    for damaged in (
        codes._HEADER.pack(magic, codes._CHECKSUM + 1) + data[codes._HEADER.size :],
        b"\x00" * 3,
        header + b"\xff" * 8,
        header + marshal.dumps([1, 2]),
    ):
        path.write_bytes(damaged)
        assert codes._read(str(path)) == {}
    path.unlink()
    fresh = codes._Cache()
    fresh.load()  # no file: nothing, and no error
    assert fresh.loaded and fresh.codes == {}
