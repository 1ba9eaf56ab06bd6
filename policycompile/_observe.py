"""Watching what torch.compile does under a policy: graphs per region, graph breaks attributed
to a function and the rule that governed it, recompiles with their reasons; audit mode."""

from __future__ import annotations

import ast
import functools
import logging
import os
import re
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import _dynamo
from ._targets import module_targets

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>\S+)', re.M)
_WHERE = re.compile(r"in user code at (?P<file>.+):(?P<line>\d+)")
_RESUME = re.compile(r"^torch_dynamo_resume_in_(?P<name>.+)_at_\d+$")
#: Every policy wrapper's code has a file name starting with this (see ``_patch.label``).
WRAPPER_FILE_PREFIX = "<policycompile "
_CONSEQUENCES = ("Failed to handle graph break gracefully",)

_RECORDED = "__policycompile_recorded__"
_LIMIT = "Dynamo recompile limit exceeded"
_FUNCTION = re.compile(r"^'(?P<name>.+)' \((?P<file>.+):(?P<line>\d+)\)$")


@dataclass(frozen=True)
class Frame:
    """One frame of a traced stack."""

    file: str
    line: int
    name: str


#: torch.compiler.set_stance("fail_on_recompile")'s error (torch/_dynamo/eval_frame.py)
_STANCE_ERROR = re.compile(
    r"Detected recompile when torch\.compile stance is 'fail_on_recompile'\. "
    r"filename: '(?P<file>[^']*)', function name: '(?P<name>[^']*)', line number: (?P<line>\d+)"
)


@dataclass
class RegionStats:
    """What happened under one compile entry."""

    name: str
    plan: Any  # the compile entry's Plan
    frames: set[int] = field(default_factory=set)
    graphs: int = 0
    compiles: set[tuple[int, int]] = field(default_factory=set)  # (frame id, compile id)
    failed: set[str] = field(default_factory=set)  # compiles that raised ("frame/attempt")
    limit_hit: bool = False  # a frame hit recompile_limit: Dynamo runs it eagerly from then on
    inner: set[str] = field(default_factory=set)  # other compile entries traced inside it
    stance_errors: int = 0  # calls that the stance `fail_on_recompile` stopped

    @property
    def rule(self) -> str | None:
        rule: str | None = self.plan.rules.get("compile")
        return rule

    @property
    def fullgraph(self) -> bool:
        return bool(self.plan.compile.get("fullgraph"))


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
    #: the innermost function on the break's stack that a policy rule can name (outside
    #: torch): where ``policycompile suggest`` puts the break's rule
    named: str | None = None


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


class _LimitHandler(logging.Handler):
    """Hears Dynamo's warning that a frame hit recompile_limit (nothing else of that logger)."""

    def __init__(self, observer: Observer) -> None:
        super().__init__(logging.WARNING)
        self.observer = observer

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if (
            isinstance(record.msg, str)
            and record.msg.startswith(_dynamo.RECOMPILE_LIMIT_MESSAGE)
            and isinstance(args, tuple)
            and len(args) > 2
        ):
            self.observer.on_recompile_limit(str(args[2]))


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
    return short_reason_text(str(exc)) if str(exc).strip() else type(exc).__name__


class Observer:
    """Collects graphs, breaks and recompiles while a policy is applied.

    A graph break is attributed by the frames on its stack: the eager Python frames around
    the compile, then the frames Dynamo traced. Policy wrappers are recognised by their code's
    file name (``wrappers``, ``entries``), so attribution goes by the wrapper, and so by the
    target and rule, even where targets share a code object.

    :param index: maps frames to qualified names.
    :param audit: whether the policy's wrappers were built relaxed; then whether a break is
        allowed is decided from the policy, else Dynamo decided it (a break it logged was
        allowed, one it raised was not).
    """

    def __init__(self, index: FunctionIndex, *, audit: bool = False) -> None:
        self.index = index
        self.audit = audit
        self.lock = threading.Lock()
        self.regions: dict[str, RegionStats] = {}
        self.breaks: dict[tuple[str, str, int, str], BreakEvent] = {}
        #: file name of an error_on_graph_break wrapper's code -> its Plan
        self.wrappers: dict[str, Any] = {}
        #: file name of a compile entry's trampoline (methods) -> its Plan
        self.entries: dict[str, Any] = {}
        self._seen: set[tuple[tuple[str, str, int, str], int | None]] = set()
        self._stacks: dict[tuple[str, int], list[Frame]] = {}
        self._frame_regions: dict[int, RegionStats] = {}
        # (compile id, file, name) of the traced root of each raised break already recorded:
        # compile ids start again after torch._dynamo.reset(), Dynamo's metrics do not
        self._raised: set[tuple[str, str, str]] = set()
        self.current_test: str | None = None
        self.hand = HandWritten()
        self.taps = [LogTap(n, self.on_graph_break_log) for n in _dynamo.GRAPH_BREAK_LOGGERS]
        self.limit_handler = _LimitHandler(self)
        #: called (without the lock, often inside Dynamo) after each graph or break recorded
        self.listeners: list[Callable[[], object]] = []
        #: ``policycompile suggest`` asks for more of each graph (see ``Traced``)
        self.traced: Traced | None = None

    def install(self) -> None:
        for tap in self.taps:
            tap.install()
        logging.getLogger(_dynamo.RECOMPILE_LIMIT_LOGGER).addHandler(self.limit_handler)

    def uninstall(self) -> None:
        for tap in self.taps:
            tap.uninstall()
        logging.getLogger(_dynamo.RECOMPILE_LIMIT_LOGGER).removeHandler(self.limit_handler)

    def on_recompile_limit(self, function: str) -> None:
        """Dynamo warned that ``'name' (file:line)`` hit recompile_limit: from then on it
        runs that frame eagerly. Flag the compile entry it belongs to."""
        found = _FUNCTION.match(function)
        if found is None:
            return
        region = self._region_of_code((found["file"], found["name"], int(found["line"])))
        if region is not None:
            with self.lock:
                region.limit_hit = True

    # -- regions
    def region(self, name: str, plan: Any) -> RegionStats:
        with self.lock:
            stats = self.regions.get(name)
            if stats is None:
                stats = self.regions[name] = RegionStats(name, plan)
            return stats

    def on_graph(self, region: RegionStats, gm: Any = None) -> None:
        cid = _dynamo.current_compile_id()
        inner = self._entries_in(region, gm) if gm is not None else set()
        if self.traced is not None:
            target = region.plan.target
            self.traced.add(region.name, target.owner if target.is_forward else None, gm)
        with self.lock:
            region.graphs += 1
            region.inner |= inner
            if cid is not None:
                region.frames.add(cid[0])
                region.compiles.add(cid)
                self._frame_regions[cid[0]] = region
        self._changed()

    def _entries_in(self, region: RegionStats, gm: Any) -> set[str]:
        """The other compile entries (``nn.Module`` forwards) whose modules this graph traced
        through: torch ignores their own options (fullgraph) inside this region."""
        classes: set[Any] = set()
        for node in getattr(getattr(gm, "graph", None), "nodes", ()):
            for _path, cls in (node.meta.get("nn_module_stack") or {}).values():
                classes.add(cls)
        if not classes:
            return set()
        with self.lock:
            regions = list(self.regions.values())
        return {
            r.name
            for r in regions
            if r is not region and r.plan.target.is_forward and r.plan.target.owner in classes
        }

    def recompiles(self, region: RegionStats) -> list[str]:
        """The region's recompiles (frames compiled again), each with its guard failure."""
        reasons = _dynamo.recompile_reasons()
        with self.lock:
            again = sorted(c for c in region.compiles if c[1] > 0)
        return [reasons.get(c, "reason no longer known (torch._dynamo.reset)") for c in again]

    def _tracing_region(self) -> RegionStats | None:
        backend = _dynamo.tracing_backend(lambda b: isinstance(b, ObservedBackend))
        return backend.stats if isinstance(backend, ObservedBackend) else None

    def _region_of_code(self, code: tuple[str, str, int]) -> RegionStats | None:
        """The compile entry whose function has this code (or that a resume function
        Dynamo made continues), when exactly one has it."""
        file, name, first = code
        resume = _RESUME.match(name)
        with self.lock:
            regions = list(self.regions.values())
        found = []
        for region in regions:
            own = region.plan.target.func.__code__
            if own.co_filename != file:
                continue
            if resume is None and (own.co_name, own.co_firstlineno) == (name, first):
                found.append(region)
            elif resume is not None and own.co_name == resume["name"]:
                lines = [ln for _, _, ln in own.co_lines() if ln is not None]
                if lines and min(lines) <= first <= max(lines):
                    found.append(region)
        return found[0] if len(found) == 1 else None

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
        region = self._tracing_region()
        if region is not None and cid is not None:
            with self.lock:
                self._frame_regions[cid[0]] = region
        eager = _eager(_outer_frames(sys._getframe(1)))
        stack = _without_prefix(stack, eager)
        self.record_break(
            stack,
            reason,
            frame_id=cid[0] if cid else None,
            raised=False,
            region=region,
            eager=eager,
        )

    def record_exception(self, exc: BaseException) -> None:
        """Record a graph break that raised (fullgraph or error_on_graph_break), once.

        Policy wrappers call this as the error passes through them; ``policycompile run`` and
        the pytest plugin call it with the exception that reached them. Other exceptions are
        ignored.
        """
        if getattr(exc, _RECORDED, False):
            return
        stance = _STANCE_ERROR.match(str(exc)) if isinstance(exc, RuntimeError) else None
        if stance is not None:
            self._record_stance_error(exc, stance)
            return
        if not _dynamo.is_graph_break_error(exc):
            return
        try:
            setattr(exc, _RECORDED, True)
        except AttributeError:
            return
        stack = [Frame(*f) for f in _dynamo.exception_stack(exc)]
        if not stack:
            return
        tb_frames = []
        tb = exc.__traceback__
        while tb is not None:
            tb_frames.append(tb.tb_frame)
            tb = tb.tb_next
        caller = sys._getframe(1)
        outer = [f for f in _outer_frames(caller) if f not in tb_frames]
        eager = _eager([*outer, *tb_frames])
        cid = _dynamo.exception_compile_id(exc)
        region = self._raised_region(cid, eager, stack)
        if cid is not None:
            with self.lock:
                self._raised.add((cid, stack[0].file, stack[0].name))
                if region is not None:
                    region.failed.add(cid)
        self.record_break(
            stack, short_reason(exc), frame_id=None, raised=True, region=region, eager=eager
        )

    def _record_stance_error(self, exc: BaseException, found: re.Match[str]) -> None:
        """``set_stance("fail_on_recompile")`` stopped a compile: not a graph break, but the
        region's entry refused to compile (again); counted on the region, once."""
        try:
            setattr(exc, _RECORDED, True)
        except AttributeError:
            return
        code = (found["file"], found["name"], int(found["line"]))
        region = self._region_of_code(code)
        if region is not None:
            with self.lock:
                region.stance_errors += 1
            self._changed()

    def _raised_region(
        self, cid: str | None, eager: list[Frame], stack: list[Frame]
    ) -> RegionStats | None:
        """The compile entry a raised break belongs to: the method trampoline that called the
        compiled function, else the entry whose function is the traced root, else the region
        last seen compiling that frame id (ids start again after ``torch._dynamo.reset()``,
        so that comes last)."""
        for frame in reversed(eager):
            plan = self.entries.get(frame.file)
            if plan is not None:
                return self.regions.get(plan.target.display)
        found: RegionStats | None = self.index.region_of_frame(stack[0], self._region_of_code)
        if found is not None:
            return found
        if cid is not None and cid.split("/")[0].isdigit():
            with self.lock:
                return self._frame_regions.get(int(cid.split("/")[0]))
        return None

    def record_failed_compiles(self) -> None:
        """Add the graph breaks that raised where policycompile never saw the exception (user
        code caught it before it reached a policy wrapper), from Dynamo's record of failed
        compiles (the last 64).

        Dynamo records, in the same way, failures it recovered from itself by running the
        frame eagerly; it raises to the user exactly when the break is forbidden there. So a
        failure counts when the compile entry is fullgraph, or when the setting in force at
        the break (the entry's own, then that of the function the break is in, then what the
        source says by hand) forbids it. Nothing of the policy raises in audit mode. A frame
        that hit ``recompile_limit`` is not a break.
        """
        for failed in _dynamo.failed_compiles():
            if failed.reason.startswith(_LIMIT):
                continue  # not a break: Dynamo runs the frame eagerly (see on_recompile_limit)
            region = self._region_of_code(failed.code)
            if region is None:
                continue
            if self.audit:
                continue  # nothing of the policy raises in audit mode
            site = Frame(failed.file, failed.line, "")
            entered = self.index.entered([site], self.wrappers)
            settings = self._settings([], [site], entered, around=[region.plan])
            if self.govern(region, settings)[1]:
                continue
            key = (failed.compile_id, failed.code[0], failed.code[1])
            with self.lock:
                if key in self._raised:
                    continue
                self._raised.add(key)
                region.failed.add(failed.compile_id)
            reason = short_reason_text(failed.reason)
            self.record_break([site], reason, frame_id=None, raised=True, region=region, eager=[])

    def record_break(
        self,
        stack: list[Frame],
        reason: str,
        *,
        frame_id: int | None,
        raised: bool,
        region: RegionStats | None,
        eager: list[Frame],
    ) -> None:
        """Record one break: ``eager`` are the Python frames around the compile (outermost
        first), ``stack`` the frames Dynamo traced, down to the break."""
        if reason.startswith(_CONSEQUENCES):
            return  # Dynamo giving up on a caller because of a break already recorded inside
        user = [f for f in stack if not f.file.startswith(WRAPPER_FILE_PREFIX)]
        if not user:
            return
        site = user[-1]
        entered = self.index.entered(stack, self.wrappers)
        plans = [p for p in entered if p is not None]
        function = self.index.name_of(site, plans[-1] if plans else None)
        # a break in a lambda or closure: the innermost function a rule can name on its
        # stack (Dynamo's stack starts at the program's frames around the compile)
        named = self._named(user, plans[-1] if plans else None)
        rule, allowed = self.govern(region, self._settings(eager, stack, entered))
        if not self.audit:
            allowed = not raised  # Dynamo itself decided
        key = (function, site.file, site.line, reason)
        with self.lock:
            event = self.breaks.get(key)
            if event is None:
                name = region.name if region is not None else None
                event = BreakEvent(function, site.file, site.line, reason, rule, allowed, name)
                event.named = named
                self.breaks[key] = event
            if (key, frame_id) not in self._seen or frame_id is None:
                self._seen.add((key, frame_id))
                event.count += 1
            event.raised = event.raised or raised
            event.allowed = event.allowed and allowed
            if self.current_test and self.current_test not in event.tests:
                event.tests.append(self.current_test)
        self._changed()

    def _named(self, frames: list[Frame], around: Any) -> str | None:
        """The innermost of ``frames`` in a function a rule can name: one the index knows
        by its qualified name (not a closure or lambda), outside torch and policycompile."""
        skip = _internal_dirs()
        for frame in reversed(frames):
            if frame.file.startswith(skip) and not frame.file.startswith(_examples_dir()):
                continue
            if self.index.code_of(frame) is not None:
                return self.index.name_of(frame, around)
        return None

    def _changed(self) -> None:
        """Tell the listeners that something was recorded (a child process saves its report
        then: it may be killed before it can at exit, as DataLoader workers are)."""
        for listener in self.listeners:
            listener()

    def _settings(
        self,
        eager: list[Frame],
        stack: list[Frame],
        entered: list[Any],
        *,
        around: Iterable[Any] = (),
    ) -> list[tuple[bool, str | None]]:
        """Every error_on_graph_break in force at the break, outermost first, as (value, rule):
        the policy's wrappers (rule "pattern (file:line)") and what the source says by hand
        (rule None), around the compile and then along the traced frames.

        :param around: plans known to be in force around the compile where its eager frames
            are not at hand (a failed compile read back from Dynamo's metrics).
        """
        out: list[tuple[bool, str | None]] = []

        def policy(plan: Any) -> None:
            if plan is not None and plan.error_on_graph_break is not None:
                out.append((plan.error_on_graph_break, plan.rules.get("error_on_graph_break")))

        for plan in around:
            policy(plan)

        for frame in eager:
            if frame.file.startswith(WRAPPER_FILE_PREFIX):
                policy(self.wrappers.get(frame.file))
            else:
                out.extend((v, None) for v in self.hand.at(frame))
        for frame, plan in zip(stack, entered, strict=True):
            policy(plan)
            if not frame.file.startswith(WRAPPER_FILE_PREFIX):
                out.extend((v, None) for v in self.hand.at(frame))
        return out

    @staticmethod
    def govern(
        region: RegionStats | None, settings: list[tuple[bool, str | None]]
    ) -> tuple[str | None, bool]:
        """(rule, allowed) for a break under ``region`` with the error_on_graph_break
        ``settings`` in force (outermost first): a fullgraph region forbids every break;
        otherwise the innermost setting decides, as the flag would."""
        if region is not None and region.fullgraph:
            return region.plan.rules.get("compile.fullgraph"), False
        if settings:
            value, rule = settings[-1]
            return rule, not value
        return None, True


def short_reason_text(text: str) -> str:
    """The first line of a Dynamo error text that says what the break was."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Encountered graph break when")]
    return lines[0] if lines else "graph break"


def _outer_frames(frame: types.FrameType | None) -> list[types.FrameType]:
    """The Python frames from the outermost down to ``frame``."""
    out = []
    while frame is not None:
        out.append(frame)
        frame = frame.f_back
    out.reverse()
    return out


def _eager(frames: Iterable[types.FrameType]) -> list[Frame]:
    """The Python frames around a compile, outermost first: the program's and the policy's
    wrappers, without torch's own, policycompile's and logging's (a compiled region may call
    a wrapped function eagerly, which compiles again: its wrapper sits between Dynamo's
    frames)."""
    skip = _internal_dirs()
    out = []
    for f in frames:
        file = f.f_code.co_filename
        if file.startswith(skip):
            continue
        out.append(Frame(file, f.f_lineno or 0, f.f_code.co_name))
    return out


@functools.cache
def _internal_dirs() -> tuple[str, ...]:
    torch = sys.modules.get("torch")
    torch_dir = os.path.dirname(getattr(torch, "__file__", None) or "/nonexistent/")
    return (
        torch_dir + os.sep,
        os.path.dirname(__file__) + os.sep,
        os.path.dirname(logging.__file__) + os.sep,
    )


@functools.cache
def _examples_dir() -> str:
    """policycompile's bundled example programs: user code, although inside the package."""
    return os.path.join(os.path.dirname(__file__), "examples") + os.sep


class Traced:
    """What ``policycompile suggest`` learns from each graph: the source files Dynamo traced
    (``TracingContext.traced_code``) and, per compile entry, the ``nn.Module`` classes that
    ran in it and how many instances of each it holds.

    A graph shows only the instances traced into it: where a graph break makes a layer a
    frame of its own, every layer after the first reuses that frame's code and is never
    traced. So where the entry is a module's forward, the instances are counted in the
    entry's module itself (``named_modules``), for each class seen running in its graphs;
    an entry that is a plain function counts the instances its graphs traced.
    """

    def __init__(self) -> None:
        self.files: set[str] = set()
        #: region -> class -> {path: None} of its instances, in the entry's own module
        self.held: dict[str, dict[type, dict[str, None]]] = {}
        #: region -> classes seen running (in a graph, or as a compiled frame's ``self``)
        self.seen: dict[str, set[type]] = {}
        #: region -> class -> paths of the instances its graphs traced (entries without a
        #: module of their own)
        self.traced: dict[str, dict[type, set[str]]] = {}

    def add(self, region: str, entry_class: Any, gm: Any) -> None:
        """Learn from one graph of ``region``, whose entry is ``entry_class``'s forward
        (None for a function)."""
        import torch
        from torch._guards import TracingContext

        context = TracingContext.try_get()
        self.files.update(c.co_filename for c in getattr(context, "traced_code", None) or ())
        seen = self.seen.setdefault(region, set())
        root = _frame_self()
        if isinstance(root, torch.nn.Module):
            seen.add(type(root))
            if entry_class is not None and type(root) is entry_class and region not in self.held:
                held: dict[type, dict[str, None]] = {}
                for path, module in root.named_modules(remove_duplicate=True):
                    held.setdefault(type(module), {})[path] = None
                self.held[region] = held
        traced = self.traced.setdefault(region, {})
        for node in getattr(getattr(gm, "graph", None), "nodes", ()):
            for path, cls in (node.meta.get("nn_module_stack") or {}).values():
                if isinstance(cls, type):
                    seen.add(cls)
                    traced.setdefault(cls, set()).add(_short(str(path)))

    def instances(self, region: str) -> dict[type, list[str]]:
        """Class -> the paths of its instances under ``region``, for the classes seen there."""
        seen = self.seen.get(region, set())
        held = self.held.get(region)
        if held is not None:
            return {cls: list(held[cls]) for cls in seen if cls in held}
        return {cls: sorted(paths) for cls, paths in self.traced.get(region, {}).items()}


def _frame_self() -> Any:
    """``self`` of the frame Dynamo is compiling, if it has one."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
    except (ImportError, AttributeError):
        return None
    return (getattr(tx, "f_locals", None) or {}).get("self")


def _short(path: str) -> str:
    """``L['self'].transformer.h.0`` as ``transformer.h.0``."""
    return re.sub(r"^L\['[^']*'\]\.?", "", path)


def _without_prefix(stack: list[Frame], eager: list[Frame]) -> list[Frame]:
    """``stack`` without the frames above Dynamo that its log message repeats from ``eager``."""
    keys = [(f.file, f.line, f.name) for f in eager]
    j = i = 0
    while i < len(stack):
        key = (stack[i].file, stack[i].line, stack[i].name)
        try:
            j = keys.index(key, j) + 1
        except ValueError:
            break
        i += 1
    return stack[i:]


def _chain(func: Any) -> Iterator[Any]:
    """``func`` and what it wraps (``__wrapped__``), as far as plain functions go."""
    seen: set[int] = set()
    while isinstance(func, types.FunctionType) and id(func) not in seen:
        seen.add(id(func))
        yield func
        func = vars(func).get("__wrapped__")


@dataclass(frozen=True)
class _Def:
    """A function in a source file, with the error_on_graph_break settings written in it."""

    name: str
    start: int
    end: int
    decorators: tuple[bool, ...]  # @error_on_graph_break(v), outermost first
    blocks: tuple[tuple[int, int, bool], ...]  # with error_on_graph_break(v): (first, last, v)


class HandWritten:
    """The ``error_on_graph_break`` settings written by hand in the source: decorators and
    ``with`` blocks with a literal value. Audit mode needs them to tell, as a normal run
    would, whether a break under the policy's setting is allowed by a hand-written one
    closer to it. Files are parsed once, on the first break in them; torch's are skipped.
    """

    def __init__(self) -> None:
        self._files: dict[str, list[_Def]] = {}

    def at(self, frame: Frame) -> list[bool]:
        """The hand-written settings in force at ``frame``'s line, outermost first."""
        defs = self._files.get(frame.file)
        if defs is None:
            defs = self._files[frame.file] = _parse_settings(frame.file)
        if not defs:
            return []
        name = frame.name
        resume = _RESUME.match(name)
        if resume:
            name = resume["name"]
        best = None
        for d in defs:
            inside = d.start <= frame.line <= d.end and d.name == name
            if inside and (best is None or d.start >= best.start):
                best = d
        if best is None:
            return []
        blocks = [v for first, last, v in best.blocks if first <= frame.line <= last]
        return [*best.decorators, *blocks]


def _literal_setting(node: ast.expr) -> bool | None:
    """v for a call ``error_on_graph_break(v)`` (any prefix) with a literal bool."""
    if not isinstance(node, ast.Call) or len(node.args) != 1 or node.keywords:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    arg = node.args[0]
    if name == "error_on_graph_break" and isinstance(arg, ast.Constant):
        return arg.value if isinstance(arg.value, bool) else None
    return None


def _parse_settings(file: str) -> list[_Def]:
    if file.startswith(("<", *_internal_dirs())):
        return []
    try:
        with open(file, "rb") as f:
            source = f.read()
        if b"error_on_graph_break" not in source:
            return []
        tree = ast.parse(source, file)
    except (OSError, SyntaxError, ValueError):
        return []
    out: list[_Def] = []

    def visit(node: ast.AST, name: str, start: int, end: int, decorators: tuple[bool, ...]) -> None:
        blocks: list[tuple[int, int, bool]] = []
        todo = list(ast.iter_child_nodes(node))
        while todo:
            child = todo.pop()
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found = (_literal_setting(d) for d in child.decorator_list)
                decs = tuple(v for v in found if v is not None)
                visit(child, child.name, child.lineno, child.end_lineno or child.lineno, decs)
                continue
            if isinstance(child, ast.Lambda | ast.ClassDef):
                if isinstance(child, ast.ClassDef):
                    todo.extend(child.body)
                continue
            if isinstance(child, ast.With | ast.AsyncWith):
                for item in child.items:
                    value = _literal_setting(item.context_expr)
                    if value is not None:
                        blocks.append((child.lineno, child.end_lineno or child.lineno, value))
            todo.extend(ast.iter_child_nodes(child))
        blocks.sort()
        out.append(_Def(name, start, end, decorators, tuple(blocks)))

    visit(tree, "<module>", 1, 10**9, ())
    return out


class FunctionIndex:
    """Maps frames (file, line, name) to the qualified names of functions.

    Every function a module defines is indexed by its code object, and so is every function
    it wraps (``__wrapped__``): a break inside ``@functools.wraps``-decorated code is named
    after the decorated function. Where several names share one code object (the decorator's
    own wrapper), the policy wrapper around the frame decides.

    :param plans: returns the plans of every patched target.
    """

    def __init__(self, plans: Callable[[], Iterable[Any]]) -> None:
        self.plans = plans
        self._by_file: dict[str, dict[Any, list[str]]] = {}
        self._heads_cache: dict[Any, list[tuple[Any, tuple[Any, ...]]]] = {}
        self._heads_for = -1

    def _functions_in(self, file: str) -> dict[Any, list[str]]:
        found = self._by_file.get(file)
        if found is not None:
            return found
        found = {}

        def add(func: Any, display: str) -> None:
            for f in _chain(func):
                if f.__code__.co_filename == file:
                    names = found.setdefault(f.__code__, [])
                    if display not in names:
                        names.append(display)

        for plan in self.plans():
            add(plan.target.func, plan.target.display)
        for module in list(sys.modules.values()):
            if isinstance(module, types.ModuleType) and getattr(module, "__file__", None) == file:
                for target in module_targets(module):
                    add(target.func, target.display)
        self._by_file[file] = found
        return found

    def code_of(self, frame: Frame) -> tuple[Any, list[str]] | None:
        name = frame.name
        resume = _RESUME.match(name)
        if resume:
            name = resume["name"]
        best = None
        for code, names in self._functions_in(frame.file).items():
            if code.co_name != name and name:
                continue
            last = max((ln for _, _, ln in code.co_lines() if ln is not None), default=0)
            if code.co_firstlineno <= frame.line <= last and (
                best is None or code.co_firstlineno > best[0].co_firstlineno
            ):
                best = (code, names)
        return best

    def name_of(self, frame: Frame, around: Any = None) -> str:
        """The qualified name of the function ``frame`` is in; ``around`` is the plan of the
        innermost policy wrapper above it, which decides between names sharing a code."""
        found = self.code_of(frame)
        if found is None:
            return f"{frame.file}:{frame.name or '?'}"
        code, names = found
        if len(names) > 1 and around is not None:
            chain = {f.__code__ for f in _chain(around.target.func)}
            if code in chain and around.target.display in names:
                return str(around.target.display)
        return names[0]

    def _heads(self) -> dict[Any, list[tuple[Any, tuple[Any, ...]]]]:
        """Code of each patched target's function -> (plan, codes of its ``__wrapped__``
        chain). Several plans share a code where one decorator's wrapper serves many."""
        plans = list(self.plans())
        if len(plans) != self._heads_for:
            heads: dict[Any, list[tuple[Any, tuple[Any, ...]]]] = {}
            for plan in plans:
                chain = tuple(f.__code__ for f in _chain(plan.target.func))
                heads.setdefault(chain[0], []).append((plan, chain))
            self._heads_cache, self._heads_for = heads, len(plans)
        return self._heads_cache

    def entered(self, stack: list[Frame], wrappers: dict[str, Any]) -> list[Any]:
        """For each frame of the traced ``stack`` (outermost first), the plan of the patched
        target the frame enters, or None.

        A frame of a policy wrapper names its plan. Dynamo leaves some wrapper frames out of
        its stacks (a wrapper that forwards ``*args, **kwargs``), so a frame running a
        patched target's own function counts too; where several targets share that code
        (one ``functools.wraps`` decorator's wrapper), the target whose ``__wrapped__``
        chain matches the frames that follow is the one entered.
        """
        heads = self._heads()
        codes = [None if f.file in wrappers else self.code_of(f) for f in stack]
        out: list[Any] = []
        chain: tuple[Any, ...] = ()  # the __wrapped__ chain being walked, and where in it
        at = 0
        for i, frame in enumerate(stack):
            if frame.file in wrappers:
                out.append(wrappers[frame.file])
                chain, at = (), 0
                continue
            found = codes[i]
            if found is not None and at + 1 < len(chain) and chain[at + 1] is found[0]:
                out.append(None)  # the decorated function, called by its decorator's wrapper
                at += 1
                continue
            cands = heads.get(found[0]) if found is not None else None
            if not cands:
                out.append(None)
                chain, at = (), 0
                continue

            def follows(chain: tuple[Any, ...], start: int = i) -> int:
                n = 0
                for k, code in enumerate(chain):
                    got = codes[start + k] if start + k < len(codes) else None
                    if got is None or got[0] is not code:
                        break
                    n += 1
                return n

            best, chain = max(cands, key=lambda c: follows(c[1]))
            at = 0
            # the wrapper frame and the function it called are one entry
            out.append(None if i and out[i - 1] is best else best)
        return out

    def region_of_frame(self, frame: Frame, by_code: Callable[[tuple[str, str, int]], Any]) -> Any:
        """The region whose compile entry is the function of ``frame`` (a traced root)."""
        found = self.code_of(frame)
        if found is None:
            return None
        code = found[0]
        return by_code((code.co_filename, code.co_name, code.co_firstlineno))


class ObservedBackend:
    """A region's compiler: counts its graphs, then hands them to the real backend.

    Attribute lookups go to the real backend, so Dynamo sees the same compiler it would by hand.
    """

    def __init__(self, observer: Observer, region: RegionStats, real: Any) -> None:
        self.observer = observer
        self.stats = region
        self.real = real

    def __call__(self, gm: Any, example_inputs: Any, **kwargs: Any) -> Any:
        self.observer.on_graph(self.stats, gm)
        return self.real(gm, example_inputs, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)
