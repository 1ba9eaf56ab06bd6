"""Every private torch._dynamo detail policycompile relies on, in one place.

tests/test_dynamo_private.py checks each against the installed torch, so a torch upgrade that
moves one fails there, by name, rather than somewhere deep in a wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def flag_module() -> Any:
    """The module holding the process-global ``error_on_graph_break`` flag.

    ``torch._dynamo.error_on_graph_break`` reads and writes ``_error_on_graph_break`` there
    (eagerly, not thread-local); the policy wrapper's eager path does the same, only faster.
    """
    import torch._dynamo.utils as utils

    return utils


def get_error_on_graph_break() -> bool:
    """The current value of the flag."""
    return bool(flag_module()._error_on_graph_break)


def set_error_on_graph_break(value: bool) -> None:
    """Set the flag (tests and resets only)."""
    flag_module()._error_on_graph_break = value


def is_compiled_function(obj: object) -> bool:
    """True for what ``torch.compile(fn)`` returned: Dynamo marks it with the original.

    ``torch.compiler.disable(fn)`` carries the same mark, and ``_torchdynamo_disable`` too.
    """
    return (
        callable(obj)
        and getattr(obj, "_torchdynamo_orig_callable", None) is not None
        and not getattr(obj, "_torchdynamo_disable", False)
    )


def is_dynamo_compiling() -> Callable[[], bool]:
    """``torch.compiler.is_dynamo_compiling``: Dynamo folds a call to it into the constant
    True while tracing; eagerly it is a bare ``return False`` (25 ns, a third of
    ``torch.compiler.is_compiling``, which also asks TorchScript)."""
    import torch.compiler

    return torch.compiler.is_dynamo_compiling
