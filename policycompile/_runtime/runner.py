"""Running a program the way ``python SCRIPT`` / ``python -m MODULE`` would, with the policy
applied first and the main module's own functions patched as its code defines them."""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import os
import sys
import traceback
import types
from collections.abc import Callable, Sequence

HOOK = "__policycompile_defined__"


def _instrument(source: str, filename: str) -> types.CodeType:
    """The module's code with a call to the patch hook after each top-level def and class,
    so that what the program calls (``main()`` at the bottom) is already wrapped."""
    tree = ast.parse(source, filename)
    body: list[ast.stmt] = []
    for stmt in tree.body:
        body.append(stmt)
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            call = ast.Expr(ast.Call(ast.Name(HOOK, ast.Load()), [ast.Constant(stmt.name)], []))
            ast.copy_location(call, stmt)
            call.lineno = call.end_lineno = stmt.end_lineno or stmt.lineno
            body.append(call)
    tree.body = body
    ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec", dont_inherit=True)


def _main_spec(target: str, as_module: bool) -> importlib.machinery.ModuleSpec:
    if not as_module:
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"can't open file {target!r}: no such file")
        # named after the file, as `python -m` would name it: policies say `train.step`
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        return spec
    spec = importlib.util.find_spec(target)
    if spec is None:
        raise ModuleNotFoundError(f"No module named {target!r}")
    if spec.submodule_search_locations is not None:  # a package: run its __main__
        spec = importlib.util.find_spec(f"{target}.__main__")
        if spec is None:
            raise ModuleNotFoundError(f"No module named {target}.__main__")
    return spec


def run_main(
    target: str,
    args: Sequence[str],
    *,
    as_module: bool,
    on_defined: Callable[[types.ModuleType, str], object],
    on_error: Callable[[BaseException], object],
    quiet: tuple[type[BaseException], ...] = (),
) -> int:
    """Run the program and return its exit status, as the interpreter would.

    :param on_defined: called with the main module and a name after each top-level def/class.
    :param on_error: sees the exception a failing program raised, before it is printed.
    :param quiet: exceptions printed as their message alone, without a traceback (the
        policy's own errors, raised through the program: they say where the problem is).
    """
    saved_path0 = sys.path[0]
    # as the interpreter does: `-m` looks in the current directory, a script in its own
    sys.path[0] = os.getcwd() if as_module else os.path.dirname(os.path.abspath(target))
    try:
        spec = _main_spec(target, as_module)
        loader = spec.loader
        get_source = getattr(loader, "get_source", None)
        source = get_source(spec.name) if get_source is not None else None
        if source is None:
            raise ModuleNotFoundError(f"no source for {target!r}")
        filename = spec.origin or target
        code = _instrument(source, filename)
        module = types.ModuleType("__main__")
        module.__file__ = filename
        module.__spec__ = spec
        module.__loader__ = loader
        module.__package__ = spec.parent if as_module else None
        module.__dict__[HOOK] = lambda name: on_defined(module, name)
        saved_main, saved_argv = sys.modules.get("__main__"), sys.argv
        sys.modules["__main__"] = module
        sys.argv = [filename, *args]
        try:
            exec(code, module.__dict__)
        except SystemExit as exc:
            return _exit_status(exc)
        except KeyboardInterrupt:
            traceback.print_exc()
            return 130
        except BaseException as exc:
            on_error(exc)
            if isinstance(exc, quiet):
                print(f"policycompile: {exc}", file=sys.stderr)
            else:
                traceback.print_exc()
            return 1
        finally:
            sys.argv = saved_argv
            if saved_main is not None:
                sys.modules["__main__"] = saved_main
        return 0
    finally:
        sys.path[0] = saved_path0


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1
