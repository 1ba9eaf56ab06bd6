"""Fixtures for applying policies to real modules under torch.compile (CPU, fast backends)."""

from __future__ import annotations

import contextlib
import importlib
import sys
import textwrap
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import policycompile as pc
from policycompile._runtime.state import STATE
from policycompile._torch import dynamo as _dynamo

GRAPHS: list[torch.fx.GraphModule] = []
BACKEND = "pc_count"

if BACKEND not in torch._dynamo.list_backends(exclude_tags=()):

    @torch._dynamo.register_backend(name=BACKEND)  # type: ignore[misc]
    def _count(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        GRAPHS.append(gm)
        return gm.forward


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    """Every test starts and ends with a clean Dynamo, flag and stance, and no policy applied."""

    def reset() -> None:
        torch._dynamo.reset()
        counters.clear()
        GRAPHS.clear()
        _dynamo.set_error_on_graph_break(False)

    reset()
    meta_path = list(sys.meta_path)
    yield
    active = STATE.active
    if active is not None:
        active.undo()
    sys.meta_path[:] = meta_path
    reset()


@dataclass
class Modules:
    """Writes modules under a temporary sys.path entry and forgets them afterwards."""

    root: Path
    tag: str

    def name(self, base: str) -> str:
        return f"{base}_{self.tag}"

    def write(self, name: str, source: str) -> str:
        path = self.root.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in list(path.parents)[: len(name.split(".")) - 1]:
            init = parent / "__init__.py"
            if not init.exists():
                init.write_text("")
        path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return name

    def policy(self, text: str, name: str = "policy.yaml") -> Path:
        path = self.root / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Modules]:
    root = tmp_path / "src"
    root.mkdir()
    sys.path.insert(0, str(root))
    before = set(sys.modules)
    yield Modules(root, uuid.uuid4().hex[:8])
    sys.path.remove(str(root))
    for name in set(sys.modules) - before:
        # Only the test's own modules are forgotten. A library first imported during the
        # test stays: forgotten, it would be imported again beside the objects of its first
        # import (policycompile's Policy class twice, so isinstance fails; PyYAML's C loader
        # holding the first yaml.nodes, so every node's tag is None), and some register
        # global state when first imported (torch 2.9's torch._dynamo.package asserts on a
        # second).
        file = getattr(sys.modules.get(name), "__file__", None)
        if isinstance(file, str) and Path(file).is_relative_to(root):
            del sys.modules[name]


@dataclass(frozen=True)
class Outcome:
    """What a call did under torch.compile: its error, its value, graphs and frames."""

    error: str | None
    value: Any
    graphs: int
    frames: int

    def same_as(self, other: Outcome) -> bool:
        if (self.error, self.graphs, self.frames) != (other.error, other.graphs, other.frames):
            return False
        if isinstance(self.value, torch.Tensor):
            return isinstance(other.value, torch.Tensor) and torch.equal(self.value, other.value)
        return bool(self.value == other.value)


def outcome(call: Callable[[], Any]) -> Outcome:
    """Run ``call`` on a fresh Dynamo and record what happened."""
    torch._dynamo.reset()
    counters.clear()
    GRAPHS.clear()
    error = None
    value = None
    try:
        value = call()
    except Exception as exc:
        error = type(exc).__name__
    frames = int(counters["frames"]["ok"])
    return Outcome(error, value, len(GRAPHS), frames)


def apply(path: Path | str, **kwargs: Any) -> pc.PolicyHandle:
    return pc.apply(path, **kwargs)


@contextlib.contextmanager
def applied_around_import(
    policy: Path, name: str, when: str
) -> Iterator[tuple[types.ModuleType, pc.PolicyHandle]]:
    """Module ``name`` with ``policy`` applied ``when`` ("before" or "after") it is imported,
    and the handle; undone on the way out."""
    if when == "after":
        importlib.import_module(name)
    handle = apply(policy)
    try:
        yield importlib.import_module(name), handle
    finally:
        handle.undo()
