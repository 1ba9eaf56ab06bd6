"""The program's main module as ``apply`` and child processes meet it: where its top-level code
is running now, and what it defines below a line."""

from __future__ import annotations

import ast
import sys
import types

from .._engine.modules import plan_module
from .._engine.targets import policy_module_name
from .._errors import PolicyTargetError
from .._policy.policy import Policy


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


def unpatched_main(policy: Policy, covered: list[types.ModuleType]) -> str | None:
    """``apply()`` called from a script's own top-level code (``python app.py``): what
    the script defines further down cannot be patched, so say it plainly, naming the
    definitions below the ``apply`` line that the policy reaches: the warning to give, or
    None.

    :raises PolicyTargetError: an exact rule names something the script has not defined yet.
    """
    main = sys.modules.get("__main__")
    where = running_main_line(main)
    if main is None or where is None or main not in covered:
        return None
    name = policy_module_name(main)
    file, line = where
    later = [d for d in defined_after(file, line) if policy.tree.matches(f"{name}:{d}")]
    if not later:
        return None
    hint = (
        f"apply() was called at {file}:{line}, while {name} (the script, running as "
        "__main__) was still executing, and a plain `python` run cannot patch what it "
        "defines later. Call apply() after the definitions, or run the program with "
        f"`policycompile run {policy.path} {file}`, which patches the script's "
        "functions as it defines them"
    )
    for problem in plan_module(policy, main, set()).problems:
        if "names nothing" in problem.message:
            raise PolicyTargetError(
                f"target {problem.rule!r} names nothing yet: {hint}",
                problem.position,
                rule=problem.rule,
            )
    return f"{name}: {', '.join(later)} not patched: {hint}"
