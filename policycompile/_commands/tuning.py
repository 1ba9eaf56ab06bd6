"""The child side of ``policycompile tune`` (docs/tune.md): a candidate runs as ``policycompile
run`` with ``POLICYCOMPILE_TUNE`` set, which times the calls of the outer compile entry and
keeps what its first call returned, for the parent to compare.

The timer wraps the entry outermost, where a call of it comes from eager code: it adds a
Python call per call of the entry, and nothing under Dynamo (``is_compiling()`` folds, as in
the policy's own wrappers), so it never changes what is compiled.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time
import types
from typing import Any

from .._engine.targets import is_class, policy_module_name
from .._runtime.handle import PolicyHandle

ENV = "POLICYCOMPILE_TUNE"


def ranks() -> tuple[int, int, int]:
    """(rank, world size, ranks on this node) of a torchrun job; (0, 1, 1) outside one."""

    def number(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, "") or default)
        except ValueError:
            return default

    world = number("WORLD_SIZE", 1)
    return number("RANK", 0), world, number("LOCAL_WORLD_SIZE", world)


class EntryTimer:
    """Times the calls of ``entry`` (a region name: ``pkg.mod.Model.forward``,
    ``pkg.mod.step``) and writes them, with the first call's tensors, to ``out`` at exit."""

    def __init__(self, entry: str, out: str) -> None:
        self.entry = entry
        self.out = out
        self.calls: list[float] = []
        self.first_done: float | None = None
        self.output: list[Any] | None = None
        self.wrapped = False

    def install(self, handle: PolicyHandle) -> None:
        handle.watchers.append(self.seen)
        atexit.register(self.save)
        for module in list(sys.modules.values()):  # imported before the policy was applied
            if isinstance(module, types.ModuleType):
                self.seen(module, None, None)

    def seen(self, module: types.ModuleType, name: str | None, obj: Any) -> Any:
        """A handle watcher: wrap the entry once its module or class is there."""
        if self.wrapped:
            return obj
        module_name = policy_module_name(module)
        if module_name is None or not self.entry.startswith(module_name + "."):
            return obj
        rest = self.entry[len(module_name) + 1 :].split(".")
        if name is not None:
            if rest[0] != name:
                return obj
            if len(rest) == 1 and isinstance(obj, types.FunctionType):
                self.wrapped = True
                return self._timed(obj)
            owner: Any = obj
            path = rest[1:]
        else:
            owner, path = module, rest
        for seg in path[:-1]:
            owner = vars(owner).get(seg)
            if owner is None or not (is_class(owner) or isinstance(owner, types.ModuleType)):
                return obj
        attr = path[-1] if path else None
        current = vars(owner).get(attr) if attr is not None else None
        if attr is not None and callable(current) and not isinstance(current, type):
            setattr(owner, attr, self._timed(current))
            self.wrapped = True
        return obj

    def _timed(self, fn: Any) -> Any:
        import torch

        compiling = torch.compiler.is_compiling

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if compiling():
                return fn(*args, **kwargs)
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            self.calls.append(time.perf_counter() - start)
            if self.first_done is None:
                self.first_done = time.time()
                self.output = _tensors(result)
            return result

        return timed

    def save(self) -> None:
        if ranks()[0] != 0:
            return  # rank 0 speaks for a torchrun job (every rank runs the same candidate)
        doc = {"entry": self.entry, "first_done": self.first_done, "calls": self.calls}
        with open(self.out, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        if self.output is not None:
            import torch

            torch.save(self.output, self.out + ".pt")


def _tensors(value: Any) -> list[Any]:
    """The tensors in what a call returned (tuples, lists, dicts, transformers' outputs)."""
    import torch
    import torch.utils._pytree as pytree

    if hasattr(value, "to_tuple"):  # a transformers ModelOutput
        value = value.to_tuple()
    return [
        leaf.detach().to("cpu", copy=True)
        for leaf in pytree.tree_leaves(value)
        if isinstance(leaf, torch.Tensor)
    ]


def install_from_env(handle: PolicyHandle) -> EntryTimer | None:
    """In a candidate run (the variable set by ``tune``), time its entry."""
    text = os.environ.pop(ENV, None)  # this process only: not its children
    if not text:
        return None
    doc = json.loads(text)
    timer = EntryTimer(str(doc["entry"]), str(doc["out"]))
    timer.install(handle)
    return timer
