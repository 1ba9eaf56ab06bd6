"""The import hook: a meta-path finder that chains the real loader and patches after exec."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any


class ChainedLoader(importlib.abc.Loader):
    """Runs the real loader's ``exec_module``, puts the real loader back on the module, then
    calls the hook. Everything else (``get_code`` for runpy, resources) goes to the real one."""

    def __init__(self, loader: Any, hook: Callable[[types.ModuleType], object]) -> None:
        self.loader = loader
        self.hook = hook

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        create = getattr(self.loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__loader__ = self.loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self.loader
        self.loader.exec_module(module)
        self.hook(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class PolicyFinder(importlib.abc.MetaPathFinder):
    """Asks the finders behind it for the spec of a covered module and chains its loader.

    :param covers: a pure, fast function of the module name: does the policy concern it?
    :param hook: called with each covered module right after it executed.
    """

    def __init__(
        self, covers: Callable[[str], bool], hook: Callable[[types.ModuleType], object]
    ) -> None:
        self.covers = covers
        self.hook = hook
        self._local = threading.local()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not self.covers(fullname):
            return None
        busy: set[str] = self._local.__dict__.setdefault("busy", set())
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            spec = self._delegate(fullname, path, target)
        finally:
            busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # not found, a namespace package, or a legacy loader: nothing to chain
        spec.loader = ChainedLoader(spec.loader, self.hook)
        return spec

    def _delegate(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None
    ) -> importlib.machinery.ModuleSpec | None:
        finders = list(sys.meta_path)
        start = finders.index(self) + 1 if self in finders else 0
        for finder in finders[start:]:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                return spec  # type: ignore[no-any-return]
        return None

    def install(self) -> None:
        sys.meta_path.insert(0, self)

    def uninstall(self) -> None:
        """Remove the finder; idempotent."""
        while self in sys.meta_path:
            sys.meta_path.remove(self)

    def invalidate_caches(self) -> None:
        pass
