"""Finding what a policy can patch in a module or class, by raw attribute, and classifying it."""

from __future__ import annotations

import enum
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class Kind(enum.Enum):
    """How a callable is stored on its owner; the wrapper is stored back the same way."""

    FUNCTION = "function"  # module-level
    METHOD = "method"
    STATICMETHOD = "staticmethod"
    CLASSMETHOD = "classmethod"


@dataclass(frozen=True)
class Target:
    """One patchable callable: where it is stored, and what it is."""

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


def policy_module_name(module: types.ModuleType) -> str:
    """The module's name for the policy: ``python -m pkg.app`` runs ``__main__`` as pkg.app."""
    name = module.__name__
    if name == "__main__":
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name:
            return str(spec.name)
    return name


def is_module_class(cls: type) -> bool:
    """Whether ``cls`` subclasses torch.nn.Module (never imports torch to find out)."""
    nn = sys.modules.get("torch.nn")
    return nn is not None and isinstance(cls, type) and issubclass(cls, nn.Module)


def unwrap(raw: Any) -> tuple[Kind, types.FunctionType] | None:
    """Kind and function of a class-dict or module-dict value, or None if not patchable."""
    if isinstance(raw, staticmethod | classmethod):
        func = raw.__func__
        if isinstance(func, types.FunctionType):
            return (Kind.STATICMETHOD if isinstance(raw, staticmethod) else Kind.CLASSMETHOD), func
        return None
    if isinstance(raw, types.FunctionType):
        return Kind.METHOD, raw
    return None


def module_targets(module: types.ModuleType, only: str | None = None) -> Iterator[Target]:
    """Functions the module defines, and the members of the classes it defines, recursively.

    :param only: look at this one attribute of the module.
    """
    real = module.__name__
    name = policy_module_name(module)
    items = list(vars(module).items())
    if only is not None:
        items = [(k, v) for k, v in items if k == only]
    for attr, raw in items:
        if isinstance(raw, types.FunctionType):
            if raw.__module__ == real and raw.__qualname__ == attr:
                yield Target(f"{name}:{attr}", module, attr, raw, raw, Kind.FUNCTION, name)
        elif isinstance(raw, type) and raw.__module__ == real and raw.__qualname__ == attr:
            yield from class_targets(raw, name)


def class_targets(cls: type, module: str) -> Iterator[Target]:
    """The members stored in ``cls.__dict__`` (never ``getattr``, which binds), and nested
    classes; an ``nn.Module`` subclass without its own ``forward`` offers the inherited one."""
    prefix = f"{module}:{cls.__qualname__}"
    module_class = is_module_class(cls)
    own = vars(cls)
    for attr, raw in list(own.items()):
        if isinstance(raw, type) and raw.__qualname__ == f"{cls.__qualname__}.{attr}":
            yield from class_targets(raw, module)
            continue
        found = unwrap(raw)
        if found is None:
            continue
        kind, func = found
        yield Target(
            f"{prefix}.{attr}",
            cls,
            attr,
            raw,
            func,
            kind,
            module,
            is_forward=module_class and attr == "forward",
        )
    if module_class and "forward" not in own:
        inherited = inherited_member(cls, "forward", module)
        if inherited is not None:
            yield inherited


def inherited_member(cls: type, attr: str, module: str) -> Target | None:
    """``attr`` as found along the MRO (not in ``cls`` itself), to be wrapped on ``cls`` only."""
    for base in cls.__mro__[1:]:
        if attr in vars(base):
            found = unwrap(vars(base)[attr])
            if found is None:
                return None
            kind, func = found
            return Target(
                f"{module}:{cls.__qualname__}.{attr}",
                cls,
                attr,
                vars(base)[attr],
                func,
                kind,
                module,
                defined_in=base,
                is_forward=attr == "forward" and is_module_class(cls),
            )
    return None


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
