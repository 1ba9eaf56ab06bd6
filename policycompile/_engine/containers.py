"""Module-level containers that hold a function (``TASKS = {"work": work}``, ``HANDLERS =
[fn]``, ``P = functools.partial(fn)``), one level deep: what ``apply`` points at a wrapper in
modules imported before it, and what ``plan`` and the report name when it cannot
(docs/apply.md, "What a rule reaches")."""

from __future__ import annotations

import functools
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .targets import is_internal

#: the container types looked into (subclasses too: ``OrderedDict``, ``defaultdict``)
CONTAINERS = (dict, list, tuple, set, frozenset)


@dataclass(frozen=True)
class Held:
    """A place that holds an original: ``container[key]`` (or a set's element, ``key`` None),
    of module-level name ``name`` of ``module``; ``rebindable`` False for what cannot be
    changed in place (a tuple, a frozenset, a ``functools.partial``)."""

    module: types.ModuleType
    name: str
    container: Any
    key: Any
    value: Any
    rebindable: bool

    @property
    def where(self) -> str:
        owner = f"{vars(self.module).get('__name__')}.{self.name}"
        if isinstance(self.container, types.FunctionType):
            return f"the default {self.key}= of {owner}"
        if isinstance(self.container, functools.partial):
            return f"{owner} (a functools.partial)"
        if isinstance(self.container, set | frozenset):
            return f"{owner} (a {type(self.container).__name__})"
        return f"{owner}[{self.key!r}]"

    @property
    def slot(self) -> tuple[int, Any, int]:
        """The place and what it holds, whichever module's name reached the container:
        ``(id(container), key, id(value))``."""
        return id(self.container), self.key, id(self.value)


def items(module: types.ModuleType) -> list[tuple[str, Any]]:
    """A module's globals (a module whose ``__dict__`` cannot be listed has none)."""
    try:
        return list(vars(module).items())
    except TypeError:
        return []


def in_containers(modules: list[types.ModuleType], originals: Mapping[int, Any]) -> Iterator[Held]:
    """Every item of a module-level container (one level deep) that is one of ``originals``
    (by id), and every module-level ``functools.partial`` of one."""
    if not originals:
        return
    for module in modules:
        owner = vars(module).get("__name__") if isinstance(module, types.ModuleType) else None
        if not isinstance(owner, str) or owner == "sys" or is_internal(owner):
            continue  # torch.compile's own registries are never rewritten (nor sys.modules)
        for name, value in items(module):
            if name == "__builtins__" or name.startswith("__policycompile"):
                continue
            kind = type(value)  # never value.__class__, which a module object may compute
            if kind is types.FunctionType:
                if value.__defaults__ or value.__kwdefaults__:
                    yield from _defaults(module, name, value, originals)
                continue
            if issubclass(kind, functools.partial):
                if id(value.func) in originals:
                    yield Held(module, name, value, None, value.func, False)
                continue
            if not issubclass(kind, CONTAINERS):
                continue
            # read through the built-in type's own methods: a subclass's may run code (a
            # lazy mapping imports what it maps to when its items are asked for)
            base = next(t for t in CONTAINERS if issubclass(kind, t))
            values = list(dict.values(value) if base is dict else base.__iter__(value))
            if not any(map(originals.__contains__, map(id, values))):
                continue  # most containers (names, tables of strings): checked at C speed
            for key, item in _pairs(base, value):
                if id(item) in originals and item is originals[id(item)]:
                    yield Held(module, name, value, key, item, base in (dict, list, set))


#: reads of a dict that another thread keeps changing, before the last one may raise
_ATTEMPTS = 16


def _pairs(base: type[Any], value: Any) -> list[tuple[Any, Any]]:
    """(key, item) of a container, read through ``base``'s own methods, each key with its item
    from one read: keys and values read apart may pair a key with the item another thread
    moved there meanwhile.

    ``dict.items`` makes a tuple per item, which may start a garbage collection, during which
    another thread may change the dict; so a plain dict is copied first (``dict.copy``
    clones its table, as a rule without running any code) and its copy is read. A subclass
    (whose copy might call its own ``keys``) is read as it is. Either is read again while
    another thread's change makes the read fail."""
    if base is not dict:
        items = list(base.__iter__(value))  # (one read, with no object made per item)
        return list(enumerate(items)) if base in (list, tuple) else [(None, v) for v in items]
    plain = type(value) is dict

    def read() -> list[tuple[Any, Any]]:
        return list(dict.items(dict.copy(value) if plain else value))

    for _ in range(_ATTEMPTS - 1):
        try:
            return read()
        except RuntimeError:  # changed by another thread while it was read
            continue
    return read()


def _defaults(
    module: types.ModuleType, name: str, func: types.FunctionType, originals: Mapping[int, Any]
) -> Iterator[Held]:
    """A module-level function's default arguments that are one of ``originals`` (most
    functions have none: that is the fast path)."""
    given, by_name = func.__defaults__, func.__kwdefaults__
    if given:
        code = func.__code__
        first = code.co_argcount - len(given)
        for i, value in enumerate(given):
            if id(value) in originals and value is originals[id(value)] and first + i >= 0:
                yield Held(module, name, func, code.co_varnames[first + i], value, False)
    if by_name:
        for param, value in list(by_name.items()):
            if id(value) in originals and value is originals[id(value)]:
                yield Held(module, name, func, param, value, False)
