"""Definition-time placement (docs/apply.md, "Where the wrapper sits"): a module the policy
covers, imported after ``apply``, runs a copy of its code in which every module-level ``def``
and ``class`` statement carries one more decorator, innermost::

    @register("work")                      @register("work")
    def work(x): ...             ->        @__policycompile_define__("work")
                                           def work(x): ...

The decorator hands the new object to the policy, which wraps it where a hand-written
decorator in that place would, before the statement binds the name: a registry, a default
argument, a ``functools.partial``, a class body or an outer decorator that takes the
function while the module runs takes the wrapper. (A class is handed over as soon as it is
made: the policy wraps its methods in place.)

The rewrite does not depend on the policy (the decorator asks it at run time), so the
rewritten code is cached beside the module's own bytecode, keyed by the source's size and
modification time as Python keys its own (``__pycache__/NAME.TAG.policycompile-N.pyc``):
the cost of rewriting is paid once per version of the source.
"""

from __future__ import annotations

import _imp
import ast
import importlib.machinery
import importlib.util
import marshal
import os
import struct
import sys
import types
from collections.abc import Callable
from typing import Any

from . import cachefile
from .hook import ChainedLoader

#: the name the rewritten code calls; bound in the module's namespace while it executes
DEFINE = "__policycompile_define__"
#: bumped whenever the rewrite changes: older cached files are not read
VERSION = 4
_HEADER = struct.Struct("<4sIQQ")  # Python's magic, VERSION, source size, source mtime_ns

Definer = Callable[[str], Callable[[Any], Any]]


#: decorators that compile, trace or script the function from its code (``torch.compile``,
#: ``torch.compiler.disable``, ``torch.jit.script``, ``triton.jit``, numba's ``njit``,
#: ``torch.library.custom_op``...), by the last name of the decorator (or of what is called),
#: written bare (``@compile``) or under one of :data:`ROOTS` (``@torch.jit.script``, not
#: sentry's ``@sentry_sdk.trace``): a wrapper beneath them would hide the code they read, so
#: a definition carrying one is patched where its name holds the result, once the module ran
#: (docs/apply.md)
CONSUMERS = frozenset(
    {
        "compile",
        "disable",
        "optimize",
        "script",
        "trace",
        "jit",
        "njit",
        "autotune",
        "heuristics",
        "custom_op",
        "register_fake",
        "register_kernel",
        "triton_op",
    }
)
ROOTS = frozenset({"torch", "triton", "tl", "numba", "nb"})
#: decorators under which no wrapper goes at the definition: ``typing.overload`` stubs
#: (typing's registry of overloads keys them by their code, which a wrapper would share)
NEVER = frozenset({"overload"})


def _names(expr: ast.expr) -> list[str]:
    """``torch.jit.script`` -> ["torch", "jit", "script"]; a call's callee likewise."""
    if isinstance(expr, ast.Call):
        expr = expr.func
    names: list[str] = []
    while isinstance(expr, ast.Attribute):
        names.insert(0, expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        names.insert(0, expr.id)
    return names


def _consumes(decorator: ast.expr) -> bool:
    names = _names(decorator)
    if not names:
        return False
    last = names[-1]
    if last in NEVER:
        return True
    return last in CONSUMERS and (len(names) == 1 or names[0] in ROOTS)


class _Decorate(ast.NodeTransformer):
    """Adds the innermost decorator to each ``def`` and ``class`` the module's own top-level
    code runs (also inside ``if``, ``try``, ``with`` and loops at module level), never to
    what a function or class body defines, nor under a decorator in :data:`CONSUMERS` or
    :data:`NEVER`. A class under a decorator of its own is left to the pass after the module
    ran: the decorator may make another class (``@dataclass(slots=True)``, attrs), and undo
    must find the wrappers on the class the module holds."""

    def _decorate(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> Any:
        if any(_consumes(d) for d in node.decorator_list):
            return node
        if isinstance(node, ast.ClassDef) and node.decorator_list:
            return node
        at = node  # every new node at the statement's place (no fix_missing_locations pass)
        name = ast.copy_location(ast.Name(DEFINE, ast.Load()), at)
        call = ast.Call(name, [ast.copy_location(ast.Constant(node.name), at)], [])
        node.decorator_list.append(ast.copy_location(call, at))
        return node  # not visited further: nothing inside is module-level

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _decorate

    def visit_Lambda(self, node: ast.Lambda) -> Any:
        return node


def instrument(source: str | bytes, filename: str) -> types.CodeType:
    """The module's code, with the innermost decorator on its module-level definitions."""
    tree = _Decorate().visit(ast.parse(source, filename))
    return compile(tree, filename, "exec", dont_inherit=True)


def cache_path(source_path: str) -> str | None:
    """Where the rewritten code of ``source_path`` is cached (None: nowhere)."""
    try:
        pyc = importlib.util.cache_from_source(source_path)
    except (NotImplementedError, ValueError):
        return None
    return f"{pyc[: -len('.pyc')]}.policycompile-{VERSION}.pyc"


def _read_cached(path: str, size: int, mtime_ns: int) -> types.CodeType | None:
    found = cachefile.read(path, _HEADER.size)
    if found is None:
        return None
    header, body = found
    if _HEADER.unpack(header) != (importlib.util.MAGIC_NUMBER, VERSION, size, mtime_ns):
        return None
    try:
        code = marshal.loads(body)
    except Exception:  # whatever a damaged file makes marshal raise (SystemError too)
        return None
    return code if isinstance(code, types.CodeType) else None


def _write_cached(path: str, size: int, mtime_ns: int, code: types.CodeType) -> None:
    """Written aside and renamed into place (:func:`.cachefile.write`); where the folder
    cannot be written (a read-only install), nothing is cached."""
    header = _HEADER.pack(importlib.util.MAGIC_NUMBER, VERSION, size, mtime_ns)
    cachefile.write(path, header, marshal.dumps(code))


def code_for(source_path: str, read: Callable[[str], bytes]) -> types.CodeType:
    """The rewritten code of the module at ``source_path``, from the cache when it is there
    for this very source; ``read`` reads the source as the module's loader does."""
    st = os.stat(source_path)
    cached = cache_path(source_path)
    if cached is not None:
        code = _read_cached(cached, st.st_size, st.st_mtime_ns)
        if code is not None:
            # a project copied or moved keeps its times: the code names the file it is
            # read for, as Python's own loader makes it
            fix = getattr(_imp, "_fix_co_filename", None)
            if fix is not None:
                fix(code, source_path)
            return code
    code = instrument(read(source_path), source_path)
    if cached is not None and not sys.dont_write_bytecode:
        _write_cached(cached, st.st_size, st.st_mtime_ns, code)
    return code


def rewritable(loader: Any) -> bool:
    """Only Python's own loader of source files: any other (pytest's assertion rewriter,
    typeguard's, a zip file's) makes its own code, and the module is patched after it ran."""
    return type(loader) is importlib.machinery.SourceFileLoader


class DefiningLoader(ChainedLoader):
    """Runs the rewritten code of the module in its namespace, with ``definer(module)`` bound
    to :data:`DEFINE` while it executes, then calls the hook as :class:`ChainedLoader` does
    (what the module made otherwise, ``fn = make()``, is patched there)."""

    def __init__(
        self,
        loader: importlib.machinery.SourceFileLoader,
        hook: Callable[[types.ModuleType, list[types.ModuleType]], object],
        definer: Callable[[types.ModuleType], Definer],
    ) -> None:
        super().__init__(loader, hook)
        self.definer = definer

    def _execute(self, module: types.ModuleType) -> None:
        loader = self.loader
        code = code_for(loader.path, loader.get_data)
        namespace = vars(module)
        namespace[DEFINE] = self.definer(module)
        try:
            exec(code, namespace)
        finally:
            namespace.pop(DEFINE, None)
