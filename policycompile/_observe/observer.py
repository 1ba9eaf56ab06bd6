"""Watching what torch.compile does under a policy: graphs per region, graph breaks attributed
to a function and the rule that governed it, recompiles with their reasons; audit mode."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Concatenate, ParamSpec

from .._torch import dynamo as _dynamo
from .._torch.logs import (
    CONSEQUENCES,
    GRAPH_BREAK_LOGGERS,
    LIMIT_FAILURE,
    LIMITED_FUNCTION,
    RECOMPILE_LIMIT_LOGGER,
    RESUME,
    STANCE_ERROR,
    Frame,
    parse_graph_break,
    short_reason,
    short_reason_text,
)
from .attribution import (
    WRAPPER_FILE_PREFIX,
    FunctionIndex,
    HandWritten,
    eager_frames,
    examples_dir,
    internal_dirs,
    is_stdlib,
    outer_frames,
    settings_at,
    without_prefix,
)
from .regions import ObservedBackend, RegionStats, govern
from .report import BreakReport, RegionReport
from .taps import LimitHandler, LogTap
from .traced import Traced

_RECORDED = "__policycompile_recorded__"

log = logging.getLogger("policycompile")
# Quiet by default: what was patched, skipped and why is logged here for those who ask (the
# package's own __init__ does not import logging: a child's start-up would pay for it).
if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
    log.addHandler(logging.NullHandler())

_P = ParamSpec("_P")


_Callback = Callable[Concatenate["Observer", _P], None]


def _guarded(what: str) -> Callable[[_Callback[_P]], _Callback[_P]]:
    """Run an observer callback (called from Dynamo, a logger, or a wrapper on an error's
    way out) so that a bug of ours never becomes the program's failure, nor goes unseen:
    it is recorded with :meth:`Observer.fail`."""

    def decorate(method: _Callback[_P]) -> _Callback[_P]:
        @functools.wraps(method)
        def guarded(self: Observer, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
            try:
                method(self, *args, **kwargs)
            except Exception as exc:
                self.fail(what, exc)

        return guarded

    return decorate


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
        self.breaks: dict[tuple[str, str, int, str], BreakReport] = {}
        #: what could not be observed (a bug of ours while attributing): the report says so
        self.failures: list[str] = []
        #: file name of an error_on_graph_break wrapper's code -> its Plan
        self.wrappers: dict[str, Any] = {}
        #: file name of a compile entry's trampoline (methods) -> its Plan
        self.entries: dict[str, Any] = {}
        #: what the wrappers built under this observer share (the engine's, per value)
        self.wrapper_globals: dict[Any, dict[str, Any]] = {}
        self._seen: set[tuple[tuple[str, str, int, str], int | None]] = set()
        self._stacks: dict[tuple[str, int], list[Frame]] = {}
        self._frame_regions: dict[int, RegionStats] = {}
        # (compile id, file, name) of the traced root of each raised break already recorded:
        # compile ids start again after torch._dynamo.reset(), Dynamo's metrics do not
        self._raised: set[tuple[str, str, str]] = set()
        self.current_test: str | None = None
        self.hand = HandWritten()
        self.taps = [LogTap(n, self.on_graph_break_log) for n in GRAPH_BREAK_LOGGERS]
        self.limit_handler = LimitHandler(self.on_recompile_limit)
        #: called (without the lock, often inside Dynamo) after each graph or break recorded
        self.listeners: list[Callable[[], object]] = []
        #: ``policycompile suggest`` asks for more of each graph (see ``Traced``)
        self.traced: Traced | None = None

    def install(self) -> None:
        for tap in self.taps:
            tap.install()
        logging.getLogger(RECOMPILE_LIMIT_LOGGER).addHandler(self.limit_handler)

    def uninstall(self) -> None:
        for tap in self.taps:
            tap.uninstall()
        logging.getLogger(RECOMPILE_LIMIT_LOGGER).removeHandler(self.limit_handler)

    def fail(self, what: str, exc: BaseException) -> None:
        """Record that ``what`` could not be done: the report lists it (under audit, the
        verdict fails), and the log says it at WARNING."""
        frames = traceback.extract_tb(exc.__traceback__)
        at = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
        text = f"could not {what}: {type(exc).__name__}: {exc} (in policycompile{at})"
        log.warning("%s", text)
        with self.lock:
            if text not in self.failures:
                self.failures.append(text)
        self._changed()

    def forget_after_fork(self) -> None:
        """In a process just forked from this one: forget what was counted, keeping the
        compile entries, so that it reports only what it compiles itself (its memory holds
        a copy of its parent's counts, which its parent reports). The failed compiles that
        Dynamo's metrics hold are its parent's too."""
        self.lock = threading.Lock()  # another thread may have held it at the fork
        for region in self.regions.values():
            vars(region).update(vars(RegionStats(region.name, region.plan)))
        self.breaks.clear()
        self.failures.clear()
        self._seen.clear()
        self._frame_regions.clear()
        self._raised = {(f.compile_id, f.code[0], f.code[1]) for f in _dynamo.failed_compiles()}

    def snapshot(self) -> tuple[tuple[RegionReport, ...], tuple[BreakReport, ...]]:
        """The regions that compiled something (or raised, or hit a limit) and the break
        sites, as report data."""
        self.record_failed_compiles()
        with self.lock:
            stats = [
                s
                for s in self.regions.values()
                if s.graphs or s.frames or s.failed or s.limit_hit or s.stance_errors
            ]
            breaks = tuple(self.breaks.values())
        regions = []
        for s in stats:
            again = self.recompiles(s)
            regions.append(
                RegionReport(
                    s.name,
                    s.rule,
                    len(s.frames),
                    s.graphs,
                    len(again),
                    tuple(again),
                    len(s.failed),
                    s.limit_hit,
                    tuple(sorted(s.inner)),
                    stance_errors=s.stance_errors,
                )
            )
        return tuple(regions), breaks

    @_guarded("attribute a recompile_limit warning to its compile entry")
    def on_recompile_limit(self, function: str) -> None:
        """Dynamo warned that ``'name' (file:line)`` hit recompile_limit: from then on it
        runs that frame eagerly. Flag the compile entry it belongs to."""
        found = LIMITED_FUNCTION.match(function)
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

    @_guarded("count a graph")
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
        classes = {cls for _path, cls in _dynamo.module_stack(gm)}
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
        resume = RESUME.match(name)
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
    @_guarded("attribute a graph break")
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
        eager = eager_frames(outer_frames(sys._getframe(1)))
        stack = without_prefix(stack, eager)
        self.record_break(
            stack,
            reason,
            frame_id=cid[0] if cid else None,
            raised=False,
            region=region,
            eager=eager,
        )

    @_guarded("attribute a graph break that raised")
    def record_exception(self, exc: BaseException) -> None:
        """Record a graph break that raised (fullgraph or error_on_graph_break), once.

        Policy wrappers call this as the error passes through them; ``policycompile run`` and
        the pytest plugin call it with the exception that reached them. Other exceptions are
        ignored.
        """
        if getattr(exc, _RECORDED, False):
            return
        stance = STANCE_ERROR.match(str(exc)) if isinstance(exc, RuntimeError) else None
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
        outer = [f for f in outer_frames(caller) if f not in tb_frames]
        eager = eager_frames([*outer, *tb_frames])
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

    @_guarded("read the failed compiles Dynamo recorded")
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
            if failed.reason.startswith(LIMIT_FAILURE):
                continue  # not a break: Dynamo runs the frame eagerly (see on_recompile_limit)
            region = self._region_of_code(failed.code)
            if region is None:
                continue
            if self.audit and not region.program:
                continue  # nothing of the policy raises in audit mode; the program's own may
            site = Frame(failed.file, failed.line, "")
            entered = self.index.entered([site], self.wrappers)
            settings = settings_at(
                [], [site], entered, self.wrappers, self.hand, around=[region.plan]
            )
            if govern(region, settings)[1]:
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
        if reason.startswith(CONSEQUENCES):
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
        in_force = settings_at(eager, stack, entered, self.wrappers, self.hand)
        rule, allowed, where = govern(region, in_force)
        if not self.audit:
            allowed = not raised  # Dynamo itself decided
        key = (function, site.file, site.line, reason)
        with self.lock:
            seen = self.breaks.get(key)
            if seen is None:
                name = region.name if region is not None else None
                seen = BreakReport(
                    function,
                    site.file,
                    site.line,
                    reason,
                    rule,
                    True,
                    name,
                    0,
                    False,
                    (),
                    named=named,
                    under=where if where != function else None,
                )
            counted = (key, frame_id) not in self._seen or frame_id is None
            self._seen.add((key, frame_id))
            test = self.current_test
            self.breaks[key] = replace(
                seen,
                count=seen.count + counted,
                raised=seen.raised or raised,
                allowed=seen.allowed and allowed,
                tests=seen.tests if not test or test in seen.tests else (*seen.tests, test),
            )
        self._changed()

    def _named(self, frames: list[Frame], around: Any) -> str | None:
        """The innermost of ``frames`` in a function a rule can name: one the index knows
        by its qualified name (not a closure or lambda), outside torch, policycompile and the
        standard library (a rule on ``contextlib`` would patch every context manager of the
        process, and a wrapper there adds a graph break of its own): the nearest frame of the
        program's own code, or of the library the break is in."""
        skip = internal_dirs()
        for frame in reversed(frames):
            if frame.file.startswith(skip) and not frame.file.startswith(examples_dir()):
                continue
            if is_stdlib(frame.file):
                continue
            if self.index.code_of(frame) is not None:
                return self.index.name_of(frame, around)
        return None

    def _changed(self) -> None:
        """Tell the listeners that something was recorded (a child process saves its report
        then: it may be killed before it can at exit, as DataLoader workers are)."""
        for listener in self.listeners:
            listener()
