"""Building wrappers in the contract's order (docs/apply.md, "Wrapping order"): tracing marks,
then torch.compile or disable, then config.patch, then set_stance, then error_on_graph_break
outermost, each keeping the function's identity and accepting exactly its calls."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import itertools
import types
from collections.abc import Callable
from typing import Any

from .._observe.attribution import WRAPPER_FILE_PREFIX
from .._observe.observer import Observer
from .._observe.regions import ObservedBackend
from .._policy.keys import (
    ALLOW,
    CONSTANT,
    DONT_SKIP,
    NESTED,
    SECTION8_API,
)
from .._torch import dynamo as _dynamo
from .codes import wrapper_code
from .plan import Plan
from .targets import (
    Kind,
)

_LABELS = itertools.count(1)


_UNOBSERVED: dict[Any, dict[str, Any]] = {}


def _wrapper_globals(value: bool, observer: Observer | None) -> dict[str, Any]:
    """The globals of the wrappers that set ``value`` under ``observer``: what is the same
    for all of them is looked up once, not held in cells of each (fewer objects per wrapper,
    fewer garbage collections while a policy-covered module is imported)."""
    table = observer.wrapper_globals if observer is not None else _UNOBSERVED
    found = table.get(value)
    if found is None:
        import builtins

        import torch._dynamo

        found = table[value] = {
            "__builtins__": builtins,
            "_pc_is_compiling": _dynamo.is_dynamo_compiling(),
            "_pc_flags": _dynamo.flag_module(),
            "_pc_raised": _dynamo.graph_break_error(),
            "_pc_value": value,
            "_pc_context": torch._dynamo.error_on_graph_break,
            "_pc_seen": observer.record_exception if observer is not None else _ignore,
            "_pc_undone": False,
        }
    return found


def disarm(observer: Observer) -> None:
    """Every ``error_on_graph_break`` wrapper made under ``observer`` calls its function and
    does nothing else from now on: what undo cannot take back (a wrapper the program copied or
    gave to another decorator, a default argument) stays where it is, but inert."""
    for table in observer.wrapper_globals.values():
        table["_pc_undone"] = True


def _ignore(exc: BaseException) -> None:
    pass


def label(kind: str, name: str) -> str:
    """A file name for a wrapper's own code object, unique in the process.

    Frames of policy wrappers show it in tracebacks and in Dynamo's traced stacks, which is
    how a graph break is attributed to the wrapper (and so to the target and rule) it
    happened under, even where targets share one code object (``functools.wraps``).
    """
    return f"{WRAPPER_FILE_PREFIX}{kind} of {name} #{next(_LABELS)}>"


def _relabel(wrapper: Callable[..., Any], filename: str) -> None:
    wrapper.__code__ = wrapper.__code__.replace(co_filename=filename)


def _eogb_wrapper(
    fn: Callable[..., Any],
    value: bool,
    signature_of: types.FunctionType,
    filename: str = "<policycompile error_on_graph_break wrapper>",
    observer: Observer | None = None,
) -> Callable[..., Any]:
    """``torch._dynamo.error_on_graph_break(value)(fn)``, with a lean eager path.

    Under Dynamo, ``is_dynamo_compiling()`` folds to True and the wrapper traces like the
    hand decorator: the same context manager around the call, made where it is entered
    (``with torch._dynamo.error_on_graph_break(value):``, as written inline in a compiled
    function), so no wrapper holds one. One object shared by all would not do: Dynamo takes
    an object entered by two nested wrappers for a context exited twice ("multiple
    exits?"); one held by each wrapper is two more objects per wrapper. Eagerly it sets the same
    process-global flag, without the context manager's object and list bookkeeping, and
    takes ``signature_of``'s own parameters instead of ``*args, **kwargs``, with its
    defaults (the very same objects). A graph break that Dynamo raises on its way out is
    shown to ``observer`` (the report), then re-raised.
    """
    named, generic = wrapper_code(signature_of)
    code = named.replace(co_filename=filename)
    wrapper = types.FunctionType(
        code,
        _wrapper_globals(value, observer),
        code.co_name,
        None if generic else signature_of.__defaults__,
        (types.CellType(fn),),  # _pc_fn, its one free variable
    )
    if not generic and signature_of.__kwdefaults__:
        wrapper.__kwdefaults__ = dict(signature_of.__kwdefaults__)
    return wrapper


def _trampoline(compiled: Callable[..., Any], filename: str) -> Callable[..., Any]:
    # A compiled function stored on a class breaks when a compiled caller reaches a graph
    # break inside it ("missing 1 required positional argument", docs/torch.md, "Kinds of
    # target"); a plain Python function in between avoids it.
    def trampoline(*args: Any, **kwargs: Any) -> Any:
        return compiled(*args, **kwargs)

    _relabel(trampoline, filename)
    return trampoline


_EOGB_KIND = {value: f"error_on_graph_break({value})" for value in (True, False)}


def build(
    plan: Plan,
    observer: Observer | None = None,
    *,
    audit: bool = False,
) -> Any:
    """The new raw attribute for ``plan``: compile or disable innermost, then
    error_on_graph_break outermost, re-wrapped in the target's descriptor kind.

    :param observer: counts the graphs of compile entries (through the backend), learns
        which wrapper is which, and sees graph breaks raised through the wrappers.
    :param audit: relax what the policy forbids (fullgraph, error_on_graph_break=True) so
        that every break is recorded instead of raised.
    """
    target = plan.target
    func: types.FunctionType = target.func
    inner: Callable[..., Any] = func
    if (
        plan.marks
        or plan.compile is not None
        or plan.disable
        or plan.dynamo_config
        or plan.stance is not None
    ):
        inner = _inner_layers(plan, observer, audit)
    if plan.error_on_graph_break is not None:
        value = plan.error_on_graph_break and not audit
        filename = label(_EOGB_KIND[plan.error_on_graph_break], target.display)
        inner = _keep_identity(_eogb_wrapper(inner, value, func, filename, observer), func)
        if observer is not None:
            observer.wrappers[filename] = plan
    inner.__policycompile__ = plan  # type: ignore[attr-defined]
    if target.kind is Kind.STATICMETHOD:
        return staticmethod(inner)
    if target.kind is Kind.CLASSMETHOD:
        return classmethod(inner)
    return inner


def _inner_layers(plan: Plan, observer: Observer | None, audit: bool) -> Callable[..., Any]:
    """What :func:`build` puts inside ``error_on_graph_break``: the tracing marks, compile or
    disable, config.patch, set_stance (most plans have none: the wrapper alone is made
    without a look at torch's decorators)."""
    import torch

    target = plan.target
    func: types.FunctionType = target.func
    inner: Callable[..., Any] = func
    for mark in plan.marks:
        inner = _mark(mark, inner, func)
    if plan.compile is not None:
        options = dict(plan.compile)
        if audit and options.get("fullgraph"):
            options["fullgraph"] = False
        if observer is not None:
            real = _dynamo.make_backend(
                options.pop("backend", None),
                options.pop("mode", None),
                options.pop("options", None),
                options.get("dynamic"),
                options.pop("name", None),
            )
            region = observer.region(target.display, plan)
            options["backend"] = ObservedBackend(observer.on_graph, region, real)
        inner = torch.compile(inner, **options)
        if target.kind is not Kind.FUNCTION:
            filename = label("torch.compile", target.display)
            inner = _keep_identity(_trampoline(inner, filename), func)
            # torch.compile(C.m) keeps the function's attributes; so does its trampoline.
            vars(inner).update(
                (k, v) for k, v in vars(func).items() if not k.startswith("_torchdynamo")
            )
            if observer is not None:
                observer.entries[filename] = plan
    elif plan.disable:
        inner = torch.compiler.disable(  # type: ignore[no-untyped-call]
            inner, recursive=plan.disable_recursive
        )
    if plan.dynamo_config:
        inner = _keep_identity(torch._dynamo.config.patch(**plan.dynamo_config)(inner), func)
    if plan.stance is not None:
        inner = _keep_identity(torch.compiler.set_stance(plan.stance)(inner), func)
    return inner


def _mark(mark: str, fn: Callable[..., Any], func: types.FunctionType) -> Callable[..., Any]:
    """``fn`` with one of the tracing marks (docs/policy.md), as the hand decorator gives it.

    ``allow_in_graph`` and ``assume_constant_result`` mark the function they are given and
    return it, and ``nested_compile_region`` sets its ``__marked_compile_region_*``
    attributes on the function it wraps; given the program's own function, they mark a copy
    instead (same code, globals, defaults and attributes), which is what the policy stores,
    so that undo leaves the original unmarked.
    """
    if mark in (ALLOW, CONSTANT, NESTED) and fn is func:
        fn = _copy_function(func)
    module, name = SECTION8_API[mark]
    marked: Callable[..., Any] = getattr(importlib.import_module(module), name)(fn)
    # dont_skip_tracing returns a bare context-manager wrapper: give it the function's name
    return _keep_identity(marked, func) if mark == DONT_SKIP else marked


def _copy_function(func: types.FunctionType) -> types.FunctionType:
    copy = types.FunctionType(
        func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    copy.__kwdefaults__ = dict(func.__kwdefaults__) if func.__kwdefaults__ else None
    vars(copy).update(vars(func))
    functools.update_wrapper(copy, func, updated=())  # __wrapped__: the original, as wrappers
    return copy


#: attributes torch's decorators set on a function to mark it for Dynamo: never copied onto
#: a wrapper (Dynamo would skip or replace the wrapper itself), nor the policy's own
_MARKS = ("_torchdynamo", "_dynamo", "__marked_compile_region", "__policycompile__", "__wrapped__")


_FIRST_ASSIGNMENTS = ("__module__", "__name__", "__qualname__", "__doc__", "__annotations__")
_LATER_ASSIGNMENTS = tuple(a for a in functools.WRAPPER_ASSIGNMENTS if a not in _FIRST_ASSIGNMENTS)


def _keep_identity(wrapper: Callable[..., Any], func: Callable[..., Any]) -> Callable[..., Any]:
    """The wrapper takes the function's name, docstring and the rest, and its ``__dict__``
    as ``functools.wraps`` copies it (so that markers such as huggingface_hub's strict
    dataclass ``__is_defined_by_strict_decorator__`` are still found), but torch's marks.
    torch's own decorators copy no ``__dict__``: the one difference, on purpose
    (docs/apply.md, "Wrapping order")."""
    if type(wrapper) is types.FunctionType and type(func) is types.FunctionType:
        # what functools.update_wrapper assigns, as attribute stores (a function has them all)
        wrapper.__module__ = func.__module__
        wrapper.__name__ = func.__name__
        wrapper.__qualname__ = func.__qualname__
        wrapper.__doc__ = func.__doc__
        wrapper.__annotations__ = func.__annotations__
        for attr in _LATER_ASSIGNMENTS:  # __type_params__ (Python 3.12)
            setattr(wrapper, attr, getattr(func, attr))
    else:
        for attr in functools.WRAPPER_ASSIGNMENTS:
            try:
                value = getattr(func, attr)
            except AttributeError:
                continue
            setattr(wrapper, attr, value)
    own = getattr(func, "__dict__", None)
    if own and isinstance(own, dict):
        vars(wrapper).update((k, v) for k, v in own.items() if not k.startswith(_MARKS))
    wrapper.__wrapped__ = func  # type: ignore[attr-defined]
    return wrapper
