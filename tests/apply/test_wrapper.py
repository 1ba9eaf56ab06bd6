"""The error_on_graph_break wrapper forwards every kind of signature exactly."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from policycompile._patch import _call_shape, _eogb_wrapper, _keep_identity


def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    return _keep_identity(_eogb_wrapper(fn, True, fn), fn)


def plain(a, b):  # type: ignore[no-untyped-def]
    return (a, b)


def defaults(a, b=[], *, c=None):  # type: ignore[no-untyped-def]  # noqa: B006
    return (a, b, c)


def posonly(a, /, b, *, k):  # type: ignore[no-untyped-def]
    return (a, b, k)


def varargs(a, *rest, key=1, **extra):  # type: ignore[no-untyped-def]
    return (a, rest, key, extra)


def kwonly(*, x, y=2):  # type: ignore[no-untyped-def]
    return (x, y)


def clash(_pc_fn):  # type: ignore[no-untyped-def]
    return _pc_fn


CALLS: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = [
    (plain, (1, 2), {}),
    (plain, (1,), {"b": 2}),
    (plain, (), {"a": 1, "b": 2}),
    (defaults, (1,), {}),
    (defaults, (1, [2]), {"c": 3}),
    (posonly, (1, 2), {"k": 3}),
    (posonly, (1,), {"b": 2, "k": 3}),
    (varargs, (1, 2, 3), {"key": 4, "z": 5}),
    (varargs, (1,), {}),
    (kwonly, (), {"x": 1}),
    (clash, (7,), {}),
]


@pytest.mark.parametrize(("fn", "args", "kwargs"), CALLS)
def test_same_result_as_the_function(fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    assert wrap(fn)(*args, **kwargs) == fn(*args, **kwargs)


@pytest.mark.parametrize(
    ("fn", "args", "kwargs"),
    [(plain, (1,), {}), (posonly, (), {"a": 1, "b": 2, "k": 3}), (kwonly, (1,), {})],
)
def test_same_error_for_bad_calls(fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    with pytest.raises(TypeError):
        fn(*args, **kwargs)
    with pytest.raises(TypeError):
        wrap(fn)(*args, **kwargs)


def test_defaults_are_the_same_objects() -> None:
    assert wrap(defaults)(1)[1] is defaults(1)[1]


def test_signature_and_specialisation() -> None:
    for fn, _, _ in CALLS:
        assert inspect.signature(wrap(fn)) == inspect.signature(fn)
    assert _call_shape(plain)[0] == "a, b"
    assert _call_shape(posonly)[0] == "a, /, b, *, k"
    assert _call_shape(varargs)[0] == "a, *rest, key=_pc_d0, **extra"
    assert _call_shape(clash)[0] == "*args, **kwargs"  # a name of ours: the generic form
