"""What the installed torch accepts, read from torch itself: ``torch.compile``'s keywords,
backends, Inductor's modes and options, ``torch._dynamo.config`` names, stances and the
per-function decorators. The policy layer checks names against these (docs/policy.md)."""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from typing import Any

#: the oldest torch policycompile supports: the first with torch._dynamo.error_on_graph_break
FLOOR = (2, 9)


def version_problem(installed: str | None = None) -> str | None:
    """Why the installed torch (or ``installed``, a version string) cannot run policycompile,
    in one line; None when it can. Read from the package's metadata, without importing
    torch."""
    if installed is None:
        from importlib import metadata

        try:
            installed = metadata.version("torch")
        except metadata.PackageNotFoundError:
            return "torch is not installed: policycompile needs torch >= 2.9"
    parts = re.match(r"(\d+)\.(\d+)", installed)
    if parts is None or (int(parts[1]), int(parts[2])) >= FLOOR:
        return None
    return (
        f"torch {installed} is installed; policycompile needs torch >= {FLOOR[0]}.{FLOOR[1]} "
        "(the first release with torch._dynamo.error_on_graph_break)"
    )


#: torch.compile keywords newer than the floor, with the oldest release seen to accept each
#: among those CI runs (2.9.0, 2.13.0, 2.14.1): it may be older. ``shapes_spec`` (2.13) was
#: renamed ``dynamic_shapes`` in 2.14.
NEWER_OPTIONS = {
    "name": "2.13",
    "recompile_limit": "2.13",
    "isolate_recompiles": "2.13",
    "shapes_spec": "2.13 (2.14 calls it dynamic_shapes)",
    "dynamic_shapes": "2.14",
}


def version() -> str:
    """``torch.__version__`` as a string."""
    import torch

    return str(torch.__version__)


def api(module: str, name: str) -> Any:
    """``module.name`` in the installed torch (a per-function decorator), or None."""
    return getattr(importlib.import_module(module), name, None)


@functools.cache
def torch_compile_keywords() -> tuple[str, frozenset[str]]:
    """The installed torch's version and the keywords its ``torch.compile`` accepts."""
    import torch

    params = inspect.signature(torch.compile).parameters
    return str(torch.__version__), frozenset(p for p in params if p != "model")


def torch_backends() -> tuple[str, ...]:
    """The backends torch knows by name, its own and those registered so far (not cached:
    a program registers its own before apply)."""
    import torch._dynamo

    return tuple(torch._dynamo.list_backends(exclude_tags=()))


@functools.cache
def inductor_modes() -> tuple[str, ...]:
    """The modes ``torch.compile`` accepts (Inductor's)."""
    import torch._inductor

    return tuple(torch._inductor.list_mode_options())


@functools.cache
def inductor_options() -> dict[str, Any]:
    """Inductor's options and their defaults (``torch.compile(options=...)`` keys)."""
    import torch._inductor.config

    return dict(torch._inductor.config.get_config_copy())


@functools.cache
def dynamo_config_defaults() -> dict[str, Any]:
    """``torch._dynamo.config`` names and their defaults."""
    import torch._dynamo.config

    return dict(torch._dynamo.config.get_config_copy())


def parameters(module: str, name: str) -> frozenset[str]:
    """The parameter names of ``module.name`` (empty when torch has no such function)."""
    try:
        return frozenset(
            inspect.signature(getattr(importlib.import_module(module), name)).parameters
        )
    except (AttributeError, TypeError, ValueError):
        return frozenset()


@functools.cache
def stances() -> tuple[str, ...]:
    """The names ``torch.compiler.set_stance`` accepts in the installed torch.

    torch keeps no list: Dynamo's ``_callback_from_stance`` compares the stance with each
    name in turn (and raises for any other), so the names are read from its source; a torch
    installed without sources gets the names documented since 2.6.
    """
    from torch._dynamo import eval_frame

    try:
        source = inspect.getsource(eval_frame._callback_from_stance)
    except (AttributeError, OSError, TypeError):
        return _DOCUMENTED_STANCES
    found = tuple(dict.fromkeys(re.findall(r'stance == "(\w+)"', source)))
    return found or _DOCUMENTED_STANCES


_DOCUMENTED_STANCES = (
    "default",
    "force_eager",
    "eager_on_recompile",
    "fail_on_recompile",
    "eager_then_compile",
    "aot_eager_then_compile",
)
