"""Every private torch._dynamo detail that policycompile/_dynamo.py relies on, checked by what
it does on the installed torch: a torch upgrade that moves one fails here, by name."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
import torch._dynamo
import torch._dynamo.utils

from policycompile import _dynamo


def test_flag_module_holds_the_flag_the_context_manager_sets() -> None:
    module = _dynamo.flag_module()
    assert module._error_on_graph_break is False
    with torch._dynamo.error_on_graph_break(True):
        assert module._error_on_graph_break is True
        assert _dynamo.get_error_on_graph_break() is True
    assert module._error_on_graph_break is False


def test_is_dynamo_compiling_folds_to_true_while_tracing() -> None:
    probe = _dynamo.is_dynamo_compiling()
    assert probe() is False

    @torch.compile(backend="eager", fullgraph=True)
    def f(x: torch.Tensor) -> torch.Tensor:
        return x + 1 if probe() else x - 1

    assert torch.equal(f(torch.zeros(1)), torch.ones(1))


def test_compile_id_is_known_inside_a_backend_only() -> None:
    seen: list[Any] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        seen.append(_dynamo.current_compile_id())
        return gm.forward

    assert _dynamo.current_compile_id() is None
    torch.compile(lambda x: x * 2, backend=backend)(torch.ones(2))
    assert len(seen) == 1 and seen[0] is not None and seen[0][1] == 0


def test_graph_break_loggers_receive_breaks_and_the_backend_is_found_while_tracing() -> None:
    class Mine:
        def __call__(self, gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
            return gm.forward

    mine = Mine()
    messages: list[tuple[str, Any]] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found = _dynamo.tracing_backend(lambda b: b is mine)
            messages.append((record.getMessage(), found))

    logger = logging.getLogger(_dynamo.GRAPH_BREAK_LOGGERS[0])
    handler, level = Handler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:

        def f(x: torch.Tensor) -> torch.Tensor:
            x = x + 1
            torch._dynamo.graph_break()
            return x * 2

        torch.compile(f, backend=mine)(torch.ones(2))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert messages, "no graph-break record reached the logger"
    text, found = messages[0]
    assert "Graph break in user code at" in text and "User code traceback:" in text
    assert found is mine
    assert _dynamo.tracing_backend(lambda b: True) is None  # not tracing now


def test_a_refused_break_carries_its_stack_and_compile_id_and_is_kept_in_metrics() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        x = x + 1
        torch._dynamo.graph_break()
        return x * 2

    with pytest.raises(_dynamo.graph_break_error()) as info:
        torch.compile(f, backend="eager", fullgraph=True)(torch.ones(2))
    assert _dynamo.is_graph_break_error(info.value)
    stack = _dynamo.exception_stack(info.value)
    assert stack[-1][2] == "f" and stack[-1][1] == f.__code__.co_firstlineno + 2
    cid = _dynamo.exception_compile_id(info.value)
    assert cid is not None and cid.endswith("/0")
    code = (f.__code__.co_filename, "f", f.__code__.co_firstlineno)
    (failed,) = [c for c in _dynamo.failed_compiles() if (c.compile_id, c.code) == (cid, code)]
    assert failed.line == f.__code__.co_firstlineno + 2
    assert "graph_break" in failed.reason


def test_recompile_reasons_name_the_failed_guard() -> None:
    ids: list[Any] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        ids.append(_dynamo.current_compile_id())
        return gm.forward

    f = torch.compile(lambda x: x * 2, backend=backend, dynamic=False)
    f(torch.ones(2))
    f(torch.ones(3))
    assert [i[1] for i in ids] == [0, 1] and ids[0][0] == ids[1][0]
    reason = _dynamo.recompile_reasons()[ids[1]]
    assert "size" in reason or "shape" in reason


def test_make_backend_builds_what_torch_compile_would() -> None:
    inductor = _dynamo.make_backend("inductor", None, None, None)
    assert inductor == torch._TorchCompileInductorWrapper(None, None, None)  # type: ignore[no-untyped-call]
    eager = _dynamo.make_backend("eager", None, None, None)
    assert eager.compiler_name == "eager"


def test_compiled_and_disabled_functions_are_told_apart() -> None:
    compiled = torch.compile(lambda x: x, backend="eager")
    assert _dynamo.is_compiled_function(compiled)
    assert not _dynamo.is_compiled_function(torch.compiler.disable(lambda x: x))
    assert not _dynamo.is_compiled_function(lambda x: x)
