"""Finding what a policy can patch in a module or class, by raw attribute, and classifying it."""

from __future__ import annotations

import enum
import itertools
import operator
import os
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


class Kind(enum.Enum):
    """How a callable is stored on its owner; the wrapper is stored back the same way."""

    FUNCTION = "function"  # module-level
    METHOD = "method"
    STATICMETHOD = "staticmethod"
    CLASSMETHOD = "classmethod"


@dataclass(slots=True)
class Target:
    """One patchable callable: where it is stored, and what it is. Never changed once made
    (not frozen: a frozen dataclass takes a microsecond more to make, and a policy makes one
    for each of thousands of definitions as a library is imported)."""

    name: str  # pkg.mod:Class.method, the name the policy resolves
    owner: Any  # the module or class whose __dict__ receives the wrapper
    attr: str
    raw: Any  # the value as stored in the defining owner's __dict__
    func: types.FunctionType  # the plain function underneath
    kind: Kind
    module: str  # the module's name as the policy sees it
    defined_in: Any = None  # the base class whose __dict__ holds ``raw``, when inherited
    is_forward: bool = False  # the forward of a torch.nn.Module subclass

    @property
    def display(self) -> str:
        """``pkg.mod.Class.method``: the name without the module boundary."""
        return self.name.replace(":", ".", 1)


def policy_module_name(module: Any) -> str | None:
    """The module's name for the policy, or None for an entry of ``sys.modules`` with no
    usable name.

    ``python -m pkg.app`` runs ``__main__`` as pkg.app, and ``python app.py`` (or
    ``policycompile run policy.yaml app.py``) runs it as ``app``: policies name the program's
    own functions as ``app.step`` either way, never ``__main__.step``; so do the children
    of multiprocessing, which re-run it as ``__mp_main__``.
    """
    try:
        name = vars(module).get("__name__")
    except TypeError:
        return None
    if not isinstance(name, str):
        return None
    if name in ("__main__", "__mp_main__"):  # the latter: multiprocessing children
        spec = vars(module).get("__spec__")
        spec_name = getattr(spec, "name", None) if spec is not None else None
        if isinstance(spec_name, str) and spec_name:
            return spec_name
        file = vars(module).get("__file__")
        if isinstance(file, str) and file.endswith(".py"):
            stem = os.path.splitext(os.path.basename(file))[0]
            if stem.isidentifier():
                return stem
    return name


def is_class(obj: Any) -> bool:
    """``isinstance(obj, type)`` without asking ``obj.__class__`` (which may raise)."""
    return issubclass(type(obj), type)


def is_module_class(cls: type) -> bool:
    """Whether ``cls`` subclasses torch.nn.Module (never imports torch to find out)."""
    nn = sys.modules.get("torch.nn")
    if nn is None or not is_class(cls):
        return False
    # a class's own metaclass is not asked: issubclass asks nn.Module's (type) for the MRO
    return issubclass(cls, nn.Module)


def unwrap(raw: Any) -> tuple[Kind, types.FunctionType] | None:
    """Kind and function of a class-dict or module-dict value, or None if not patchable."""
    kind = type(raw)
    if kind is staticmethod or kind is classmethod:
        func = raw.__func__
        if type(func) is types.FunctionType:
            return (Kind.STATICMETHOD if kind is staticmethod else Kind.CLASSMETHOD), func
        return None
    if kind is types.FunctionType:
        return Kind.METHOD, raw
    return None


def _own(obj: Any, attr: str) -> Any:
    """``obj.attr`` read from its own ``__dict__`` (classes and functions), or None."""
    try:
        return vars(obj).get(attr)
    except TypeError:
        return None


def module_targets(
    module: types.ModuleType,
    only: str | None = None,
    skipped: list[tuple[str, str]] | None = None,
    done: Callable[[Any, str], bool] | None = None,
    settled: Callable[[str, Any], bool] | None = None,
) -> list[Target]:
    """Functions the module defines, and the members of the classes it defines, recursively.

    Values are classified by ``type()``, never by attributes they may compute. (A list, not
    a generator: asked at every definition of a module imported under a policy.)

    :param only: look at this one attribute of the module.
    :param skipped: receives (name, why) for each class that cannot be patched (a C type),
        when given.
    :param done: ``done(function, name)`` says a function (the one under a static or class
        method) needs no Target: it already is what the caller would make of it (the pass
        after a module ran meets its definitions wrapped).
    :param settled: ``settled(attr, value)`` says the module attribute needs no look at all:
        its definition was patched as it was made, and nothing about it changed since.
    """
    out: list[Target] = []
    real = vars(module).get("__name__")
    name = policy_module_name(module)
    if name is None:
        return out
    namespace = vars(module)
    if only is not None:  # one definition: never a walk over the whole namespace
        items = [(only, namespace[only])] if only in namespace else []
    else:
        items = list(namespace.items())
    for attr, raw in items:
        if type(raw) is types.FunctionType:
            if raw.__module__ == real and raw.__qualname__ == attr:
                if settled is not None and settled(attr, raw):
                    continue
                full = f"{name}:{attr}"
                if done is None or not done(raw, full):
                    out.append(Target(full, module, attr, raw, raw, Kind.FUNCTION, name))
        elif is_class(raw) and _own(raw, "__module__") == real and raw.__qualname__ == attr:
            if settled is not None and settled(attr, raw):
                continue
            why = refuses_setattr(raw)
            if why is not None:
                # only worth a word when it holds Python functions a rule could mean
                if skipped is not None and any(unwrap(v) for v in vars(raw).values()):
                    skipped.append((f"{name}:{attr}", why))
                continue
            _class_targets(raw, name, attr, done, out)
    return out


def module_functions(module: types.ModuleType) -> Iterator[tuple[types.FunctionType, str]]:
    """(function, qualified name) of each function and method ``module`` defines: how
    reports name the frames of its code."""
    for target in module_targets(module):
        yield target.func, target.display


def refuses_setattr(cls: type) -> str | None:
    """Why ``setattr`` on ``cls`` cannot work, or None when it can."""
    if not cls.__flags__ & (1 << 9):  # Py_TPFLAGS_HEAPTYPE
        return "a C type, which refuses setattr"
    return None  # a metaclass may refuse too: patching tries, and reports what it refuses


def class_targets(
    cls: type,
    module: str,
    qualname: str | None = None,
    done: Callable[[Any, str], bool] | None = None,
) -> list[Target]:
    """The members stored in ``cls.__dict__`` (never ``getattr``, which binds), and nested
    classes; an ``nn.Module`` subclass without its own ``forward`` offers the inherited one.

    :param qualname: the path the policy reaches the class by, when not its ``__qualname__``
        (an alias such as ``Public = _Impl``, or a class made by a factory).
    :param done: as for :func:`module_targets`.
    """
    out: list[Target] = []
    _class_targets(cls, module, qualname or cls.__qualname__, done, out)
    return out


def _class_targets(
    cls: type,
    module: str,
    qual: str,
    done: Callable[[Any, str], bool] | None,
    out: list[Target],
) -> None:
    prefix = f"{module}:{qual}."
    module_class = is_module_class(cls)
    own = vars(cls)
    members = list(own.items())
    nested = _holds_classes(map(_VALUE, members))
    for attr, raw in members:
        kind = type(raw)
        if kind is types.FunctionType:  # most members: unwrap's answer, without a call
            how, func = Kind.METHOD, raw
        elif kind is staticmethod or kind is classmethod:
            found = unwrap(raw)
            if found is None:
                continue
            how, func = found
        else:  # (unwrap's answer too: nothing else is patchable)
            if nested and _nested(cls, attr, raw):
                _class_targets(raw, module, f"{qual}.{attr}", done, out)
            continue
        full = prefix + attr
        if done is not None and done(func, full):
            continue
        out.append(
            Target(
                full, cls, attr, raw, func, how, module, None, module_class and attr == "forward"
            )
        )
    if module_class and "forward" not in own:
        inherited = inherited_member(cls, "forward", module, qual)
        if inherited is not None:
            out.append(inherited)


def _nested(cls: type, attr: str, raw: Any) -> bool:
    """Whether ``cls.attr`` is a class defined in the body of ``cls``."""
    return is_class(raw) and raw.__qualname__ == f"{cls.__qualname__}.{attr}"


_TYPE = itertools.repeat(type)
_VALUE = operator.itemgetter(1)


def _holds_classes(values: Iterable[Any]) -> bool:
    """Whether any of ``values`` is a class, as :func:`is_class` tells, asked at C speed: most
    classes hold none, and their members need no look for nested classes."""
    return any(map(issubclass, map(type, values), _TYPE))


#: per class: (class, member names, members, qualname, MRO, qualnames of the classes it
#: holds, the forward it inherits): everything :func:`class_targets` reads of it
ClassState = tuple[tuple[Any, ...], ...]


def class_state(cls: type) -> ClassState:
    """What :func:`class_targets` reads of ``cls`` and of the classes defined in its body:
    :func:`same_state` tells whether any of it changed since (a member set or removed, a
    ``__qualname__`` or ``__bases__`` assigned, a base's ``forward`` replaced)."""
    own = vars(cls)
    values = tuple(own.values())
    nested = _holds_classes(values)
    held = tuple(v.__qualname__ for v in values if is_class(v)) if nested else ()
    state: ClassState = (
        (cls, tuple(own), values, cls.__qualname__, cls.__mro__, held, _inherited(cls, own)),
    )
    if nested:
        for attr, raw in own.items():
            if _nested(cls, attr, raw):
                state += class_state(raw)
    return state


def _inherited(cls: type, own: Any) -> Any:
    """The ``forward`` an ``nn.Module`` subclass without its own inherits (else None)."""
    if "forward" in own or not is_module_class(cls):
        return None
    base = _defining_base(cls, "forward")
    return None if base is None else vars(base)["forward"]


def same_state(state: ClassState) -> bool:
    """Whether every class of ``state`` is as it was: the very same members (by identity,
    never ``==``), names, MRO, held classes' qualnames and inherited ``forward``."""
    for cls, names, values, qualname, mro, held, inherited in state:
        own = vars(cls)
        if len(own) != len(names) or not all(map(operator.is_, own.values(), values)):
            return False
        if not all(map(operator.eq, own, names)):
            return False
        if cls.__qualname__ != qualname or cls.__mro__ is not mro:
            return False
        # (the same objects: a class among them now was one then, so none if none was)
        if held and tuple(v.__qualname__ for v in values if is_class(v)) != held:
            return False
        if _inherited(cls, own) is not inherited:
            return False
    return True


def inherited_member(
    cls: type, attr: str, module: str, qualname: str | None = None
) -> Target | None:
    """``attr`` as found along the MRO (not in ``cls`` itself), to be wrapped on ``cls`` only.

    A base's member that is a policy wrapper itself (the base was patched first) is seen
    through: the subclass gets its own wrapper of the original, as when the policy is applied
    once both classes exist, never a wrapper of a wrapper."""
    base = _defining_base(cls, attr)
    raw = None if base is None else _unwrapped_by_policy(vars(base)[attr])
    found = unwrap(raw)
    if base is None or found is None:
        return None
    kind, func = found
    return Target(
        f"{module}:{qualname or cls.__qualname__}.{attr}",
        cls,
        attr,
        raw,
        func,
        kind,
        module,
        defined_in=base,
        is_forward=attr == "forward" and is_module_class(cls),
    )


def still_inherited(target: Target) -> bool:
    """Whether the class that ``target``, an inherited member, was wrapped on inherits that
    very member still (the module may replace the base's member, or the bases, after the
    subclass was made)."""
    base = _defining_base(target.owner, target.attr)
    if base is None:
        return False
    return _unwrapped_by_policy(vars(base).get(target.attr)) is target.raw


def _unwrapped_by_policy(raw: Any) -> Any:
    """What a policy wrapper stored as ``raw`` was made for (the raw value of its target:
    every wrapper carries its plan as ``__policycompile__``); anything else as it is."""
    found = unwrap(raw)
    if found is None:
        return raw
    try:
        target = getattr(getattr(found[1], "__policycompile__", None), "target", None)
    except Exception:  # an object of the program's own under that name
        return raw
    return target.raw if isinstance(target, Target) else raw


def _defining_base(cls: type, attr: str) -> type | None:
    """The first base along the MRO of ``cls`` (not ``cls`` itself) whose ``__dict__`` holds
    ``attr``."""
    return next((base for base in cls.__mro__[1:] if attr in vars(base)), None)


def describe(obj: Any) -> str:
    """A few words on what ``obj`` is, for 'cannot be patched' messages."""
    if isinstance(obj, types.BuiltinFunctionType | types.BuiltinMethodType):
        return "a builtin function"
    if isinstance(obj, types.MethodDescriptorType | types.WrapperDescriptorType):
        return "a method of a C type"
    if isinstance(obj, types.GetSetDescriptorType | types.MemberDescriptorType | property):
        return "an attribute descriptor, not a function"
    if isinstance(obj, types.ModuleType):
        return "a module"
    if isinstance(obj, type):
        return "a class"
    return f"a {type(obj).__name__} object, not a function"


def policy_name_of(name: str, main: types.ModuleType | None = None) -> str:
    """A module's name as policies give it (``train``, not ``__main__``); ``main`` is the
    program's main module, once the runner has put the interpreter's back."""
    module = main if main is not None and name in ("__main__", "__mp_main__") else None
    module = module or sys.modules.get(name)
    return (policy_module_name(module) if module is not None else None) or name


#: Modules that implement torch.compile (and policycompile itself): wrapping their functions
#: would change how Dynamo traces and reads its own flags. Patterns never reach them, and an
#: exact rule naming something in them is an error.
INTERNAL = ("torch._dynamo", "torch._inductor", "torch.compiler", "torch._guards", "torch._logging")


def is_internal(module: str) -> bool:
    """Whether ``module`` is part of torch.compile's machinery (see INTERNAL) or of
    policycompile itself (its examples are ordinary code)."""
    known = _INTERNAL.get(module)
    if known is None:
        known = module == "policycompile" or module.startswith("policycompile._")
        known = known or any(module == m or module.startswith(m + ".") for m in INTERNAL)
        if len(_INTERNAL) < 1 << 16:
            _INTERNAL[module] = known
    return known


_INTERNAL: dict[str, bool] = {}  # module -> is_internal(module): asked at every definition


def wrapped_chain(obj: Any, limit: int = 16) -> Iterator[Any]:
    """What ``obj`` wraps, through ``__wrapped__``, innermost last (``functools.lru_cache``'s
    object over a policy wrapper over the function), at most ``limit`` deep."""
    for _ in range(limit):
        obj = getattr(obj, "__wrapped__", None)
        if obj is None:
            return
        yield obj
