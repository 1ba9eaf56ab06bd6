"""The error_on_graph_break wrapper accepts exactly the calls its function accepts.

What a function accepts is decided by the interpreter binding the call, so that is what the
tests compare: each call is made to the function and to its wrapper under a trace function
that stops at the function's own ``call`` event, after binding and before its body runs, and
records what was bound (or the TypeError binding raised).
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from policycompile._engine.codes import call_shape, shape_code
from policycompile._engine.targets import module_targets
from policycompile._engine.wrappers import _eogb_wrapper, _keep_identity


def wrap(fn: types.FunctionType) -> Callable[..., Any]:
    return _keep_identity(_eogb_wrapper(fn, False, fn), fn)


class _Bound(Exception):
    def __init__(self, bound: dict[str, int]) -> None:
        self.bound = bound


_LAZY = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def binding(call: Callable[[], Any], code: types.CodeType) -> tuple[str, Any]:
    """("bound", {parameter: id(value)}) or ("TypeError", message) for ``call``, stopping at
    the moment ``code`` starts running."""
    names = code.co_varnames[
        : code.co_argcount
        + code.co_kwonlyargcount
        + bool(code.co_flags & inspect.CO_VARARGS)
        + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    ]
    if code.co_flags & _LAZY:
        # binding happens at the call, the body runs later: read the suspended frame
        try:
            lazy = call()
        except TypeError as exc:
            return ("TypeError", str(exc))
        frame = getattr(lazy, "gi_frame", None) or getattr(lazy, "cr_frame", None)
        frame = frame or lazy.ag_frame
        bound = {n: _ident(frame.f_locals[n]) for n in names}
        lazy.close()
        return ("bound", bound)

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is code:
            raise _Bound({n: _ident(frame.f_locals[n]) for n in names})
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        call()
    except _Bound as done:
        return ("bound", done.bound)
    except TypeError as exc:
        return ("TypeError", str(exc))
    finally:
        sys.settrace(previous)
    raise AssertionError("the function was never entered")


def _ident(value: Any) -> Any:
    # *args arrive as a new tuple, **kwargs as a new dict: compare what they hold
    if type(value) is tuple:
        return tuple(id(v) for v in value)
    if type(value) is dict:
        return {k: id(v) for k, v in value.items()}
    return id(value)


def calls(fn: types.FunctionType) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Calls to try: right and wrong numbers of positional arguments, each parameter by
    keyword, duplicates, unknown keywords, keyword-only arguments present and absent."""
    code = fn.__code__
    pos = code.co_varnames[: code.co_argcount]
    kwonly = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    values = [object() for _ in range(len(pos) + 3)]
    kw_values = {name: object() for name in (*pos, *kwonly, "zz_unknown")}
    for n in range(len(pos) + 3):
        args = tuple(values[:n])
        yield args, {}
        yield args, {name: kw_values[name] for name in kwonly}
        for name in (*pos, *kwonly, "zz_unknown"):
            yield args, {name: kw_values[name]}
    yield (), {name: kw_values[name] for name in (*pos, *kwonly)}
    for a, b in itertools.combinations(pos, 2):
        yield (), {a: kw_values[a], b: kw_values[b]}


def same_acceptance(fn: types.FunctionType) -> list[str]:
    """The calls on which ``fn`` and its wrapper bind differently (empty when equal)."""
    wrapper = wrap(fn)
    wrong = []
    for args, kwargs in calls(fn):
        expected = binding(lambda: fn(*args, **kwargs), fn.__code__)  # noqa: B023
        got = binding(lambda: wrapper(*args, **kwargs), fn.__code__)  # noqa: B023
        if expected[0] != got[0] or (expected[0] == "bound" and expected != got):
            wrong.append(f"{fn.__qualname__}(*{len(args)}, **{sorted(kwargs)}): {expected} {got}")
    return wrong


# -- odd signatures, written by hand ------------------------------------------------------


def plain(a, b):  # type: ignore[no-untyped-def]
    return (a, b)


def defaults(a, b=[], *, c=None):  # type: ignore[no-untyped-def]  # noqa: B006
    return (a, b, c)


def two(x, y):  # type: ignore[no-untyped-def]
    return (x, y)


def posonly(a, /, b, *, k):  # type: ignore[no-untyped-def]
    return (a, b, k)


def posonly_defaults(a, b=1, /, c=2, *rest, d, e=3, **extra):  # type: ignore[no-untyped-def]
    return (a, b, c, rest, d, e, extra)


def varargs(a, *rest, key=1, **extra):  # type: ignore[no-untyped-def]
    return (a, rest, key, extra)


def kwonly(*, x, y=2):  # type: ignore[no-untyped-def]
    return (x, y)


def clash(_pc_fn):  # type: ignore[no-untyped-def]
    return _pc_fn


def last(a, b=inspect.Parameter.empty):  # type: ignore[no-untyped-def]
    return (a, b)


def mid(a, b=None, c=inspect.Parameter.empty):  # type: ignore[no-untyped-def]
    return (a, b, c)


def liar(*a, **k):  # type: ignore[no-untyped-def]
    return (a, k)


liar.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("only", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
)

lam = lambda x, y=2: (x, y)  # noqa: E731

ODD = [
    plain,
    two,
    defaults,
    posonly,
    posonly_defaults,
    varargs,
    kwonly,
    clash,
    last,
    mid,
    liar,
    lam,
]


@pytest.mark.parametrize("fn", ODD, ids=lambda f: f.__name__)
def test_odd_signatures_accept_the_same_calls(fn: types.FunctionType) -> None:
    assert same_acceptance(fn) == []


@pytest.mark.parametrize("fn", ODD, ids=lambda f: f.__name__)
def test_odd_signatures_same_results_and_errors(fn: types.FunctionType) -> None:
    wrapper = wrap(fn)
    for args, kwargs in calls(fn):
        try:
            expected: Any = fn(*args, **kwargs)
        except TypeError as exc:
            expected = ("TypeError", str(exc))
        try:
            got: Any = wrapper(*args, **kwargs)
        except TypeError as exc:
            got = ("TypeError", str(exc))
        assert got == expected


def test_parameter_empty_is_a_default_like_any_other() -> None:
    assert wrap(last)(1) == (1, inspect.Parameter.empty)
    assert wrap(mid)(1) == (1, None, inspect.Parameter.empty)
    assert wrap(liar)(1, 2, z=3) == ((1, 2), {"z": 3})  # __signature__ says one parameter


def test_defaults_are_the_same_objects() -> None:
    assert wrap(defaults)(1)[1] is defaults(1)[1]


def test_signature_and_specialisation() -> None:
    for fn in ODD:
        if fn is liar or fn is clash:
            # liar's __signature__ describes other parameters than its code; clash uses a
            # name of ours, so its wrapper takes the generic *args, **kwargs
            continue
        own = inspect.signature(wrap(fn), follow_wrapped=False)
        assert own == inspect.signature(fn, follow_wrapped=False), fn

    def own(fn: types.FunctionType) -> str:
        return str(inspect.signature(wrap(fn), follow_wrapped=False))

    assert own(plain) == "(a, b)"
    assert own(posonly) == "(a, /, b, *, k)"
    assert own(varargs) == "(a, *rest, key=1, **extra)"
    assert own(clash) == "(*args, **kwargs)"  # a name of ours: the generic form
    # one code object per shape, whatever the names: (a, b) and (x, y) share it
    assert shape_code(call_shape(plain)[0]) is shape_code(call_shape(two)[0])


# -- every function of real libraries -----------------------------------------------------

LIBRARIES = [
    "torch.fx",
    "torch.nn.functional",
    "transformers.models.llama.modeling_llama",
    "transformers.models.gpt2.modeling_gpt2",
    "transformers.models.mistral.modeling_mistral",
    "transformers.modeling_utils",
]


def _functions(root: str) -> list[types.FunctionType]:
    if root.startswith("transformers"):
        pytest.importorskip("transformers")
    base = importlib.import_module(root)
    names = [root]
    if hasattr(base, "__path__"):
        names += sorted(n for n in list(sys.modules) if n.startswith(root + "."))
    seen: dict[int, types.FunctionType] = {}
    for name in names:
        module = sys.modules.get(name)
        if isinstance(module, types.ModuleType):
            for target in module_targets(module):
                seen.setdefault(id(target.func), target.func)
    return list(seen.values())


@pytest.mark.parametrize("root", LIBRARIES)
def test_every_function_of_a_library_accepts_the_same_calls(root: str) -> None:
    functions = _functions(root)
    assert len(functions) > 20, root
    wrong = [line for fn in functions for line in same_acceptance(fn)]
    assert wrong == []
