"""Observing the program's own ``torch.compile`` calls (under ``run``, ``suggest``, the pytest
plugin, and in the children of a run): each gets an observing backend, as the policy's compile
entries have, so that it is a region of the report."""

from __future__ import annotations

import functools
import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

from .._engine.plan import Plan
from .._engine.targets import Kind, Target, policy_name_of
from .._observe.attribution import examples_dir, internal_dirs, shown_path
from .._observe.observer import Observer
from .._observe.regions import ObservedBackend
from .._policy.tree import RuleRef
from .._torch import dynamo as _dynamo


# -- observing the program's own torch.compile calls
class ProgramCompiles:
    """While installed, ``torch.compile`` gives each program call an observing backend, as
    the policy's compile entries have: the region is named after the compiled function or
    the module class, and its rule is where the program called ``torch.compile``. Every
    argument is passed through unchanged; a call torch would refuse goes to torch as made."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.sites: dict[str, str] = {}  # region -> "file:line" of the torch.compile call
        #: region -> the options a layer's own entry would repeat (backend, mode, dynamic)
        self.options: dict[str, dict[str, Any]] = {}
        self._real: Any = None

    def install(self) -> None:
        import torch

        self._real = real = torch.compile
        signature = inspect.signature(real)

        @functools.wraps(real)
        def compile(*args: Any, **kwargs: Any) -> Any:
            return self._compile(real, signature, args, kwargs)

        torch.compile = compile

    def uninstall(self) -> None:
        import torch

        if self._real is not None and getattr(torch.compile, "__wrapped__", None) is self._real:
            torch.compile = self._real  # type: ignore[assignment]
        self._real = None

    def _compile(
        self,
        real: Callable[..., Any],
        signature: inspect.Signature,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:

        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return real(*args, **kwargs)
        given = dict(bound.arguments)
        model = given.pop("model", None)
        if model is None:  # @torch.compile(...) with options: the decorator comes next
            return lambda fn: self._compile(real, signature, (fn,), given)
        found = _entry(model)
        ours = isinstance(given.get("backend"), ObservedBackend)
        if found is None or given.get("disable") or ours:
            return real(*args, **kwargs)
        torch_itself = sys._getframe(2).f_code.co_filename.startswith(internal_dirs()[0])
        if torch_itself and not found[1].is_forward:
            return real(*args, **kwargs)  # torch compiling for itself; m.compile() is the user's
        if given.get("mode") is not None and given.get("options") is not None:
            return real(*args, **kwargs)  # torch says why that is refused
        name, target = found
        site = _caller_site()
        file, _, line = site.rpartition(":")
        options = {k: v for k, v in given.items() if k not in ("backend", "mode", "options")}
        shown = dict(options)
        for key in ("backend", "mode"):
            if isinstance(given.get(key), str) and given[key] != "inductor":
                shown[key] = given[key]
        rule = RuleRef.at_site(file, int(line) if line.isdigit() else 0)
        plan = Plan(target, shown, False, None, {"compile": rule})
        region = self.observer.region(name, plan)
        self.sites.setdefault(name, site)
        self.options.setdefault(
            name, {k: v for k, v in shown.items() if k in ("backend", "mode", "dynamic")}
        )
        backend = _dynamo.make_backend(
            given.get("backend"),
            given.get("mode"),
            given.get("options"),
            given.get("dynamic"),
            options.pop("name", None),
        )
        return real(
            model, backend=ObservedBackend(self.observer.on_graph, region, backend), **options
        )


def _entry(model: Any) -> tuple[str, Target] | None:
    """The region name and target of what the program compiles: a function, an
    ``nn.Module`` (its class's forward) or a module's bound ``_call_impl`` (``m.compile()``)."""
    import torch

    owner = getattr(model, "__self__", None)  # m._call_impl from m.compile(), m.method
    calls = getattr(getattr(model, "__func__", None), "__name__", None)
    whole = isinstance(owner, torch.nn.Module) and calls in ("_call_impl", "__call__", "forward")
    if isinstance(model, torch.nn.Module) or whole:
        cls = type(model if isinstance(model, torch.nn.Module) else owner)
        forward = getattr(cls, "forward", None)
        if not isinstance(forward, types.FunctionType):
            return None
        module = policy_name_of(cls.__module__)
        name = f"{module}:{cls.__qualname__}.forward"
        kind = Kind.METHOD
        target = Target(name, cls, "forward", forward, forward, kind, module, is_forward=True)
        return target.display, target
    func = getattr(model, "__func__", model)
    if not isinstance(func, types.FunctionType):
        return None
    # code made by exec() without a __name__ has no module: its file names it (<string>)
    owned = func.__module__
    module = policy_name_of(owned) if isinstance(owned, str) else func.__code__.co_filename
    name = f"{module}:{func.__qualname__}"
    kind = Kind.FUNCTION if "." not in func.__qualname__ else Kind.METHOD
    target = Target(name, sys.modules.get(func.__module__), func.__name__, func, func, kind, module)
    return target.display, target


def _caller_site() -> str:
    """file:line of the program's call to torch.compile (past torch's own frames, as in
    ``nn.Module.compile``)."""
    skip = internal_dirs()
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        if frame.f_code.co_filename.startswith(examples_dir()):
            break
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?"
    return f"{shown_path(frame.f_code.co_filename)}:{frame.f_lineno}"
