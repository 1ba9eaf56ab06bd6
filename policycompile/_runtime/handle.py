"""The applied policy: the handle that patches modules, journals what it did, rebinds
aliases, reports, and undoes."""

from __future__ import annotations

import logging
import threading
import types
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from .._engine import codes
from .._engine import hook as _hook
from .._engine.commit import Patched, commit, settle_definitions
from .._engine.journal import MISSING, AliasRecord, HookRecord, Record, SlotRecord
from .._engine.modules import ModulePlan, iter_plans, plan_module
from .._engine.plan import Plan, wrapped_as
from .._engine.rewrite import DefiningLoader, rewritable
from .._engine.targets import (
    ClassState,
    class_state,
    is_class,
    is_internal,
    module_functions,
    module_targets,
    policy_module_name,
    same_state,
)
from .._engine.wrappers import disarm
from .._errors import PolicyWarning
from .._observe.attribution import FunctionIndex
from .._observe.observer import Observer
from .._observe.report import Report
from .._policy.policy import Policy
from .._policy.tree import Rule, RuleRef
from .._torch import catalog
from .mainmodule import unpatched_main
from .ranks import Ranks, digest
from .rebind import Rebinding, loaded_modules, wrapper_ids

log = logging.getLogger("policycompile")

Entry = Record | AliasRecord | SlotRecord


class PolicyHandle(Rebinding):
    """An applied policy. ``undo()`` restores everything; also a context manager."""

    def __init__(
        self,
        policy: Policy,
        applied_at: str,
        *,
        audit: bool = False,
        rank_check: bool = True,
        hold: frozenset[str] = frozenset(),
        on_undone: Callable[[PolicyHandle], object] = lambda handle: None,
    ) -> None:
        self.policy = policy
        self._on_undone = on_undone
        self.applied_at = applied_at
        self.audit = audit
        #: modules (by ``__name__``) not patched until released: a main module that another
        #: runner is still executing (multiprocessing's ``__mp_main__`` in a child)
        self.hold = set(hold)
        self.ranks = Ranks(digest(policy, audit=audit), check=rank_check)
        self.observer = Observer(FunctionIndex(self._plans, module_functions), audit=audit)
        self._lock = threading.RLock()
        # Every patch and alias, in the order made: undo walks it backwards, removing each
        # entry only once it is restored, so an interrupted undo can be finished.
        self._journal: list[Entry] = []
        self._restoring: Entry | None = None
        self._wrappers: dict[int, Record] = {}  # id(wrapper) -> the record that made it
        self._wrapper_ids: dict[int, Any] = {}  # id(wrapper) -> wrapper
        self._slots: set[tuple[int, Any, int]] = set()
        self._matched: set[Rule] = set()
        self._said: set[str] = set()  # patterns of rules a missing-target error named
        self._patched_modules: set[str] = set()
        self._complete: set[str] = set()  # ... and patched whole, once it had executed
        self._watched: list[types.ModuleType] = []
        #: per module being imported (by ``__name__``): attribute -> what :meth:`define` made
        #: of it, and the state of its class, until the pass once the module ran
        self._settled: dict[Any, dict[str, tuple[Any, ClassState]]] = {}
        #: ... and the records of its definitions, checked in that pass
        self._defined: dict[Any, list[Record]] = {}
        #: the modules imported under the policy: their containers' items that took a
        #: wrapper as the module ran are found at undo (:meth:`adopt_containers`)
        self._adopted: list[types.ModuleType] = []
        self.warnings: list[str] = []
        #: module-level places that hold an original and cannot be rebound (a tuple, a
        #: frozenset, a functools.partial), as ``mod.NAME[...] holds the original of ...``
        self.unreached: list[str] = []
        self.finder: _hook.PolicyFinder | None = None
        #: called with (module, name, object) as a definition is bound (what it returns is
        #: bound instead), and (module, None, None) once a covered module was imported and
        #: patched: ``policycompile tune`` times its entry through this
        self.watchers: list[Callable[[types.ModuleType, str | None, Any], Any]] = []
        self.active = True
        self._finished = False

    # -- what was done
    @property
    def records(self) -> tuple[Record, ...]:
        """Every attribute currently patched, in the order patched."""
        with self._lock:
            return tuple(e for e in self._journal if isinstance(e, Record))

    @property
    def aliases(self) -> tuple[AliasRecord, ...]:
        """Globals of other modules rebound to a wrapper, in the order rebound."""
        with self._lock:
            return tuple(
                e
                for e in self._journal
                if isinstance(e, AliasRecord) and not isinstance(e, HookRecord)
            )

    def _plans(self) -> list[Plan]:
        return [r.plan for r in self.records]

    def report(self) -> Report:
        """What happened so far under this policy: regions, graph breaks, violations."""
        self._check_position()
        regions, breaks = self.observer.snapshot()
        counts: dict[RuleRef, int] = defaultdict(int)
        for record in self.records:
            for rule in set(record.plan.rules.values()):
                counts[rule] += 1
        policy = self.policy
        with self._lock:
            warnings = tuple(self.warnings)
        with self.observer.lock:
            failures = tuple(self.observer.failures)
        return Report(
            policy_path=policy.path,
            profile=policy.profile,
            sha256=policy.fingerprint,
            torch_version=catalog.version(),
            audit=self.audit,
            regions=regions,
            graph_breaks=breaks,
            unused_rules=tuple(policy.ref(r) for r in self.unused_rules()),
            patched=tuple(sorted(counts.items(), key=lambda rn: str(rn[0]))),
            warnings=warnings,
            failures=failures,
            unreached=tuple(self.unreached),
        )

    def record_exception(self, exc: BaseException) -> None:
        """Add a graph break that raised (fullgraph, error_on_graph_break) to the report.

        Breaks raised through a policy wrapper are recorded on their way out; ``policycompile
        run`` and the pytest plugin call this with the exception that reached them, for the
        others. Other exceptions are ignored.
        """
        self.observer.record_exception(exc)

    def unused_rules(self) -> list[Rule]:
        """Rules that matched no object in any module patched so far, but for one an error
        already named (a missing exact target, under ``strict``)."""
        with self._lock:
            return [
                r
                for r in self.policy.rules
                if r not in self._matched and r.pattern.text not in self._said
            ]

    # -- applying
    def start(self) -> None:
        """Patch every covered module imported so far, rebind aliases, install the hook.

        Defining names are patched before re-exports of them, so a rule on a re-exported
        name wraps the defining name's wrapper whatever the import order was. Modules still
        executing (imported by another thread, or the one calling ``apply``) are patched as
        far as they got, and again when they finish.
        """
        self.observer.install()
        # The hook first, then the modules imported so far: a module another thread imports
        # meanwhile is patched by the one or the other (patch_module skips what is ours).
        self.finder = _hook.PolicyFinder(
            self.policy.tree.covers_module,
            self._on_import,
            self._on_displaced,
            loader_for=self._loader_for,
        )
        self.finder.install()
        covered = [m for m in _modules() if self.covers(m)]
        self._check_main(covered)
        later = [m for m in covered if self._patch_now_or_later(m, reexports=False)]
        self.rebind_aliases(_modules())
        for module in later:
            self._patch_now_or_later(module, reexports=True)
        with self._lock:
            self._journal.extend(self.ranks.install(_modules()))
        codes.save()

    def release(self, name: str) -> None:
        """Stop holding module ``name`` back; the caller patches it."""
        with self._lock:
            self.hold.discard(name)

    def covers(self, module: types.ModuleType) -> bool:
        """Whether the policy concerns ``module`` (and it is not held back)."""
        name = policy_module_name(module)
        if name is None or vars(module).get("__name__") in self.hold:
            return False
        return self.policy.tree.covers_module(name)

    def _patch_now_or_later(self, module: types.ModuleType, *, reexports: bool) -> bool:
        """Patch ``module`` (as far as it got, if it is still executing); True when it holds
        re-exports left for the pass after this one."""
        executing = _hook.is_executing(module)
        plan = self.patch_module(module, partial=executing, reexports=reexports)
        if executing and module not in self._watched:
            self._watched.append(module)
            _hook.when_executed(module, self._on_finished)
        return plan.deferred

    def _loader_for(self, loader: Any) -> DefiningLoader | None:
        """Python's own source loader runs the module rewritten (``_engine/rewrite.py``)."""
        if not rewritable(loader):
            return None
        return DefiningLoader(loader, self._on_import, self._definer)

    def _definer(self, module: types.ModuleType) -> Callable[[str], Callable[[Any], Any]]:
        """What the rewritten definitions of ``module`` call."""
        return lambda name: lambda obj: self.define(module, name, obj)

    def define(self, module: types.ModuleType, name: str, obj: Any) -> Any:
        """A ``def`` or ``class`` statement of ``module`` made ``obj``, to be bound to
        ``name``: what the statement binds instead, as if the policy's decorators were written
        innermost on it (the function's wrapper; a class, its methods wrapped in place)."""
        if not self.active:
            return self._watched_definition(module, name, obj)
        modname = policy_module_name(module)
        if modname is None or is_internal(modname) or not self.policy.tree.covers_module(modname):
            pass  # what patch_module would find: nothing to patch here
        elif is_class(obj) or self.policy.tree.found(f"{modname}:{name}"):
            namespace = vars(module)
            before = namespace.get(name, MISSING)
            namespace[name] = obj  # bound while it is patched, then as it was:
            try:  # a decorator above may look up the name's previous definition
                # as patch_module does, for this one name and without what concerns the
                # whole module: a definition is patched as fast as it can be
                matched: set[Rule] = set()
                targets = module_targets(module, name, None, wrapped_as)
                if targets:  # wrapped as decided
                    plans = iter_plans(self.policy, targets, matched)
                    real = vars(module).get("__name__")
                    self._commit(modname, plans, matched, full=False, deferred=False, defined=real)
            finally:
                obj = namespace[name]
                if before is MISSING:
                    del namespace[name]
                else:
                    namespace[name] = before
        obj = self._watched_definition(module, name, obj)
        # the pass once the module ran leaves it alone, unless the module changes it since
        try:
            state = class_state(obj) if is_class(obj) else ()
        except Exception:  # a metaclass that refuses vars() or computes names: the pass
            return obj  # looks at it then, as it would have without this shortcut
        with self._lock:
            self._settled.setdefault(vars(module).get("__name__"), {})[name] = (obj, state)
        return obj

    def _settle_definitions(self, module: types.ModuleType) -> None:
        """What :meth:`define` wrapped in ``module``, now that it ran: inherited members whose
        base the module changed since are taken back, for the pass to wrap what the class
        inherits now (as applying the policy after would); what the module's own code
        replaced is no news at undo (:func:`~.._engine.commit.settle_definitions`)."""
        with self._lock:
            records = self._defined.pop(vars(module).get("__name__"), ())
            for record in settle_definitions(records, self.warn):
                self._journal.remove(record)
                for key, _ in wrapper_ids(record):
                    del self._wrappers[key], self._wrapper_ids[key]

    def _watched_definition(self, module: types.ModuleType, name: str, obj: Any) -> Any:
        for watch in self.watchers:
            obj = watch(module, name, obj)
        return obj

    def _settled_in(self, module: types.ModuleType) -> Callable[[str, Any], bool] | None:
        """Whether a module attribute still holds what :meth:`define` made of it, unchanged
        (a class: the same members): the pass once the module ran needs no look at it."""
        with self._lock:
            settled = self._settled.pop(vars(module).get("__name__"), None)
        if not settled:
            return None

        def unchanged(attr: str, value: Any) -> bool:
            made = settled.get(attr)
            if made is None or made[0] is not value:
                return False
            try:
                return same_state(made[1])
            except Exception:  # a class that cannot be read as it could then: the pass
                return False

        return unchanged

    def _on_import(self, module: types.ModuleType, fresh: list[types.ModuleType]) -> None:
        self._settle_definitions(module)
        done = self.patch_module(module, settled=self._settled_in(module))
        # What its containers took at the definitions is looked for at undo (``_adopted``);
        # what this import patched once the module had run (``fn = make()``, a definition
        # under a decorator the rewrite leaves alone) may be held by the module's own
        # containers, or by a module imported while it ran (a circular `from this import
        # fn`): those are pointed at the wrapper now.
        with self._lock:
            self._adopted.append(module)
        self.rebind_aliases([module, *fresh], done)
        for watch in self.watchers:
            watch(module, None, None)
        if not _hook.nested():  # the outermost import under the policy is done
            codes.save()

    def _on_finished(self, module: types.ModuleType) -> None:
        with self._lock:
            if module in self._watched:
                self._watched.remove(module)
        if not self.active:
            return
        done = self.patch_module(module)
        self.rebind_aliases(_modules(), done)

    def _on_displaced(self) -> None:
        """Another finder went in front of ours: patch what it imported behind our back."""
        missed = [
            m
            for m in _modules()
            if (name := policy_module_name(m)) is not None
            and name not in self._patched_modules
            and self.covers(m)
        ]
        for module in missed:
            self._patch_now_or_later(module, reexports=False)
        if missed:
            self.rebind_aliases(_modules())

    def _check_position(self) -> None:
        if self.active and self.finder is not None and self.finder.displaced():
            self.finder.install()
            self._on_displaced()

    def patch_module(
        self,
        module: types.ModuleType,
        *,
        partial: bool = False,
        reexports: bool | None = None,
        settled: Callable[[str, Any], bool] | None = None,
    ) -> Patched:
        """Patch one module, all or nothing. Raises for a missing exact target under strict.
        (One definition at a time is :meth:`define`'s.)

        :param partial: the module is still executing: patch what it defined so far, and
            leave missing names to be checked when it finishes.
        :param reexports: see :func:`plan_module`.
        :param settled: attributes to leave alone, see :func:`plan_module`.
        """
        matched: set[Rule] = set()
        plan = plan_module(self.policy, module, matched, reexports=reexports, settled=settled)
        for line in plan.skipped:
            self.warn(f"skipped {line}")
        if not partial:
            self._report_problems(plan)
        return self._commit(
            plan.module, plan.plans, matched, full=not partial, deferred=plan.deferred
        )

    def _commit(
        self,
        module: str,
        plans: Iterable[Plan],
        matched: set[Rule],
        *,
        full: bool,
        deferred: bool,
        defined: Any = None,
    ) -> Patched:
        """Build and set the wrapper of each plan of ``module``, all or nothing (plans may be
        decided as they are asked for), and journal them; ``full``: the whole module, once
        it ran; ``defined``: made at a definition of the module of this ``__name__``, for
        the pass once it ran (:meth:`_settle_definitions`)."""
        with self._lock:
            if not self.active:
                return Patched(deferred=deferred)
            done = commit(plans, self.observer, audit=self.audit, warn=self.warn)
            done.deferred = deferred
            if full and module in self._complete:
                # importlib.reload re-executes the module: records of its old objects are stale
                self._journal = [
                    e
                    for e in self._journal
                    if not isinstance(e, Record) or e.module != module or e.still_ours()
                ]
            self._patched_modules.add(module)
            if full:
                self._complete.add(module)
            self._journal.extend(done)
            for record in done:
                for key, made in wrapper_ids(record):
                    self._wrappers[key], self._wrapper_ids[key] = record, made
            self._matched |= matched
            if defined is not None and done:
                self._defined.setdefault(defined, []).extend(done)
        if log.isEnabledFor(logging.INFO):
            for record in done:
                what = record.plan
                log.info("patched %s: %s", what.target.display, " ".join(what.decorators))
        return done

    def _report_problems(self, plan: ModulePlan) -> None:
        if not plan.problems:
            return
        if self.policy.strict:
            with self._lock:  # said once: as the error, not again as an unused rule
                self._said.update(p.rule for p in plan.problems[:1] if p.rule is not None)
            raise plan.problems[0]
        for problem in plan.problems:
            self.warn(str(problem).replace(": error: ", ": warning: ", 1))

    def warn(self, text: str) -> None:
        """Say ``text``: a ``PolicyWarning``, the log, and the report's warnings."""
        log.warning("%s", text)
        with self._lock:
            self.warnings.append(text)
        warnings.warn(text, PolicyWarning, stacklevel=3)

    def _check_main(self, covered: list[types.ModuleType]) -> None:
        said = unpatched_main(self.policy, covered)
        if said is not None:
            self.warn(said)

    # -- undoing
    def undo(self) -> None:
        """Restore every patched attribute and alias that still holds our wrapper, then any
        global that took one of our wrappers since (``from mod import fn`` after apply);
        remove the import hook. Safe to call twice, and after an interrupted undo it
        finishes the job."""
        with self._lock:
            if self._finished:
                return
            self.active = False  # from here on, no import patches anything
        if self.finder is not None:
            self.finder.uninstall()
        self.observer.uninstall()
        for module in list(self._watched):
            _hook.stop_watching(module)
        self._watched.clear()
        with self._lock:
            self._settled.clear()  # (a module whose import failed never had its pass)
            for records in self._defined.values():
                settle_definitions(records, self.warn, take_back=False)
            self._defined.clear()
            adopted = list({id(m): m for m in self._adopted}.values())  # (a reload: twice)
        self.adopt_containers(adopted)  # (again after an interrupted undo: found once)
        with self._lock:
            self._adopted.clear()
        while True:
            with self._lock:
                if not self._journal:
                    break
                entry = self._journal[-1]
            again = entry is self._restoring
            self._restoring = entry
            self._restore(entry, again)
            with self._lock:
                if self._journal and self._journal[-1] is entry:
                    self._journal.pop()
        self._restoring = None
        self._sweep()
        disarm(self.observer)
        with self._lock:
            self._finished = True
        self._on_undone(self)

    def __enter__(self) -> PolicyHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()

    def __repr__(self) -> str:
        state = "active" if self.active else "undone"
        return f"<PolicyHandle {self.policy.path!r} {state}, {len(self.records)} patched>"


_modules = loaded_modules
