"""The import hook: a meta-path finder that chains the real loader and patches after exec, and
a watch on modules that are still executing."""

from __future__ import annotations

import _thread
import itertools
import sys
import types

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: start-up uses this
if TYPE_CHECKING:  # (nor collections: start-up watches for torch with this module)
    import importlib.machinery
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any


class ChainedLoader:
    """Runs the real loader's ``exec_module``, puts the real loader back on the module, then
    calls the hook. Everything else (``get_code`` for runpy, resources) goes to the real one."""

    def __init__(
        self, loader: Any, hook: Callable[[types.ModuleType, list[types.ModuleType]], object]
    ) -> None:
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
        last = next(reversed(sys.modules), None)
        depth = _DEPTH.__dict__.get("n", 0)
        _DEPTH.n = depth + 1
        try:
            self._execute(module)
        finally:
            _DEPTH.n = depth
        self.hook(module, _imported_since(last))

    def _execute(self, module: types.ModuleType) -> None:
        self.loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


_DEPTH = _thread._local()  # how many chained modules this thread is executing, nested


def nested() -> bool:
    """Whether the calling thread is inside the execution of a chained module (its hook
    is called once the outermost one ran)."""
    return bool(_DEPTH.__dict__.get("n", 0))


def _imported_since(last: str | None) -> list[types.ModuleType]:
    """The modules imported since ``last`` was the newest name of ``sys.modules``: the names
    after it (a dict keeps its order; an import adds its name at the end). Without ``last``
    any more, every module: more to look at, none missed. (Two sets of the thousands of
    names of ``sys.modules`` per import cost a tenth of the import of a model.)"""

    def newer(names: Iterable[str]) -> list[str]:
        return list(itertools.takewhile(lambda n: n != last, names))

    try:
        names = newer(reversed(sys.modules))
    except RuntimeError:  # another thread imported meanwhile: again, from a copy
        names = newer(reversed(list(sys.modules)))
    names.reverse()
    return [m for n in names if isinstance(m := sys.modules.get(n), types.ModuleType)]


class PolicyFinder:
    """Asks the finders behind it for the spec of a covered module and chains its loader.

    It must stay first: a finder inserted in front of it later (pytest's assertion rewriter,
    typeguard) would answer for covered modules itself. ``sys.meta_path`` stays the list it
    is (code may hold it), so the finder cannot refuse the place; instead every call checks
    its place, moves back to the front of that same list, and tells ``displaced`` so that
    what was imported meanwhile is patched (after it ran); the finders now behind it are
    still asked, in their order.

    :param covers: a pure, fast function of the module name: does the policy concern it?
    :param hook: called with each covered module right after it executed, and the modules
        imported while it executed.
    :param on_displaced: called after the finder moved back in front of another.
    :param loader_for: given the real loader of a covered module, the loader to run it with
        instead (definition-time placement, :mod:`.rewrite`), or None for the chained one.
    """

    def __init__(
        self,
        covers: Callable[[str], bool],
        hook: Callable[[types.ModuleType, list[types.ModuleType]], object],
        on_displaced: Callable[[], object] = lambda: None,
        loader_for: Callable[[Any], Any] | None = None,
    ) -> None:
        self.covers = covers
        self.hook = hook
        self.on_displaced = on_displaced
        self.loader_for = loader_for
        self._local = _thread._local()  # threading.local, without importing threading

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if self.displaced():
            self.install()
            self.on_displaced()
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
        loader = self.loader_for(spec.loader) if self.loader_for is not None else None
        if loader is not None:
            spec.loader = loader
            return spec
        # a loader by duck typing (importlib.abc costs start-up more than all the rest)
        spec.loader = ChainedLoader(spec.loader, self.hook)  # type: ignore[assignment]
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

    def displaced(self) -> bool:
        """Whether another finder stands in front of this one."""
        path = sys.meta_path
        return bool(path) and path[0] is not self and self in path

    def install(self) -> None:
        """Put the finder first on ``sys.meta_path`` (moving it there if it is already on),
        in the list itself: ``sys.meta_path`` is never replaced."""
        self.uninstall()
        sys.meta_path.insert(0, self)

    def uninstall(self) -> None:
        """Remove the finder; idempotent."""
        while self in sys.meta_path:
            sys.meta_path.remove(self)

    def invalidate_caches(self) -> None:
        pass


# -- modules still executing ----------------------------------------------------------------
#
# importlib marks a module's spec with ``_initializing = True`` while the module executes and
# sets it back to False in the importing thread right after, before the import returns to
# the importer. A module found half executed (another thread is importing it, or ``apply``
# was called from inside it) is watched by giving its spec a subclass whose
# ``_initializing`` setter calls back at that moment.

_WATCHING: dict[type, type] = {}
_CALLBACK = "_policycompile_when_executed"
_VALUE = "_policycompile_initializing"


def is_executing(module: types.ModuleType) -> bool:
    """Whether ``module`` is still executing its top-level code (being imported)."""
    spec = vars(module).get("__spec__")
    return spec is not None and getattr(spec, "_initializing", False) is True


def _watching_class(cls: type) -> type:
    sub = _WATCHING.get(cls)
    if sub is not None:
        return sub

    def get(spec: Any) -> Any:
        return vars(spec).get(_VALUE, False)

    def set_(spec: Any, value: Any) -> None:
        callback = vars(spec).get(_CALLBACK)
        _unwatch(spec, value)
        if not value and callback is not None:
            callback()

    sub = type(cls.__name__, (cls,), {"_initializing": property(get, set_)})
    sub.__qualname__ = cls.__qualname__
    sub.__module__ = cls.__module__
    _WATCHING[cls] = sub
    _WATCHING[sub] = sub
    return sub


def _unwatch(spec: Any, value: Any) -> None:
    cls = type(spec)
    if _WATCHING.get(cls) is cls:
        spec.__class__ = cls.__mro__[1]
    vars(spec).pop(_CALLBACK, None)
    vars(spec).pop(_VALUE, None)
    spec._initializing = value


def when_executed(module: types.ModuleType, callback: Callable[[types.ModuleType], object]) -> None:
    """Call ``callback(module)`` in the importing thread once ``module`` has executed."""
    spec = vars(module).get("__spec__")
    if spec is None:
        return
    value = vars(spec).pop("_initializing", True)
    vars(spec)[_VALUE] = value
    vars(spec)[_CALLBACK] = lambda: callback(module)
    spec.__class__ = _watching_class(type(spec))


def stop_watching(module: types.ModuleType) -> None:
    """Forget a watch set by :func:`when_executed` (the module keeps executing as it was)."""
    spec = vars(module).get("__spec__")
    if spec is not None and _CALLBACK in vars(spec):
        _unwatch(spec, vars(spec).get(_VALUE, False))
