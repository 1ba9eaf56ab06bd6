"""The canary of the torch boundary (policycompile/_torch): every private torch detail the
library relies on, checked by what it does on the installed torch, so that a torch upgrade
that moves one fails here, by name."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch._dynamo
import torch._dynamo.utils

from policycompile._torch import catalog, dist, logs
from policycompile._torch import dynamo as _dynamo


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

    logger = logging.getLogger(logs.GRAPH_BREAK_LOGGERS[0])
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


def test_a_graph_break_record_parses_into_site_reason_and_stack() -> None:
    records: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger(logs.GRAPH_BREAK_LOGGERS[0])
    handler, level = Handler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)

    def f(x: torch.Tensor) -> torch.Tensor:
        x = x + 1
        torch._dynamo.graph_break()
        return x * 2

    try:
        torch.compile(f, backend="eager")(torch.ones(2))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    site, reason, stack = logs.parse_graph_break(records[0])
    assert site is not None and site.line == f.__code__.co_firstlineno + 2
    assert "graph_break" in reason
    assert stack[-1].name == "f" and stack[-1].line == site.line


def test_what_a_graph_shows_of_the_modules_and_code_it_traced() -> None:
    seen: list[tuple[list[tuple[str, type]], list[str], object]] = []

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.h = torch.nn.ModuleList([Block(), Block()])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.h:
                x = block(x)
            return x

    def backend(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        files = [c.co_filename for c in _dynamo.traced_code()]
        seen.append((list(_dynamo.module_stack(gm)), files, _dynamo.frame_self()))
        return gm.forward

    model = Model()
    torch.compile(model, backend=backend)(torch.ones(1, 2))
    (stack, files, root) = seen[0]
    assert ("h.1.lin", torch.nn.Linear) in stack and ("h.0", Block) in stack
    assert __file__ in files
    assert root is model
    assert _dynamo.frame_self() is None  # not tracing now


def test_the_catalog_reads_what_the_installed_torch_accepts() -> None:
    version, keywords = catalog.torch_compile_keywords()
    assert version == str(torch.__version__) == catalog.version()
    assert {"fullgraph", "dynamic", "backend", "mode", "options"} <= keywords
    assert {"eager", "aot_eager", "inductor"} <= set(catalog.torch_backends())
    assert "max-autotune" in catalog.inductor_modes()
    assert "max_autotune" in catalog.inductor_options()
    assert "recompile_limit" in catalog.dynamo_config_defaults()
    assert {"default", "fail_on_recompile", "force_eager"} <= set(catalog.stances())
    assert catalog.api("torch.compiler", "nested_compile_region") is not None
    assert catalog.api("torch.compiler", "no_such_decorator") is None
    assert "recursive" in catalog.parameters("torch.compiler", "disable")


def test_a_store_wait_tells_a_timeout_from_a_store_that_failed() -> None:
    import torch.distributed as tdist

    server = tdist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    server.set("here", "1")
    assert dist.wait(server, ["here"], 1.0) == ([], None)
    missing, failed = dist.wait(server, ["here", "never"], 0.2)
    assert (missing, failed) == ([1], None)  # timed out: not a failure of the store
    assert dist.get_all(server, ["here"]) == [b"1"]
    client = tdist.TCPStore("127.0.0.1", server.port, is_master=False, timeout=timedelta(seconds=2))
    del server  # the job's store goes away under the client
    missing, failed = dist.wait(client, ["here"], 0.5)
    assert missing == [0] and failed is not None and "Error" in failed


def test_the_floor_is_told_in_one_line_from_the_packages_metadata() -> None:
    assert catalog.version_problem() is None  # the installed torch, read without importing it
    for fine in ("2.9.0+cu128", "2.13.0+cpu", "2.15.0", "3.0.0"):
        assert catalog.version_problem(fine) is None
    told = catalog.version_problem("2.8.1")
    assert told == (
        "torch 2.8.1 is installed; policycompile needs torch >= 2.9 (the first release with "
        "torch._dynamo.error_on_graph_break)"
    )
