"""What makes an import under a policy cheap must not change what it does (docs/apply.md,
"Where the wrapper sits"): the pass once a module ran skips a class its definition patched
only while the class is as the definition left it, and the wrappers' code kept on disk for
the next process is used only where it is the code that would have been made."""

from __future__ import annotations

import importlib
import inspect
import json
import marshal
import os
import subprocess
import sys
import textwrap
import threading
import types
import warnings
from pathlib import Path

import pytest

from policycompile._engine import cachefile, codes
from policycompile._engine.plan import patch_info

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
        with warnings.catch_warnings():  # what the module replaced itself is no news at undo
            warnings.simplefilter("error")
            handle.undo()
    assert vars(module.B)["m"].__qualname__ == "make.<locals>.made"
    assert patch_info(vars(module.B)["m"]) is None and "m" not in vars(module.C)


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
from policycompile._engine import cachefile, codes
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
    found = cachefile.read(str(path), codes._HEADER.size)
    assert found is not None
    header, table = found[0], marshal.loads(found[1])
    keys = list(made)
    swapped = dict(table)
    swapped[keys[0]], swapped[keys[1]] = table[keys[1]], table[keys[0]]  # codes under wrong keys
    cachefile.write(str(path), header, marshal.dumps(swapped))
    assert codes._read(str(path)) == {k: v for k, v in made.items() if k not in keys[:2]}
    first = made[keys[0]]  # plain(a, b)
    namespace: dict[str, object] = {}
    exec("def wrapper(a, b):\n    return (a, b)\n", namespace)
    unbound = namespace["wrapper"]
    assert isinstance(unbound, types.FunctionType)
    one = codes.Shape(1, 0, 0, False, False)
    ours = codes.renamed(codes.shape_code(one), {"_pc_a0": "_pc_x"})  # a name of the template's
    for key, code in (
        (keys[0], unbound.__code__),  # the right parameters, but no _pc_fn to call
        (keys[0], first.replace(co_flags=first.co_flags | inspect.CO_GENERATOR)),
        ((*one, ("_pc_x",)), ours),  # such a function gets the generic wrapper, never this
    ):
        cachefile.write(str(path), header, marshal.dumps({key: code}))
        assert codes._read(str(path)) == {}, code
    magic, _ = codes._HEADER.unpack(header)
    body = marshal.dumps(table)
    for damaged in (
        (codes._HEADER.pack(magic, codes._CHECKSUM + 1), body),  # another template
        (header, b"\xff" * 8),  # marshal cannot load it
        (header, marshal.dumps([1, 2])),  # not a table
    ):
        cachefile.write(str(path), *damaged)
        assert codes._read(str(path)) == {}
    cachefile.write(str(path), header, body)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01  # one bit of the body: its checksum no longer matches
    path.write_bytes(bytes(data))
    assert codes._read(str(path)) == {}
    path.write_bytes(b"\x00" * 3)
    assert codes._read(str(path)) == {}
    path.unlink()
    fresh = codes._Cache()
    fresh.load()  # no file: nothing, and no error
    assert fresh.loaded and fresh.codes == {}


OUTSIDE = """
import functools

import torch.nn as nn


class S9:  # __qualname__ set in the body, put right after the class
    __qualname__ = "NotS9"

    def m(self, x):
        return x


S9.__qualname__ = "S9"


def _make():
    class X:
        def m(self, x):
            return x

    return X


class S10:  # a class made elsewhere becomes a nested class by its qualname
    Inner = _make()


S10.Inner.__qualname__ = "S10.Inner"


class Plain:
    pass


class Sub3(Plain):  # becomes an nn.Module by its __bases__ after its class statement
    pass


class Mod3(nn.Module):
    def forward(self, x):
        return x


Sub3.__bases__ = (Mod3,)


class Base4(nn.Module):  # the base's forward is no plain function yet ...
    forward = functools.partialmethod(lambda self, x, y: x, y=0)


class Sub4(Base4):
    pass


def fwd4(self, x):
    return x


Base4.forward = fwd4  # ... and becomes one after the subclass exists


class DictMeta(type):
    @property
    def __dict__(cls):
        raise TypeError("no __dict__ here")


class S12(metaclass=DictMeta):
    def m(self, x):
        return x
"""

WRAPPED = """
import importlib, json, sys
import policycompile
from policycompile._engine.plan import patch_info
name, policy, when = sys.argv[1:]
if when == "before":
    policycompile.apply(policy)
module = importlib.import_module(name)
if when == "after":
    policycompile.apply(policy)
places = {"S9.m": module.S9, "S10.Inner.m": module.S10.Inner, "Sub3.forward": module.Sub3,
          "Sub4.forward": module.Sub4, "S12.m": module.S12}
found = {}
for where, owner in places.items():
    info = patch_info(type.__dict__["__dict__"].__get__(owner).get(where.rsplit(".", 1)[1]))
    found[where] = None if info is None else info.target.name
print(json.dumps(found))
"""


def test_changes_outside_a_class_dict_are_seen_once_the_module_ran(modules: Modules) -> None:
    """What the pass once a module ran reads of a class beyond its members (its qualname,
    its bases, a base's ``forward``) changed by the module's later code: the same wrappers
    as when the policy is applied after the import; a metaclass that refuses ``vars()`` is
    left alone in both."""
    name = modules.write(modules.name("outside"), OUTSIDE)
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.**: {{error_on_graph_break: true}}\n"
        f"  {name}.Sub3*: {{error_on_graph_break: true}}\n"
        f"  {name}.Sub4*: {{error_on_graph_break: true}}\n"
    )
    runs = {}
    for when in ("before", "after"):
        done = subprocess.run(
            [sys.executable, "-c", WRAPPED, name, str(policy), when],
            env=os.environ | {"PYTHONPATH": str(modules.root)},
            capture_output=True,
            text=True,
            check=True,
        )
        runs[when] = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {w: f"{name}:{w}" for w in ("S9.m", "S10.Inner.m", "Sub3.forward", "Sub4.forward")}
    assert runs["after"] == runs["before"] == expected | {"S12.m": None}


def test_a_cache_file_that_is_no_regular_file_is_no_cache(tmp_path: Path) -> None:
    """A FIFO, a device or a huge file where a cache file should be is passed over without
    blocking; a name planted where a cache file is written aside is never followed."""
    fifo = tmp_path / "fifo.pyc"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.pyc"
    with open(huge, "wb") as f:
        f.truncate(cachefile.LIMIT + 1)
    device = tmp_path / "zero.pyc"
    device.symlink_to("/dev/zero")
    results: list[object] = []
    reader = threading.Thread(
        target=lambda: results.extend(cachefile.read(str(p), 8) for p in (fifo, huge, device)),
        daemon=True,
    )
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive() and results == [None, None, None]
    target = tmp_path / "target.pyc"
    victim = tmp_path / "victim"
    victim.write_bytes(b"kept")
    planted = Path(f"{target}.{os.getpid()}-{threading.get_ident()}.tmp")
    planted.symlink_to(victim)
    cachefile.write(str(target), b"HEADER", b"body")
    assert victim.read_bytes() == b"kept" and not target.exists()
    planted.unlink()
    cachefile.write(str(target), b"HEADER", b"body")  # the name free again: written
    assert cachefile.read(str(target), 6) == (b"HEADER", b"body")
