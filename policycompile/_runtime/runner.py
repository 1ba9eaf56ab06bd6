"""Running a program the way ``python SCRIPT`` / ``python -m MODULE`` would, with the policy
applied first and the main module's own functions patched as its code defines them: the
same innermost decorator as every module imported under the policy (``_engine/rewrite.py``)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import traceback
import types
from collections.abc import Callable, Sequence
from typing import Any

from .._engine.rewrite import DEFINE, instrument


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
    on_defined: Callable[[types.ModuleType, str, Any], Any],
    on_error: Callable[[BaseException], object],
    quiet: tuple[type[BaseException], ...] = (),
) -> int:
    """Run the program and return its exit status, as the interpreter would.

    :param on_defined: called with the main module, a name and the object a top-level
        ``def`` or ``class`` made, before the statement binds the name; it returns what the
        statement binds (the innermost decorator).
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
        code = instrument(source, filename)
        module = types.ModuleType("__main__")
        module.__file__ = filename
        module.__spec__ = spec
        module.__loader__ = loader
        module.__package__ = spec.parent if as_module else None
        module.__dict__[DEFINE] = lambda name: lambda obj: on_defined(module, name, obj)
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
            module.__dict__.pop(DEFINE, None)
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
