"""Building wrappers in the contract's order (docs/apply.md, "Wrapping order"): tracing marks,
then torch.compile or disable, then config.patch, then set_stance, then error_on_graph_break
outermost, each keeping the function's identity and accepting exactly its calls."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
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
from .plan import PatchInfo, Plan
from .targets import (
    Kind,
)

_EOGB_TEMPLATE = """
def _pc_make(
    _pc_fn, _pc_ctx, _pc_flags, _pc_value, _pc_is_compiling, _pc_raised, _pc_seen{defaults}
):
    def wrapper({params}):
        if _pc_is_compiling():
            with _pc_ctx:
                return _pc_fn({args})
        _pc_prev = _pc_flags._error_on_graph_break
        if _pc_prev == _pc_value:
            try:
                return _pc_fn({args})
            except _pc_raised as _pc_exc:
                _pc_seen(_pc_exc)
                raise
        _pc_flags._error_on_graph_break = _pc_value
        try:
            return _pc_fn({args})
        except _pc_raised as _pc_exc:
            _pc_seen(_pc_exc)
            raise
        finally:
            _pc_flags._error_on_graph_break = _pc_prev
    return wrapper
"""


_GENERIC = ("*args, **kwargs", "*args, **kwargs", ())


_VARARGS, _VARKEYWORDS = inspect.CO_VARARGS, inspect.CO_VARKEYWORDS


_LABELS = itertools.count(1)


def _call_shape(func: types.FunctionType) -> tuple[str, str, tuple[Any, ...]]:
    """Parameters and call arguments that accept exactly the calls ``func`` accepts.

    A wrapper with the function's own parameters skips packing ``*args, **kwargs`` (about a
    third of the eager overhead). They are read from what the interpreter binds calls with,
    the code object and ``__defaults__``/``__kwdefaults__``, never from ``inspect.signature``:
    a ``__signature__`` attribute may describe other parameters, and a default that happens
    to be ``inspect.Parameter.empty`` is still a default. Defaults are passed in as the very
    same objects. Anything else gets the generic form, which lets ``func`` bind the call.
    """
    code = func.__code__
    names = code.co_varnames
    n_pos, n_posonly, n_kwonly = code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount
    star = names[n_pos + n_kwonly] if code.co_flags & _VARARGS else None
    index = n_pos + n_kwonly + (star is not None)
    starstar = names[index] if code.co_flags & _VARKEYWORDS else None
    every = [*names[: n_pos + n_kwonly], *filter(None, (star, starstar))]
    if any(n.startswith("_pc_") or not n.isidentifier() for n in every):
        return _GENERIC
    pos_defaults = func.__defaults__ or ()
    kw_defaults = func.__kwdefaults__ or {}
    if len(pos_defaults) > n_pos or not set(kw_defaults) <= set(names[n_pos : n_pos + n_kwonly]):
        return _GENERIC
    params: list[str] = []
    args: list[str] = []
    defaults: list[Any] = []
    first_default = n_pos - len(pos_defaults)
    for i, name in enumerate(names[:n_pos]):
        text = name
        if i >= first_default:
            text += f"=_pc_d{len(defaults)}"
            defaults.append(pos_defaults[i - first_default])
        params.append(text)
        args.append(name)
        if i == n_posonly - 1:
            params.append("/")
    if star is not None:
        params.append("*" + star)
        args.append("*" + star)
    elif n_kwonly:
        params.append("*")
    for name in names[n_pos : n_pos + n_kwonly]:
        text = name
        if name in kw_defaults:
            text += f"=_pc_d{len(defaults)}"
            defaults.append(kw_defaults[name])
        params.append(text)
        args.append(f"{name}={name}")
    if starstar is not None:
        params.append("**" + starstar)
        args.append("**" + starstar)
    return ", ".join(params), ", ".join(args), tuple(defaults)


@functools.lru_cache(maxsize=256)
def _eogb_factory(params: str, args: str, n_defaults: int) -> Callable[..., Any]:
    names = "".join(f", _pc_d{i}" for i in range(n_defaults))
    namespace: dict[str, Any] = {}
    source = _EOGB_TEMPLATE.format(defaults=names, params=params, args=args)
    exec(compile(source, "<policycompile error_on_graph_break wrapper>", "exec"), namespace)
    factory: Callable[..., Any] = namespace["_pc_make"]
    return factory


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
    *,
    filename: str = "<policycompile error_on_graph_break wrapper>",
    seen: Callable[[BaseException], None] = _ignore,
) -> Callable[..., Any]:
    """``torch._dynamo.error_on_graph_break(value)(fn)``, with a lean eager path.

    Under Dynamo, ``is_dynamo_compiling()`` folds to True and the wrapper traces exactly like
    the hand decorator (the same context manager around the call). Eagerly it sets the same
    process-global flag, without the context manager's object and list bookkeeping, and
    takes ``signature_of``'s own parameters instead of ``*args, **kwargs``. A graph break
    that Dynamo raises on its way out is shown to ``seen`` (the report), then re-raised.
    """
    import torch._dynamo

    ctx = torch._dynamo.error_on_graph_break(value)
    params, args, defaults = _call_shape(signature_of)
    factory = _eogb_factory(params, args, len(defaults))
    wrapper: Callable[..., Any] = factory(
        fn,
        ctx,
        _dynamo.flag_module(),
        value,
        _dynamo.is_dynamo_compiling(),
        _dynamo.graph_break_error(),
        seen,
        *defaults,
    )
    _relabel(wrapper, filename)
    return wrapper


def _trampoline(compiled: Callable[..., Any], filename: str) -> Callable[..., Any]:
    # A compiled function stored on a class breaks when a compiled caller reaches a graph
    # break inside it ("missing 1 required positional argument", docs/torch.md, "Kinds of
    # target"); a plain Python function in between avoids it.
    def trampoline(*args: Any, **kwargs: Any) -> Any:
        return compiled(*args, **kwargs)

    _relabel(trampoline, filename)
    return trampoline


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
    if plan.error_on_graph_break is not None:
        value = plan.error_on_graph_break and not audit
        filename = label(f"error_on_graph_break({plan.error_on_graph_break})", target.display)
        seen = observer.record_exception if observer is not None else _ignore
        inner = _eogb_wrapper(inner, value, func, filename=filename, seen=seen)
        inner = _keep_identity(inner, func)
        if observer is not None:
            observer.wrappers[filename] = plan
    inner.__policycompile__ = PatchInfo(target.name, plan)  # type: ignore[attr-defined]
    if target.kind is Kind.STATICMETHOD:
        return staticmethod(inner)
    if target.kind is Kind.CLASSMETHOD:
        return classmethod(inner)
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


def _keep_identity(wrapper: Callable[..., Any], func: Callable[..., Any]) -> Callable[..., Any]:
    """The wrapper takes the function's name, docstring and the rest, and its ``__dict__``
    as ``functools.wraps`` copies it (so that markers such as huggingface_hub's strict
    dataclass ``__is_defined_by_strict_decorator__`` are still found), but torch's marks.
    torch's own decorators copy no ``__dict__``: the one difference, on purpose
    (docs/apply.md, "Wrapping order")."""
    functools.update_wrapper(wrapper, func, updated=())
    own = getattr(func, "__dict__", None)
    if isinstance(own, dict):
        vars(wrapper).update((k, v) for k, v in own.items() if not k.startswith(_MARKS))
    wrapper.__wrapped__ = func  # type: ignore[attr-defined]
    return wrapper
