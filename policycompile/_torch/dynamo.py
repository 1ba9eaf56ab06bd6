"""Every private torch._dynamo detail policycompile relies on, in one place.

tests/apply/test_dynamo_private.py checks each against the installed torch, so a torch upgrade that
moves one fails there, by name, rather than somewhere deep in a wrapper.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


def make_backend(backend: Any, mode: Any, options: Any, dynamic: Any, name: Any = None) -> Any:
    """The backend object ``torch.compile(backend=..., mode=..., options=...)`` would build.

    Compile entries get it wrapped in an observing backend (one per region), so graphs are
    counted by the public mechanism while Dynamo sees the same compiler as by hand.
    """
    import inspect

    import torch

    # ``name`` goes where torch.compile gives it: to Inductor's wrapper (2.13, 2.14), to every
    # backend's where its wrapper takes it (newer torch)
    if backend is None or backend == "inductor":
        cls = torch._TorchCompileInductorWrapper
        if "name" in inspect.signature(cls.__init__).parameters:
            return cls(mode, options, dynamic, name)  # type: ignore[no-untyped-call]
        return cls(mode, options, dynamic)  # type: ignore[no-untyped-call]
    wrapper = torch._TorchCompileWrapper
    if "name" in inspect.signature(wrapper.__init__).parameters:
        return wrapper(backend, mode, options, dynamic, name)  # type: ignore[no-untyped-call, call-arg]
    return wrapper(backend, mode, options, dynamic)  # type: ignore[no-untyped-call]


def recompile_reasons() -> dict[tuple[int, int], str]:
    """(frame id, compile id) -> the guard failure that caused that recompile.

    Dynamo logs recompiles only when ``TORCH_LOGS`` asks, but always keeps the reason in its
    compilation metrics (until ``torch._dynamo.reset()``).
    """
    from torch._dynamo.utils import get_compilation_metrics

    out: dict[tuple[int, int], str] = {}
    for metrics in get_compilation_metrics():
        reason = getattr(metrics, "recompile_reason", None)
        cid = str(getattr(metrics, "compile_id", "") or "")
        frame, _, attempt = cid.partition("/")
        if reason and frame.isdigit() and attempt.split("_")[0].isdigit():
            out[(int(frame), int(attempt.split("_")[0]))] = str(reason)
    return out


def current_compile_id() -> tuple[int, int] | None:
    """(frame id, frame compile id) of the frame Dynamo is compiling now, if any."""
    from torch._guards import CompileContext

    cid = CompileContext.current_compile_id()
    if cid is None or cid.frame_id is None:
        return None
    return int(cid.frame_id), int(cid.frame_compile_id or 0)


def exception_stack(exc: BaseException) -> list[tuple[str, int, str]]:
    """Where a graph break that raised happened: Dynamo's ``real_stack`` on the exception."""
    stack = getattr(exc, "real_stack", None) or []
    return [(f.filename, int(f.lineno or 0), f.name) for f in stack]


def graph_break_error() -> type[BaseException]:
    """The exception Dynamo raises for a graph break it refuses (fullgraph or
    error_on_graph_break)."""
    from torch._dynamo.exc import Unsupported

    return Unsupported


def is_graph_break_error(exc: BaseException) -> bool:
    """Whether ``exc`` is Dynamo refusing a graph break (fullgraph or error_on_graph_break)."""
    return isinstance(exc, graph_break_error())


def exception_compile_id(exc: BaseException) -> str | None:
    """``"frame/attempt"`` of the compile that raised ``exc`` (Dynamo sets ``compile_id``)."""
    cid = getattr(exc, "compile_id", None)
    return str(cid) if cid is not None else None


def tracing_backend(accept: Callable[[Any], bool]) -> Any:
    """The backend object given to ``torch.compile`` for the frame being traced right now,
    if ``accept`` recognises it.

    Called from a graph-break log record, which Dynamo emits synchronously while tracing:
    the root tracer is thread-local, its output graph holds the compiler, which Dynamo
    wraps in ``WrapBackendDebug`` (``_torchdynamo_orig_backend``) around torch.compile's
    ``_TorchCompileWrapper`` (``compiler_fn``).
    """
    from torch._dynamo.symbolic_convert import InstructionTranslator

    try:
        tx = InstructionTranslator.current_tx()
    except AttributeError:  # not tracing
        return None
    fn = getattr(getattr(tx, "output", None), "compiler_fn", None)
    for _ in range(8):
        if fn is None or accept(fn):
            return fn
        fn = getattr(fn, "_torchdynamo_orig_backend", None) or getattr(fn, "compiler_fn", None)
    return None


@dataclass(frozen=True)
class FailedCompile:
    """A compile that raised, as Dynamo's compilation metrics keep it."""

    compile_id: str
    code: tuple[str, str, int]  # (co_filename, co_name, co_firstlineno) of the root frame
    file: str
    line: int
    reason: str


def failed_compiles() -> list[FailedCompile]:
    """Compiles that raised a graph-break error, from Dynamo's compilation metrics (the last
    64, until ``torch._dynamo.reset()``): what a report needs of a break that user code
    caught before policycompile saw it."""
    from torch._dynamo.utils import get_compilation_metrics

    out = []
    for m in get_compilation_metrics():
        if getattr(m, "fail_type", None) != graph_break_error().__qualname__:
            continue
        file, line = getattr(m, "fail_user_frame_filename", None), m.fail_user_frame_lineno
        if file is None or line is None or m.co_filename is None:
            continue
        code = (str(m.co_filename), str(m.co_name), int(m.co_firstlineno or 0))
        reason = str(getattr(m, "fail_reason", "") or "")
        out.append(FailedCompile(str(m.compile_id), code, str(file), int(line), reason))
    return out


def traced_code() -> list[Any]:
    """The code objects Dynamo traced into the graph being compiled now
    (``TracingContext.traced_code``)."""
    from torch._guards import TracingContext

    context = TracingContext.try_get()
    return list(getattr(context, "traced_code", None) or ())


def frame_self() -> Any:
    """``self`` of the frame Dynamo is compiling, if it has one."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
    except (ImportError, AttributeError):
        return None
    return (getattr(tx, "f_locals", None) or {}).get("self")


def module_stack(gm: Any) -> Iterator[tuple[str, type]]:
    """(path, class) of every ``nn.Module`` the graph's nodes ran in (their
    ``nn_module_stack``), the path as ``transformer.h.0``."""
    for node in getattr(getattr(gm, "graph", None), "nodes", ()):
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            if isinstance(cls, type):
                yield module_path(str(path)), cls


def module_path(path: str) -> str:
    """An ``nn_module_stack`` path as ``transformer.h.0``: without the ``L['self']`` root.

    Versions differ: torch 2.9 records ``_modules['transformer']._modules['h']._modules['0']``,
    which torch 2.10 began to rewrite as ``transformer.h.0`` (``record_nn_module_stack``);
    both read the same here.
    """
    path = re.sub(r"^L\['[^']*'\]\.?", "", path)
    return re.sub(r"_modules\['([^']*)'\]", r"\1", path)
