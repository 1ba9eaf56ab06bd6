"""Attribution: which function a traced frame is in (by qualified name), which patched target
a stack entered, and what ``error_on_graph_break`` the source says by hand at a line."""

from __future__ import annotations

import ast
import functools
import logging
import os
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .._policy.tree import RuleRef
from .._torch.logs import RESUME, Frame

#: an error_on_graph_break setting in force at a break: its value, the rule that set it (None
#: for one written by hand) and the function whose wrapper set it
InForce = tuple[bool, "RuleRef | None", "str | None"]

#: Every policy wrapper's code has a file name starting with this (see ``wrappers.label``).
WRAPPER_FILE_PREFIX = "<policycompile "


def outer_frames(frame: types.FrameType | None) -> list[types.FrameType]:
    """The Python frames from the outermost down to ``frame``."""
    out = []
    while frame is not None:
        out.append(frame)
        frame = frame.f_back
    out.reverse()
    return out


def eager_frames(frames: Iterable[types.FrameType]) -> list[Frame]:
    """The Python frames around a compile, outermost first: the program's and the policy's
    wrappers, without torch's own, policycompile's and logging's (a compiled region may call
    a wrapped function eagerly, which compiles again: its wrapper sits between Dynamo's
    frames)."""
    skip = internal_dirs()
    out = []
    for f in frames:
        file = f.f_code.co_filename
        if file.startswith(skip):
            continue
        out.append(Frame(file, f.f_lineno or 0, f.f_code.co_name))
    return out


#: policycompile's own folder (its frames are never the program's)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def internal_dirs() -> tuple[str, ...]:
    torch = sys.modules.get("torch")
    torch_dir = os.path.dirname(getattr(torch, "__file__", None) or "/nonexistent/")
    return (
        torch_dir + os.sep,
        _PACKAGE_DIR + os.sep,
        os.path.dirname(logging.__file__) + os.sep,
    )


@functools.cache
def stdlib_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The standard library's folders, and the package folders that may lie inside them
    (``lib/python3.11/site-packages`` outside a virtual environment): a frame in the first
    and not in the second is the standard library's, where no rule goes (``contextlib``)."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    std = {paths[k] for k in ("stdlib", "platstdlib") if paths.get(k)}
    packages = {paths[k] for k in ("purelib", "platlib") if paths.get(k)}
    packages |= {*site.getsitepackages(), site.getusersitepackages()}
    return (
        tuple(os.path.join(d, "") for d in sorted(std)),
        tuple(os.path.join(d, "") for d in sorted(packages)),
    )


def is_stdlib(file: str) -> bool:
    """Whether ``file`` is in the standard library (not an installed package)."""
    std, packages = stdlib_dirs()
    return file.startswith(std) and not file.startswith(packages)


@functools.cache
def examples_dir() -> str:
    """policycompile's bundled example programs: user code, although inside the package."""
    return os.path.join(_PACKAGE_DIR, "examples") + os.sep


def without_prefix(stack: list[Frame], eager: list[Frame]) -> list[Frame]:
    """``stack`` without the frames above Dynamo that its log message repeats from ``eager``."""
    keys = [(f.file, f.line, f.name) for f in eager]
    j = i = 0
    while i < len(stack):
        key = (stack[i].file, stack[i].line, stack[i].name)
        try:
            j = keys.index(key, j) + 1
        except ValueError:
            break
        i += 1
    return stack[i:]


def _chain(func: Any) -> Iterator[Any]:
    """``func`` and what it wraps (``__wrapped__``), as far as plain functions go."""
    seen: set[int] = set()
    while isinstance(func, types.FunctionType) and id(func) not in seen:
        seen.add(id(func))
        yield func
        func = vars(func).get("__wrapped__")


@dataclass(frozen=True)
class _Def:
    """A function in a source file, with the error_on_graph_break settings written in it."""

    name: str
    start: int
    end: int
    decorators: tuple[bool, ...]  # @error_on_graph_break(v), outermost first
    blocks: tuple[tuple[int, int, bool], ...]  # with error_on_graph_break(v): (first, last, v)


class HandWritten:
    """The ``error_on_graph_break`` settings written by hand in the source: decorators and
    ``with`` blocks with a literal value. Audit mode needs them to tell, as a normal run
    would, whether a break under the policy's setting is allowed by a hand-written one
    closer to it. Files are parsed once, on the first break in them; torch's are skipped.
    """

    def __init__(self) -> None:
        self._files: dict[str, list[_Def]] = {}

    def at(self, frame: Frame) -> list[bool]:
        """The hand-written settings in force at ``frame``'s line, outermost first."""
        defs = self._files.get(frame.file)
        if defs is None:
            defs = self._files[frame.file] = _parse_settings(frame.file)
        if not defs:
            return []
        name = frame.name
        resume = RESUME.match(name)
        if resume:
            name = resume["name"]
        best = None
        for d in defs:
            inside = d.start <= frame.line <= d.end and d.name == name
            if inside and (best is None or d.start >= best.start):
                best = d
        if best is None:
            return []
        blocks = [v for first, last, v in best.blocks if first <= frame.line <= last]
        return [*best.decorators, *blocks]


def _literal_setting(node: ast.expr) -> bool | None:
    """v for a call ``error_on_graph_break(v)`` (any prefix) with a literal bool."""
    if not isinstance(node, ast.Call) or len(node.args) != 1 or node.keywords:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    arg = node.args[0]
    if name == "error_on_graph_break" and isinstance(arg, ast.Constant):
        return arg.value if isinstance(arg.value, bool) else None
    return None


def _parse_settings(file: str) -> list[_Def]:
    if file.startswith(("<", *internal_dirs())):
        return []
    try:
        with open(file, "rb") as f:
            source = f.read()
        if b"error_on_graph_break" not in source:
            return []
        tree = ast.parse(source, file)
    except (OSError, SyntaxError, ValueError):
        return []
    out: list[_Def] = []

    def visit(node: ast.AST, name: str, start: int, end: int, decorators: tuple[bool, ...]) -> None:
        blocks: list[tuple[int, int, bool]] = []
        todo = list(ast.iter_child_nodes(node))
        while todo:
            child = todo.pop()
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found = (_literal_setting(d) for d in child.decorator_list)
                decs = tuple(v for v in found if v is not None)
                visit(child, child.name, child.lineno, child.end_lineno or child.lineno, decs)
                continue
            if isinstance(child, ast.Lambda | ast.ClassDef):
                if isinstance(child, ast.ClassDef):
                    todo.extend(child.body)
                continue
            if isinstance(child, ast.With | ast.AsyncWith):
                for item in child.items:
                    value = _literal_setting(item.context_expr)
                    if value is not None:
                        blocks.append((child.lineno, child.end_lineno or child.lineno, value))
            todo.extend(ast.iter_child_nodes(child))
        blocks.sort()
        out.append(_Def(name, start, end, decorators, tuple(blocks)))

    visit(tree, "<module>", 1, 10**9, ())
    return out


class FunctionIndex:
    """Maps frames (file, line, name) to the qualified names of functions.

    Every function a module defines is indexed by its code object, and so is every function
    it wraps (``__wrapped__``): a break inside ``@functools.wraps``-decorated code is named
    after the decorated function. Where several names share one code object (the decorator's
    own wrapper), the policy wrapper around the frame decides.

    :param plans: returns the plans of every patched target.
    :param module_functions: (function, qualified name) of what a module defines, as the
        policy names them (the engine's target finder).
    """

    def __init__(
        self,
        plans: Callable[[], Iterable[Any]],
        module_functions: Callable[[types.ModuleType], Iterable[tuple[Any, str]]],
    ) -> None:
        self.plans = plans
        self.module_functions = module_functions
        self._by_file: dict[str, dict[Any, list[str]]] = {}
        self._heads_cache: dict[Any, list[tuple[Any, tuple[Any, ...]]]] = {}
        self._heads_for = -1

    def _functions_in(self, file: str) -> dict[Any, list[str]]:
        found = self._by_file.get(file)
        if found is not None:
            return found
        found = {}

        def add(func: Any, display: str) -> None:
            for f in _chain(func):
                if f.__code__.co_filename == file:
                    names = found.setdefault(f.__code__, [])
                    if display not in names:
                        names.append(display)

        for plan in self.plans():
            add(plan.target.func, plan.target.display)
        for module in list(sys.modules.values()):
            if isinstance(module, types.ModuleType) and getattr(module, "__file__", None) == file:
                for func, display in self.module_functions(module):
                    add(func, display)
        self._by_file[file] = found
        return found

    def code_of(self, frame: Frame) -> tuple[Any, list[str]] | None:
        name = frame.name
        resume = RESUME.match(name)
        if resume:
            name = resume["name"]
        best = None
        for code, names in self._functions_in(frame.file).items():
            if code.co_name != name and name:
                continue
            last = max((ln for _, _, ln in code.co_lines() if ln is not None), default=0)
            if code.co_firstlineno <= frame.line <= last and (
                best is None or code.co_firstlineno > best[0].co_firstlineno
            ):
                best = (code, names)
        return best

    def name_of(self, frame: Frame, around: Any = None) -> str:
        """The qualified name of the function ``frame`` is in; ``around`` is the plan of the
        innermost policy wrapper above it, which decides between names sharing a code."""
        found = self.code_of(frame)
        if found is None:
            return f"{frame.file}:{frame.name or '?'}"
        code, names = found
        if len(names) > 1 and around is not None:
            chain = {f.__code__ for f in _chain(around.target.func)}
            if code in chain and around.target.display in names:
                return str(around.target.display)
        return names[0]

    def _heads(self) -> dict[Any, list[tuple[Any, tuple[Any, ...]]]]:
        """Code of each patched target's function -> (plan, codes of its ``__wrapped__``
        chain). Several plans share a code where one decorator's wrapper serves many."""
        plans = list(self.plans())
        if len(plans) != self._heads_for:
            heads: dict[Any, list[tuple[Any, tuple[Any, ...]]]] = {}
            for plan in plans:
                chain = tuple(f.__code__ for f in _chain(plan.target.func))
                heads.setdefault(chain[0], []).append((plan, chain))
            self._heads_cache, self._heads_for = heads, len(plans)
        return self._heads_cache

    def entered(self, stack: list[Frame], wrappers: dict[str, Any]) -> list[Any]:
        """For each frame of the traced ``stack`` (outermost first), the plan of the patched
        target the frame enters, or None.

        A frame of a policy wrapper names its plan. Dynamo leaves some wrapper frames out of
        its stacks (a wrapper that forwards ``*args, **kwargs``), so a frame running a
        patched target's own function counts too; where several targets share that code
        (one ``functools.wraps`` decorator's wrapper), the target whose ``__wrapped__``
        chain matches the frames that follow is the one entered.
        """
        heads = self._heads()
        codes = [None if f.file in wrappers else self.code_of(f) for f in stack]
        out: list[Any] = []
        chain: tuple[Any, ...] = ()  # the __wrapped__ chain being walked, and where in it
        at = 0
        for i, frame in enumerate(stack):
            if frame.file in wrappers:
                out.append(wrappers[frame.file])
                chain, at = (), 0
                continue
            found = codes[i]
            if found is not None and at + 1 < len(chain) and chain[at + 1] is found[0]:
                out.append(None)  # the decorated function, called by its decorator's wrapper
                at += 1
                continue
            cands = heads.get(found[0]) if found is not None else None
            if not cands:
                out.append(None)
                chain, at = (), 0
                continue

            def follows(chain: tuple[Any, ...], start: int = i) -> int:
                n = 0
                for k, code in enumerate(chain):
                    got = codes[start + k] if start + k < len(codes) else None
                    if got is None or got[0] is not code:
                        break
                    n += 1
                return n

            best, chain = max(cands, key=lambda c: follows(c[1]))
            at = 0
            # the wrapper frame and the function it called are one entry
            out.append(None if i and out[i - 1] is best else best)
        return out

    def region_of_frame(self, frame: Frame, by_code: Callable[[tuple[str, str, int]], Any]) -> Any:
        """The region whose compile entry is the function of ``frame`` (a traced root)."""
        found = self.code_of(frame)
        if found is None:
            return None
        code = found[0]
        return by_code((code.co_filename, code.co_name, code.co_firstlineno))


def settings_at(
    eager: list[Frame],
    stack: list[Frame],
    entered: list[Any],
    wrappers: Mapping[str, Any],
    hand: HandWritten,
    *,
    around: Iterable[Any] = (),
) -> list[InForce]:
    """Every error_on_graph_break in force at the break, outermost first, as (value, rule,
    function): the policy's wrappers (the rule, and the function it wraps) and what the
    source says by hand (no rule), around the compile and then along the traced frames.

    :param around: plans known to be in force around the compile where its eager frames
        are not at hand (a failed compile read back from Dynamo's metrics).
    """
    out: list[InForce] = []

    def policy(plan: Any) -> None:
        if plan is not None and plan.error_on_graph_break is not None:
            rule = plan.rules.get("error_on_graph_break")
            out.append((plan.error_on_graph_break, rule, plan.target.display))

    for plan in around:
        policy(plan)

    for frame in eager:
        if frame.file.startswith(WRAPPER_FILE_PREFIX):
            policy(wrappers.get(frame.file))
        else:
            out.extend((v, None, None) for v in hand.at(frame))
    for frame, plan in zip(stack, entered, strict=True):
        policy(plan)
        if not frame.file.startswith(WRAPPER_FILE_PREFIX):
            out.extend((v, None, None) for v in hand.at(frame))
    return out


def shown_path(file: str) -> str:
    """``file`` as a reader finds it: relative to the current directory when inside it, else
    to the ``sys.path`` entry holding it (``transformers/models/...``)."""
    if file.startswith("<"):
        return file
    real = os.path.realpath(file)
    here = os.path.realpath(os.getcwd()) + os.sep
    if real.startswith(here):
        return os.path.relpath(real, here)
    roots = sorted(
        (os.path.realpath(p) + os.sep for p in sys.path if p and os.path.isdir(p)),
        key=len,
        reverse=True,
    )
    for root in roots:
        if real.startswith(root):
            return os.path.relpath(real, root)
    return file
