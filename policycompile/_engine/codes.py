"""The code objects of ``error_on_graph_break`` wrappers (docs/apply.md, "Wrapping order"):
one compiled per shape of parameters, renamed per list of parameter names, and kept on disk
beside this module's own bytecode, so that a process importing a library under a policy
neither compiles nor renames again what an earlier one made.

The file is read once per process, when the first wrapper is made, and written (merged with
what it holds then) once an import under the policy is done; as Python's own bytecode it is
keyed by the interpreter's magic number, and by a checksum of the template; whatever it holds
that does not fit is ignored, and where it cannot be written (a read-only install,
``PYTHONDONTWRITEBYTECODE``), nothing is kept.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import marshal
import struct
import sys
import threading
import types
import zlib
from typing import Any, NamedTuple

from . import cachefile

TEMPLATE = """
def _pc_make(_pc_fn):
    def wrapper({params}):
        if _pc_undone:
            return _pc_fn({args})
        if _pc_is_compiling():
            with _pc_context(_pc_value):
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

_VARARGS, _VARKEYWORDS = inspect.CO_VARARGS, inspect.CO_VARKEYWORDS
_STARS = _VARARGS | _VARKEYWORDS


class Shape(NamedTuple):
    """How a function takes its parameters, without their names: one code object each."""

    positional: int
    positional_only: int
    keyword_only: int
    star: bool
    starstar: bool

    def placeholders(self) -> list[str]:
        """The template's parameter names, in the order of the code's ``co_varnames``."""
        names = [f"_pc_a{i}" for i in range(self.positional)]
        names += [f"_pc_k{i}" for i in range(self.keyword_only)]
        return names + ["_pc_v"] * self.star + ["_pc_w"] * self.starstar


GENERIC = (Shape(0, 0, 0, True, True), ("args", "kwargs"))


def call_shape(func: types.FunctionType) -> tuple[Shape, tuple[str, ...]]:
    """The shape and parameter names of a wrapper that accepts exactly the calls ``func``
    accepts.

    A wrapper with the function's own parameters skips packing ``*args, **kwargs`` (about a
    third of the eager overhead). They are read from what the interpreter binds calls with,
    the code object, never from ``inspect.signature``: a ``__signature__`` attribute may
    describe other parameters. Anything else (a parameter named like the wrapper's own
    ``_pc_`` names, defaults that do not fit) gets the generic form, which lets ``func`` bind
    the call.
    """
    params = _parameters(func.__code__)
    if not _defaults_fit(func, params) or not _plain(params[-1]):
        return GENERIC
    return Shape(*params[:-1]), params[-1]


def _parameters(code: types.CodeType) -> tuple[Any, ...]:
    """``(*Shape, names)`` of the parameters of ``code``: a key of :data:`_CACHE`."""
    n_pos, n_kwonly, flags = code.co_argcount, code.co_kwonlyargcount, code.co_flags
    star, starstar = flags & _VARARGS != 0, flags & _VARKEYWORDS != 0
    every = code.co_varnames[: n_pos + n_kwonly + star + starstar]
    return (n_pos, code.co_posonlyargcount, n_kwonly, star, starstar, every)


def _defaults_fit(func: types.FunctionType, params: tuple[Any, ...]) -> bool:
    """Whether the defaults of ``func`` are those its code's parameters can take (code and
    defaults may be set apart: ``func.__defaults__ = ...``)."""
    n_pos, n_kwonly, every = params[0], params[2], params[-1]
    if func.__defaults__ is not None and len(func.__defaults__) > n_pos:
        return False
    kw_defaults = func.__kwdefaults__
    return not kw_defaults or set(kw_defaults) <= set(every[n_pos : n_pos + n_kwonly])


def _plain(names: tuple[str, ...]) -> bool:
    """Whether parameters of these names can be the wrapper's own (identifiers, none of the
    template's ``_pc_`` names)."""
    return all(map(str.isidentifier, names)) and " _pc_" not in " " + " ".join(names)


def wrapper_code(func: types.FunctionType) -> tuple[types.CodeType, bool]:
    """The wrapper's code for ``func`` (:func:`call_shape`), and whether it is the generic
    one; asked for every function a policy wraps, so the code is looked up by the
    function's parameters, and only its defaults are checked each time."""
    params = _parameters(func.__code__)
    if (func.__defaults__ is not None or func.__kwdefaults__) and not _defaults_fit(func, params):
        return named_code(*GENERIC), True
    if not _CACHE.loaded:
        _CACHE.load()
    code = _CACHE.codes.get(params)  # kept only under plain names: the function's own
    if code is not None:
        return code, False
    shape, names = call_shape(func)
    return named_code(shape, names), names is GENERIC[1]


@functools.cache
def shape_code(shape: Shape) -> types.CodeType:
    """The wrapper's code for ``shape``, with placeholder names: compiled once per shape, its
    names replaced per function (``co_varnames``, and the keyword names of its calls)."""
    places = shape.placeholders()
    positional = places[: shape.positional]
    keyword = places[shape.positional : shape.positional + shape.keyword_only]
    params = list(positional)
    if shape.positional_only:
        params.insert(shape.positional_only, "/")
    args = list(positional)
    if shape.star:
        params.append("*_pc_v")
        args.append("*_pc_v")
    elif keyword:
        params.append("*")
    params += keyword
    args += [f"{k}={k}" for k in keyword]
    if shape.starstar:
        params.append("**_pc_w")
        args.append("**_pc_w")
    source = TEMPLATE.format(params=", ".join(params), args=", ".join(args))
    module = compile(source, "<policycompile error_on_graph_break wrapper>", "exec")
    (make,) = (c for c in module.co_consts if isinstance(c, types.CodeType))
    (code,) = (c for c in make.co_consts if isinstance(c, types.CodeType))
    return code


def named_code(shape: Shape, names: tuple[str, ...]) -> types.CodeType:
    """The wrapper's code for ``shape`` with these parameter names: made once, here or in an
    earlier process (``(self, hidden_states)`` recurs across a library)."""
    if not _CACHE.loaded:
        _CACHE.load()
    key = (*shape, names)
    code = _CACHE.codes.get(key)
    if code is None:
        code = renamed(shape_code(shape), dict(zip(shape.placeholders(), names, strict=True)))
        if len(_CACHE.codes) < _LIMIT:
            _CACHE.codes[key] = code
            _CACHE.new += 1
    return code


def renamed(code: types.CodeType, names: dict[str, str]) -> types.CodeType:
    """``code`` taking the function's own parameter names: in its locals, and where its call
    passes keywords (a tuple of names, or one name when it builds a ``**`` dict)."""

    def rename(const: Any) -> Any:
        if isinstance(const, str):
            return names.get(const, const)
        if isinstance(const, tuple) and const and all(isinstance(k, str) for k in const):
            return tuple(names.get(k, k) for k in const)
        return const

    consts = tuple(rename(c) for c in code.co_consts)
    varnames = tuple(names.get(n, n) for n in code.co_varnames)
    return code.replace(co_varnames=varnames, co_consts=consts)


# -- kept on disk ---------------------------------------------------------------------------

_LIMIT = 1 << 14  # codes kept, in memory and on disk
_HEADER = struct.Struct("<4sI")  # Python's magic number, the template's checksum
_CHECKSUM = zlib.crc32(TEMPLATE.encode())

Key = tuple[Any, ...]  # (*Shape, names): marshal keeps plain tuples only


def cache_path() -> str | None:
    """Where the codes are kept (None: nowhere), beside this module's bytecode."""
    try:
        pyc = importlib.util.cache_from_source(__file__)
    except (NotImplementedError, ValueError):
        return None
    return f"{pyc[: -len('.pyc')]}.policycompile-wrappers.pyc"


_UNFIT = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _fits(key: Any, code: Any) -> bool:
    """Whether a code read from disk is the wrapper's code for ``key``: a plain function of
    the template (its one free variable ``_pc_fn``), taking the parameters the key names."""
    if not (isinstance(key, tuple) and len(key) == 6 and isinstance(code, types.CodeType)):
        return False
    positional, positional_only, keyword_only, star, starstar, names = key
    if not all(type(n) is int and n >= 0 for n in (positional, positional_only, keyword_only)):
        return False
    if not (isinstance(names, tuple) and all(type(n) is str for n in names) and _plain(names)):
        return False
    stars = (_VARARGS if star else 0) | (_VARKEYWORDS if starstar else 0)
    return (
        code.co_name == "wrapper"
        and code.co_freevars == ("_pc_fn",)
        and not code.co_flags & _UNFIT
        and code.co_argcount == positional
        and code.co_posonlyargcount == positional_only
        and code.co_kwonlyargcount == keyword_only
        and code.co_flags & _STARS == stars
        and len(names) == positional + keyword_only + bool(star) + bool(starstar)
        and code.co_varnames[: len(names)] == names
    )


def _read(path: str) -> dict[Key, types.CodeType]:
    found = cachefile.read(path, _HEADER.size)
    if found is None:
        return {}
    header, body = found
    if _HEADER.unpack(header) != (importlib.util.MAGIC_NUMBER, _CHECKSUM):
        return {}
    try:
        table = marshal.loads(body)
    except Exception:  # whatever a damaged file makes marshal raise (SystemError too)
        return {}
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if _fits(k, v)}


class _Cache:
    """The named codes of this process, and how many it made that the file lacks."""

    def __init__(self) -> None:
        self.codes: dict[Key, types.CodeType] = {}
        self.loaded = False
        self.new = 0
        self.lock = threading.Lock()

    def load(self) -> None:
        path = cache_path()
        found = _read(path) if path is not None else {}
        with self.lock:
            if not self.loaded:
                self.loaded = True
                for key, code in found.items():
                    self.codes.setdefault(key, code)

    def save(self) -> None:
        """Write the codes made since the last save, merged with what the file holds now
        (another process may have written it meanwhile): aside, then renamed into place."""
        if not self.new or sys.dont_write_bytecode:
            return
        path = cache_path()
        if path is None:
            return
        with self.lock:
            self.new = 0
            table = dict(self.codes)  # made here, from the template: they win
            for key, code in _read(path).items():
                if len(table) >= _LIMIT:
                    break
                table.setdefault(key, code)
        header = _HEADER.pack(importlib.util.MAGIC_NUMBER, _CHECKSUM)
        cachefile.write(path, header, marshal.dumps(table))


_CACHE = _Cache()


def save() -> None:
    """Keep the codes this process made on disk, for the next (docs/apply.md)."""
    _CACHE.save()
