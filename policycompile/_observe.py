"""Watching what torch.compile does under a policy: graphs per region, graph breaks attributed
to a function and the rule that governed it, recompiles with their reasons; audit mode."""

from __future__ import annotations

import logging
import re
import sys
import threading
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import _dynamo
from ._targets import module_targets

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>\S+)', re.M)
_WHERE = re.compile(r"in user code at (?P<file>.+):(?P<line>\d+)")
_RESUME = re.compile(r"^torch_dynamo_resume_in_(?P<name>.+)_at_\d+$")
_WRAPPER_FILES = ("<policycompile ",)
_CONSEQUENCES = ("Failed to handle graph break gracefully",)


@dataclass(frozen=True)
class Frame:
    """One frame of a traced stack."""

    file: str
    line: int
    name: str


@dataclass
class RegionStats:
    """What happened under one compile entry."""

    name: str
    rule: str | None
    frames: set[int] = field(default_factory=set)
    graphs: int = 0
    compiles: set[tuple[int, int]] = field(default_factory=set)  # (frame id, compile id)


@dataclass
class BreakEvent:
    """A graph-break site, attributed; ``count`` is how many compiled frames hit it."""

    function: str
    file: str
    line: int
    reason: str
    rule: str | None
    allowed: bool
    region: str | None
    tests: list[str] = field(default_factory=list)
    count: int = 0
    raised: bool = False


class LogTap:
    """Receives the records of one Dynamo artifact logger whatever its level.

    Dynamo only formats a graph-break record when its logger is enabled for DEBUG, and
    ``torch._logging.set_logs`` resets levels. The tap answers ``isEnabledFor`` itself and
    re-attaches its handler on every use, so user code cannot switch it off; records reach
    torch's own handlers only when the logger's real level asks for them (``TORCH_LOGS``).
    """

    def __init__(self, name: str, on_message: Callable[[str], None]) -> None:
        self.logger = logging.getLogger(name)
        self.on_message = on_message
        self.handler = _TapHandler(self)
        self._installed = False

    def install(self) -> None:
        logger = self.logger
        tap = self

        def is_enabled_for(level: int) -> bool:
            tap.heal()
            return True

        self._saved_propagate = logger.propagate
        logger.isEnabledFor = is_enabled_for  # type: ignore[method-assign]
        self._installed = True
        self.heal()

    def heal(self) -> None:
        if self.handler not in self.logger.handlers:
            self.logger.addHandler(self.handler)
        self.logger.propagate = False

    def user_wants(self, record: logging.LogRecord) -> bool:
        return logging.Logger.isEnabledFor(self.logger, record.levelno)

    def forward(self, record: logging.LogRecord) -> None:
        """Deliver ``record`` as propagation would have (for users who asked for it)."""
        for handler in self.logger.handlers:
            if handler is not self.handler and record.levelno >= handler.level:
                handler.handle(record)
        parent = self.logger.parent
        while parent is not None:
            for handler in parent.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
            if not parent.propagate:
                break
            parent = parent.parent

    def uninstall(self) -> None:
        if not self._installed:
            return
        self._installed = False
        self.logger.__dict__.pop("isEnabledFor", None)
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self._saved_propagate


class _TapHandler(logging.Handler):
    def __init__(self, tap: LogTap) -> None:
        super().__init__(logging.DEBUG)
        self.tap = tap

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.tap.on_message(record.getMessage())
        except Exception:
            logging.getLogger("policycompile").debug(
                "could not read a Dynamo record", exc_info=True
            )
        if self.tap.user_wants(record):
            self.tap.forward(record)


def parse_graph_break(message: str) -> tuple[Frame | None, str, list[Frame]]:
    """Site, short reason and user stack of a graph-break log message."""
    where = _WHERE.search(message.split("\n", 1)[0])
    site = Frame(where["file"], int(where["line"]), "") if where else None
    reason = ""
    if "Graph Break Reason:" in message:
        text = message.split("Graph Break Reason:", 1)[1]
        text = text.split("User code traceback:", 1)[0]
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith("Encountered graph break when")]
        reason = lines[0] if lines else ""
    stack = []
    if "User code traceback:" in message:
        tb = message.split("User code traceback:", 1)[1]
        stack = [Frame(m["file"], int(m["line"]), m["name"]) for m in _FRAME.finditer(tb)]
    return site, reason, stack


def short_reason(exc: BaseException) -> str:
    """The first line of a Dynamo error that says what the break was."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Encountered graph break when")]
    return lines[0] if lines else type(exc).__name__


class Observer:
    """Collects graphs, breaks and recompiles while a policy is applied.

    :param lookup: maps frames to functions, qualified names and the policy's plans.
    """

    def __init__(self, lookup: FunctionIndex) -> None:
        self.index = lookup
        self.lock = threading.Lock()
        self.regions: dict[str, RegionStats] = {}
        self.breaks: dict[tuple[str, str, int, str], BreakEvent] = {}
        self._seen: set[tuple[tuple[str, str, int, str], int | None]] = set()
        self._stacks: dict[tuple[str, int], list[Frame]] = {}
        self.current_test: str | None = None
        self.taps = [LogTap(n, self.on_graph_break_log) for n in _dynamo.GRAPH_BREAK_LOGGERS]

    def install(self) -> None:
        for tap in self.taps:
            tap.install()

    def uninstall(self) -> None:
        for tap in self.taps:
            tap.uninstall()

    # -- regions
    def region(self, name: str, rule: str | None) -> RegionStats:
        with self.lock:
            return self.regions.setdefault(name, RegionStats(name, rule))

    def on_graph(self, region: RegionStats) -> None:
        cid = _dynamo.current_compile_id()
        with self.lock:
            region.graphs += 1
            if cid is None:
                return
            region.frames.add(cid[0])
            region.compiles.add(cid)

    def recompiles(self, region: RegionStats) -> list[str]:
        """The region's recompiles (frames compiled again), each with its guard failure."""
        reasons = _dynamo.recompile_reasons()
        with self.lock:
            again = sorted(c for c in region.compiles if c[1] > 0)
        return [reasons.get(c, "reason no longer known (torch._dynamo.reset)") for c in again]

    # -- graph breaks
    def on_graph_break_log(self, message: str) -> None:
        site, reason, stack = parse_graph_break(message)
        if site is None:
            return
        key_site = (site.file, site.line)
        if stack:
            self._stacks[key_site] = stack
        else:  # a duplicate: Dynamo suppressed the stack it printed the first time
            stack = self._stacks.get(key_site, [Frame(site.file, site.line, "")])
        cid = _dynamo.current_compile_id()
        self.record_break(stack, reason, frame_id=cid[0] if cid else None, raised=False)

    def record_exception(self, exc: BaseException) -> None:
        """Record a graph break that raised (fullgraph or error_on_graph_break)."""
        if not _dynamo.is_graph_break_error(exc):
            return
        stack = [Frame(*f) for f in _dynamo.exception_stack(exc)]
        if stack:
            self.record_break(stack, short_reason(exc), frame_id=None, raised=True)

    def record_break(
        self, stack: list[Frame], reason: str, *, frame_id: int | None, raised: bool
    ) -> None:
        if reason.startswith(_CONSEQUENCES):
            return  # Dynamo giving up on a caller because of a break already recorded inside
        user = [f for f in stack if not f.file.startswith(_WRAPPER_FILES)]
        if not user:
            return
        site = user[-1]
        function = self.index.name_of(site)
        rule, allowed, region = self.index.govern(user)
        key = (function, site.file, site.line, reason)
        with self.lock:
            event = self.breaks.get(key)
            if event is None:
                event = BreakEvent(function, site.file, site.line, reason, rule, allowed, region)
                self.breaks[key] = event
            if (key, frame_id) not in self._seen or frame_id is None:
                self._seen.add((key, frame_id))
                event.count += 1
            event.raised = event.raised or raised
            if self.current_test and self.current_test not in event.tests:
                event.tests.append(self.current_test)


class FunctionIndex:
    """Maps frames (file, line, name) to functions: qualified names and policy plans.

    :param plans: returns the code object of every patched original function -> its plan.
    """

    def __init__(self, plans: Callable[[], dict[Any, Any]]) -> None:
        self.plans = plans
        self._by_file: dict[str, list[tuple[Any, str]]] = {}

    def _functions_in(self, file: str) -> list[tuple[Any, str]]:
        found = self._by_file.get(file)
        if found is not None:
            return found
        found = []
        for module in list(sys.modules.values()):
            if not isinstance(module, types.ModuleType):
                continue
            if getattr(module, "__file__", None) != file:
                continue
            for target in module_targets(module):
                found.append((target.func.__code__, target.display))
        for code, plan in self.plans().items():
            if code.co_filename == file:
                found.append((code, plan.target.display))
        self._by_file[file] = found
        return found

    def code_of(self, frame: Frame) -> tuple[Any, str] | None:
        name = frame.name
        resume = _RESUME.match(name)
        if resume:
            name = resume["name"]
        best = None
        for code, display in self._functions_in(frame.file):
            if code.co_name != name and name:
                continue
            last = max((ln for _, _, ln in code.co_lines() if ln is not None), default=0)
            if code.co_firstlineno <= frame.line <= last and (
                best is None or code.co_firstlineno > best[0].co_firstlineno
            ):
                best = (code, display)
        return best

    def name_of(self, frame: Frame) -> str:
        found = self.code_of(frame)
        if found is not None:
            return found[1]
        return f"{frame.file}:{frame.name or '?'}"

    def govern(self, stack: Iterable[Frame]) -> tuple[str | None, bool, str | None]:
        """(rule, allowed, region) for a break whose user stack is ``stack`` (outermost
        first): a fullgraph region forbids every break; otherwise the innermost function
        with an error_on_graph_break setting decides."""
        plans = self.plans()
        frames = [self.code_of(f) for f in stack]
        region = None
        region_plan = None
        for found in frames:
            if found is not None and found[0] in plans and plans[found[0]].compile is not None:
                region, region_plan = found[1], plans[found[0]]
                break
        if region_plan is not None and region_plan.compile.get("fullgraph"):
            return region_plan.rules.get("compile.fullgraph"), False, region
        for found in reversed(frames):
            if found is None or found[0] not in plans:
                continue
            plan = plans[found[0]]
            if plan.error_on_graph_break is not None:
                return plan.rules.get("error_on_graph_break"), not plan.error_on_graph_break, region
        return None, True, region


class ObservedBackend:
    """A region's compiler: counts its graphs, then hands them to the real backend.

    Attribute lookups go to the real backend, so Dynamo sees the same compiler it would by hand.
    """

    def __init__(self, observer: Observer, region: RegionStats, real: Any) -> None:
        self.observer = observer
        self.stats = region
        self.real = real

    def __call__(self, gm: Any, example_inputs: Any, **kwargs: Any) -> Any:
        self.observer.on_graph(self.stats)
        return self.real(gm, example_inputs, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)
