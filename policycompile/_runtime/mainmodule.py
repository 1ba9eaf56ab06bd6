"""The program's main module as ``apply`` and child processes meet it: where its top-level code
is running now, and what it defines below a line."""

from __future__ import annotations

import ast
import sys
import types


def running_main_line(main: types.ModuleType | None) -> tuple[str, int] | None:
    """(file, line) where ``__main__``'s top-level code is now, if it is on this stack."""
    if main is None:
        return None
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is vars(main):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None


def defined_after(file: str, line: int) -> list[str]:
    """Names of the top-level functions and classes a script defines below ``line``."""
    try:
        with open(file, "rb") as f:
            tree = ast.parse(f.read(), file)
    except (OSError, SyntaxError, ValueError):
        return []
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [n.name for n in tree.body if isinstance(n, kinds) and n.lineno > line]
