"""Deciding and building wrappers in the contract's order, the journal of patches, atomic
apply, and an undo that restores only what is still ours."""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import importlib.util
import inspect
import logging
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _dynamo
from ._errors import PolicyConflictError, PolicyError, PolicyTargetError, PolicyWarning
from ._observe import FunctionIndex, ObservedBackend, Observer
from ._policy import Policy
from ._report import Report, build_report
from ._targets import (
    Kind,
    Target,
    describe,
    inherited_member,
    module_targets,
    policy_module_name,
    unwrap,
)
from ._tree import COMPILE, DISABLE, EOGB, Decision, Rule, split_name

log = logging.getLogger("policycompile")

_MISSING: Any = object()


@dataclass(frozen=True)
class Plan:
    """What the policy does to one target: the decorators a person would have written."""

    target: Target
    compile: Mapping[str, Any] | None  # torch.compile keywords, when a compile entry
    disable: bool
    error_on_graph_break: bool | None
    rules: Mapping[str, str]  # key -> "pattern (file:line)" of the rule that decided it
    notes: tuple[str, ...] = ()

    @property
    def decorators(self) -> list[str]:
        """The hand-written equivalent, outermost first."""
        out = []
        if self.error_on_graph_break is not None:
            out.append(f"@torch._dynamo.error_on_graph_break({self.error_on_graph_break})")
        if self.compile is not None:
            opts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.compile.items()))
            out.append(f"@torch.compile({opts})" if opts else "@torch.compile")
        elif self.disable:
            out.append("@torch.compiler.disable")
        return out


@dataclass(frozen=True)
class PatchInfo:
    """Attached to every wrapper as ``__policycompile__``: what it is and which rules made it."""

    name: str
    plan: Plan


def _is_dunder(attr: str) -> bool:
    return attr.startswith("__") and attr.endswith("__") and attr != "__call__"


def _rule_text(decision: Decision) -> str:
    return f"{decision.winner.source} ({decision.position.short})"


def decide(policy: Policy, target: Target) -> Plan | None:
    """The plan for ``target``, or None when the policy leaves it alone.

    Inheritance reaches as SPEC section 4 says: ``compile`` reaches module-level functions and
    the ``forward`` of ``nn.Module`` subclasses; other methods only from a rule that matches
    them; dunder methods other than ``__call__`` only from a rule that matches them.
    """
    direct: set[str] = set()
    if target.kind is not Kind.FUNCTION and not target.is_forward:
        direct.add(COMPILE)
    if _is_dunder(target.attr):
        direct |= {COMPILE, EOGB, DISABLE}
    res = policy.resolve(target.name, frozenset(direct))
    decisions = dict(res.decisions)
    if _is_dunder(target.attr):
        # `pkg.**` matches `C.__init__` too, but does not name it: only a final segment
        # written with the dunder's own underscores (`__init__`, `__*__`) does.
        decisions = {
            k: d
            for k, d in decisions.items()
            if d.winner.rule is None or d.winner.rule.pattern.segments[-1].startswith("__")
        }
    if target.defined_in is not None:
        # An inherited member is wrapped on the subclass only for rules that name the
        # subclass or the member, never for rules that reach it from the module above.
        class_depth = len(split_name(target.name)[0]) - 1
        decisions = {k: d for k, d in decisions.items() if d.winner.depth >= class_depth}
    notes: list[str] = []
    comp, dis, eogb = decisions.get(COMPILE), decisions.get(DISABLE), decisions.get(EOGB)
    want_compile = comp is not None and comp.value is True
    want_disable = dis is not None and dis.value is True
    if want_compile and want_disable:
        assert comp is not None and dis is not None
        a, b = comp.winner.specificity, dis.winner.specificity
        if a == b:
            raise PolicyConflictError(
                f"{target.display!r} is made a compile entry by {_rule_text(comp)} and disabled "
                f"by {_rule_text(dis)}, and neither rule is more specific",
                comp.position,
                rule=comp.winner.source,
            )
        loser = dis if a > b else comp
        notes.append(
            f"{loser.key} from {_rule_text(loser)} does not reach it: a more specific rule decides"
        )
        want_compile, want_disable = a > b, a < b
    if want_compile and _dynamo.is_compiled_function(target.func):
        want_compile = False
        notes.append("already compiled in the source: no second torch.compile")
    if not want_compile and not want_disable and eogb is None:
        return None
    rules = {}
    if want_compile and comp is not None:
        rules[COMPILE] = _rule_text(comp)
        for key, d in decisions.items():
            if key.startswith("compile."):
                rules[key] = _rule_text(d)
    if want_disable and dis is not None:
        rules[DISABLE] = _rule_text(dis)
    if eogb is not None:
        rules[EOGB] = _rule_text(eogb)
    if target.defined_in is not None:
        notes.append(
            f"inherited from {target.defined_in.__module__}."
            f"{target.defined_in.__qualname__}; the wrapper is set on the subclass only"
        )
    return Plan(
        target,
        res.compile_options if want_compile else None,
        want_disable,
        None if eogb is None else bool(eogb.value),
        rules,
        tuple(notes),
    )


# -- wrappers ------------------------------------------------------------------------------


_EOGB_TEMPLATE = """
def _pc_make(_pc_fn, _pc_ctx, _pc_flags, _pc_value, _pc_is_compiling{defaults}):
    def wrapper({params}):
        if _pc_is_compiling():
            with _pc_ctx:
                return _pc_fn({args})
        _pc_prev = _pc_flags._error_on_graph_break
        if _pc_prev == _pc_value:
            return _pc_fn({args})
        _pc_flags._error_on_graph_break = _pc_value
        try:
            return _pc_fn({args})
        finally:
            _pc_flags._error_on_graph_break = _pc_prev
    return wrapper
"""

_GENERIC = ("*args, **kwargs", "*args, **kwargs", ())


def _call_shape(func: Callable[..., Any]) -> tuple[str, str, tuple[Any, ...]]:
    """Parameters and call arguments that forward exactly ``func``'s signature.

    A wrapper with the function's own parameters skips packing ``*args, **kwargs`` (about a
    third of the eager overhead); defaults are passed in as the very same objects.
    """
    try:
        sig = inspect.signature(func, follow_wrapped=False)
    except (TypeError, ValueError):
        return _GENERIC
    params: list[str] = []
    args: list[str] = []
    defaults: list[Any] = []
    slash = star = False
    for p in sig.parameters.values():
        if p.name.startswith("_pc_") or not p.name.isidentifier():
            return _GENERIC
        if p.kind is p.POSITIONAL_ONLY:
            slash = True
        elif slash:
            params.append("/")
            slash = False
        text = p.name
        if p.default is not p.empty:
            text += f"=_pc_d{len(defaults)}"
            defaults.append(p.default)
        if p.kind is p.VAR_POSITIONAL:
            params.append("*" + p.name)
            args.append("*" + p.name)
            star = True
            continue
        if p.kind is p.VAR_KEYWORD:
            params.append("**" + p.name)
            args.append("**" + p.name)
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            params.append("*")
            star = True
        params.append(text)
        args.append(f"{p.name}={p.name}" if p.kind is p.KEYWORD_ONLY else p.name)
    if slash:
        params.append("/")
    return ", ".join(params), ", ".join(args), tuple(defaults)


@functools.lru_cache(maxsize=256)
def _eogb_factory(params: str, args: str, n_defaults: int) -> Callable[..., Any]:
    names = "".join(f", _pc_d{i}" for i in range(n_defaults))
    namespace: dict[str, Any] = {}
    source = _EOGB_TEMPLATE.format(defaults=names, params=params, args=args)
    exec(compile(source, "<policycompile error_on_graph_break wrapper>", "exec"), namespace)
    factory: Callable[..., Any] = namespace["_pc_make"]
    return factory


def _eogb_wrapper(
    fn: Callable[..., Any], value: bool, signature_of: Callable[..., Any]
) -> Callable[..., Any]:
    """``torch._dynamo.error_on_graph_break(value)(fn)``, with a lean eager path.

    Under Dynamo, ``is_dynamo_compiling()`` folds to True and the wrapper traces exactly like
    the hand decorator (the same context manager around the call). Eagerly it sets the same
    process-global flag, without the context manager's object and list bookkeeping, and
    takes ``signature_of``'s own parameters instead of ``*args, **kwargs``.
    """
    import torch._dynamo

    ctx = torch._dynamo.error_on_graph_break(value)
    params, args, defaults = _call_shape(signature_of)
    factory = _eogb_factory(params, args, len(defaults))
    wrapper: Callable[..., Any] = factory(
        fn, ctx, _dynamo.flag_module(), value, _dynamo.is_dynamo_compiling(), *defaults
    )
    return wrapper


def _trampoline(compiled: Callable[..., Any]) -> Callable[..., Any]:
    # A compiled function stored on a class breaks when a compiled caller reaches a graph
    # break inside it (TORCH_FACTS: "missing 1 required positional argument"); a plain
    # Python function in between avoids it.
    def trampoline(*args: Any, **kwargs: Any) -> Any:
        return compiled(*args, **kwargs)

    return trampoline


def build(plan: Plan, observer: Observer | None = None, *, audit: bool = False) -> Any:
    """The new raw attribute for ``plan``: compile or disable innermost, then
    error_on_graph_break outermost, re-wrapped in the target's descriptor kind.

    :param observer: counts the graphs of compile entries (through the backend).
    :param audit: relax what the policy forbids (fullgraph, error_on_graph_break=True) so
        that every break is recorded instead of raised.
    """
    import torch

    target = plan.target
    func: Callable[..., Any] = target.func
    inner: Callable[..., Any] = func
    if plan.compile is not None:
        options = dict(plan.compile)
        if audit and options.get("fullgraph"):
            options["fullgraph"] = False
        if observer is not None:
            real = _dynamo.make_backend(
                options.pop("backend", None),
                options.pop("mode", None),
                options.pop("options", None),
                options.get("dynamic"),
                options.pop("name", None),
            )
            region = observer.region(target.display, plan.rules.get(COMPILE))
            options["backend"] = ObservedBackend(observer, region, real)
        inner = torch.compile(func, **options)
        if target.kind is not Kind.FUNCTION:
            inner = _keep_identity(_trampoline(inner), func)
    elif plan.disable:
        inner = torch.compiler.disable(func)  # type: ignore[no-untyped-call]
    if plan.error_on_graph_break is not None:
        value = plan.error_on_graph_break and not audit
        inner = _keep_identity(_eogb_wrapper(inner, value, func), func)
    inner.__policycompile__ = PatchInfo(target.name, plan)  # type: ignore[attr-defined]
    if target.kind is Kind.STATICMETHOD:
        return staticmethod(inner)
    if target.kind is Kind.CLASSMETHOD:
        return classmethod(inner)
    return inner


def _keep_identity(wrapper: Callable[..., Any], func: Callable[..., Any]) -> Callable[..., Any]:
    # updated=(): copying func.__dict__ could copy Dynamo's marks of an already-compiled
    # function onto the wrapper, and Dynamo would then skip the wrapper itself.
    functools.update_wrapper(wrapper, func, updated=())
    wrapper.__wrapped__ = func  # type: ignore[attr-defined]
    return wrapper


def patch_info(obj: Any) -> PatchInfo | None:
    """The PatchInfo of a policy wrapper (function or descriptor), else None."""
    func = obj.__func__ if isinstance(obj, staticmethod | classmethod) else obj
    info = getattr(func, "__policycompile__", None)
    return info if isinstance(info, PatchInfo) else None


# -- the journal ----------------------------------------------------------------------------


@dataclass(eq=False)
class Record:
    """One attribute we replaced, and what to put back."""

    plan: Plan
    owner: Any
    attr: str
    original: Any  # the value in owner.__dict__ before, or _MISSING when inherited
    new: Any

    @property
    def module(self) -> str:
        return self.plan.target.module

    def apply(self) -> None:
        try:
            setattr(self.owner, self.attr, self.new)
        except (TypeError, AttributeError) as exc:
            raise PolicyTargetError(
                f"cannot patch {self.plan.target.display!r}: {exc}",
                rule=next(iter(self.plan.rules.values()), None),
            ) from None

    def still_ours(self) -> bool:
        return vars(self.owner).get(self.attr, _MISSING) is self.new

    def restore(self) -> bool:
        """Put the original back if the attribute still holds our wrapper."""
        if not self.still_ours():
            return False
        if self.original is _MISSING:
            delattr(self.owner, self.attr)
        else:
            setattr(self.owner, self.attr, self.original)
        return True


@dataclass(eq=False)
class AliasRecord:
    """A global of another module that held an original function, rebound to its wrapper."""

    module: types.ModuleType
    name: str
    original: Any
    new: Any

    def restore(self) -> bool:
        if vars(self.module).get(self.name, _MISSING) is not self.new:
            return False
        setattr(self.module, self.name, self.original)
        return True


@dataclass
class ModulePlan:
    """Everything the policy does to one module."""

    module: str
    plans: list[Plan] = field(default_factory=list)
    # exact targets that are missing or cannot be patched
    problems: list[PolicyError] = field(default_factory=list)


def plan_module(
    policy: Policy, module: types.ModuleType, matched: set[Rule], only: str | None = None
) -> ModulePlan:
    """Decide, without changing anything, what the policy does to ``module``.

    :param matched: receives every rule that matched an object here (for unused-rule lists).
    :param only: consider just this module attribute (and what a class defines).
    """
    name = policy_module_name(module)
    result = ModulePlan(name)
    if not policy.tree.covers_module(name):
        return result
    seen: set[tuple[int, str]] = set()
    targets = list(module_targets(module, only))
    if only is None:
        targets.extend(_exact_targets(policy, module, name, result))
    for target in targets:
        key = (id(target.owner), target.attr)
        if key in seen:
            continue
        seen.add(key)
        matched.update(policy.tree.matches(target.name))
        plan = decide(policy, target)
        if plan is None:
            continue
        for note in plan.notes:
            log.debug("%s: %s", target.display, note)
        result.plans.append(plan)
    return result


def _exact_targets(
    policy: Policy, module: types.ModuleType, name: str, result: ModulePlan
) -> Iterator[Target]:
    """Check every exact rule that names something inside ``module``; yield the inherited
    members and re-exported functions those rules name (module_targets does not list them)."""
    segments = name.split(".")
    for rule in policy.rules:
        pattern = rule.pattern
        if not pattern.is_exact:
            continue
        if pattern.module_end is not None:
            if list(pattern.segments[: pattern.module_end]) != segments:
                continue
        elif list(pattern.segments[: len(segments)]) != segments:
            continue
        rest = pattern.segments[len(segments) :]
        if not rest:
            continue
        try:
            found = _lookup(module, name, rest, rule)
        except PolicyTargetError as exc:
            result.problems.append(exc)
            continue
        if found is not None:
            yield found


def _is_submodule(module: types.ModuleType, name: str, child: str) -> bool:
    if not hasattr(module, "__path__"):
        return False
    full = f"{name}.{child}"
    if full in sys.modules:
        return True
    try:
        return importlib.util.find_spec(full) is not None
    except (ImportError, ValueError):
        return False


def _missing(rule: Rule, where: str, attr: str, choices: Iterable[str]) -> PolicyTargetError:
    close = difflib.get_close_matches(attr, [c for c in choices if not c.startswith("__")], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return PolicyTargetError(
        f"target {rule.pattern.text!r} names nothing: {where} has no attribute {attr!r}{hint}",
        rule.position,
        rule=rule.pattern.text,
    )


def _lookup(
    module: types.ModuleType, name: str, rest: tuple[str, ...], rule: Rule
) -> Target | None:
    owner: Any = module
    where = name
    for i, seg in enumerate(rest):
        last = i == len(rest) - 1
        if isinstance(owner, types.ModuleType):
            if seg not in vars(owner):
                if rule.pattern.module_end is None and _is_submodule(owner, where, seg):
                    return None  # checked when that submodule is imported
                raise _missing(rule, f"module {where}", seg, vars(owner))
            raw = vars(owner)[seg]
            if last and isinstance(raw, types.FunctionType) and raw.__module__ != owner.__name__:
                # a re-export (`from ._impl import fn`): patch the name the rule gives
                return Target(f"{name}:{seg}", owner, seg, raw, raw, Kind.FUNCTION, name)
        elif isinstance(owner, type):
            if seg not in vars(owner):
                qual = f"{owner.__qualname__}.{seg}"
                inherited = inherited_member(owner, seg, name) if last else None
                if inherited is not None:
                    return inherited
                if not any(seg in vars(b) for b in owner.__mro__):
                    raise _missing(rule, f"class {where}", seg, dir(owner))
                raise PolicyTargetError(
                    f"target {rule.pattern.text!r} cannot be patched: {name}.{qual} is "
                    f"{describe(_mro_get(owner, seg))}",
                    rule.position,
                    rule=rule.pattern.text,
                )
            raw = vars(owner)[seg]
        else:
            raise PolicyTargetError(
                f"target {rule.pattern.text!r} cannot be patched: {where} is {describe(owner)}",
                rule.position,
                rule=rule.pattern.text,
            )
        where = f"{where}.{seg}"
        if isinstance(raw, type):
            if not raw.__flags__ & (1 << 9):  # Py_TPFLAGS_HEAPTYPE: a C type refuses setattr
                raise PolicyTargetError(
                    f"target {rule.pattern.text!r} cannot be patched: {where} is a C type",
                    rule.position,
                    rule=rule.pattern.text,
                )
            owner = raw
            continue
        if isinstance(raw, types.ModuleType):
            owner = raw
            continue
        if unwrap(raw) is None and not (
            isinstance(owner, types.ModuleType) and isinstance(raw, types.FunctionType)
        ):
            raise PolicyTargetError(
                f"target {rule.pattern.text!r} cannot be patched: {where} is {describe(raw)}",
                rule.position,
                rule=rule.pattern.text,
            )
        if not last:
            raise PolicyTargetError(
                f"target {rule.pattern.text!r} cannot be patched: {where} is a function, and "
                "what is defined inside a function has no attribute to patch",
                rule.position,
                rule=rule.pattern.text,
            )
    return None


def _mro_get(cls: type, attr: str) -> Any:
    for base in cls.__mro__:
        if attr in vars(base):
            return vars(base)[attr]
    return None


# -- the applied policy ---------------------------------------------------------------------


class _State:
    """All process-wide state of policycompile: the active handle, under one lock.

    The lock is never held while importing or running user code.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.active: PolicyHandle | None = None


STATE = _State()


class PolicyHandle:
    """An applied policy. ``undo()`` restores everything; also a context manager."""

    def __init__(self, policy: Policy, applied_at: str, *, audit: bool = False) -> None:
        self.policy = policy
        self.applied_at = applied_at
        self.audit = audit
        self.observer = Observer(FunctionIndex(self.plans_by_code))
        self._lock = threading.RLock()
        self._records: list[Record] = []
        self._aliases: list[AliasRecord] = []
        self._matched: set[Rule] = set()
        self._patched_modules: set[str] = set()
        self.warnings: list[str] = []
        self.finder: Any = None
        self.active = True

    # -- what was done
    @property
    def records(self) -> tuple[Record, ...]:
        """Every attribute currently patched, in the order patched."""
        with self._lock:
            return tuple(self._records)

    @property
    def aliases(self) -> tuple[AliasRecord, ...]:
        with self._lock:
            return tuple(self._aliases)

    def plans_by_code(self) -> dict[Any, Plan]:
        """The code object of every patched original function -> its plan."""
        with self._lock:
            return {r.plan.target.func.__code__: r.plan for r in self._records}

    def report(self) -> Report:
        """What happened so far under this policy: regions, graph breaks, violations."""
        return build_report(self)

    def record_exception(self, exc: BaseException) -> None:
        """Add a graph break that raised (fullgraph, error_on_graph_break) to the report.

        Dynamo logs nothing for those; ``policycompile run`` and the pytest plugin call this
        with the exception that reached them. Other exceptions are ignored.
        """
        self.observer.record_exception(exc)

    def unused_rules(self) -> list[Rule]:
        """Rules that matched no object in any module patched so far."""
        with self._lock:
            return [r for r in self.policy.rules if r not in self._matched]

    # -- patching
    def patch_module(self, module: types.ModuleType, only: str | None = None) -> list[Record]:
        """Patch one module, all or nothing. Raises for a missing exact target under strict.

        :param only: patch just the object this module attribute names (``policycompile run``
            patches a ``__main__`` module statement by statement, as its code defines things).
        """
        matched: set[Rule] = set()
        plan = plan_module(self.policy, module, matched, only=only)
        self._report_problems(plan)
        done: list[Record] = []
        try:
            for p in plan.plans:
                owner, attr = p.target.owner, p.target.attr
                original = vars(owner).get(attr, _MISSING)
                record = Record(p, owner, attr, original, build(p, self.observer, audit=self.audit))
                record.apply()
                done.append(record)
        except BaseException:
            for record in reversed(done):
                record.restore()
            raise
        with self._lock:
            # importlib.reload re-executes the module: records of its old objects are stale
            if plan.module in self._patched_modules:
                self._records = [
                    r for r in self._records if r.module != plan.module or r.still_ours()
                ]
            self._patched_modules.add(plan.module)
            self._records.extend(done)
            self._matched |= matched
        for record in done:
            log.info("patched %s: %s", record.plan.target.display, " ".join(record.plan.decorators))
        return done

    def _report_problems(self, plan: ModulePlan) -> None:
        if not plan.problems:
            return
        if self.policy.strict:
            raise plan.problems[0]
        for problem in plan.problems:
            text = str(problem).replace(": error: ", ": warning: ", 1)
            log.warning("skipped: %s", text)
            with self._lock:
                self.warnings.append(text)
            warnings.warn(text, PolicyWarning, stacklevel=2)

    def rebind_aliases(self) -> None:
        """Point globals of other imported modules that hold an original function at its
        wrapper (``from pkg.mod import fn`` before apply). ``__main__`` is left alone: its
        module-level code may be running a loop over the very names we would rebind."""
        originals = {
            id(r.original): r
            for r in self._records
            if r.plan.target.kind is Kind.FUNCTION and r.original is not _MISSING
        }
        if not originals:
            return
        for module in list(sys.modules.values()):
            if not isinstance(module, types.ModuleType) or module.__name__ == "__main__":
                continue
            try:
                items = list(vars(module).items())
            except TypeError:
                continue
            for name, value in items:
                record = originals.get(id(value))
                if record is None or value is not record.original:
                    continue
                if module is record.owner and name == record.attr:
                    continue
                setattr(module, name, record.new)
                self._aliases.append(AliasRecord(module, name, value, record.new))

    def unreached_references(self) -> list[str]:
        """References to patched module-level functions that rebinding could not reach
        (containers, closures), e.g. ``HANDLERS = [fn]`` taken before apply. A full heap
        scan: computed on demand (reports, ``plan``), never during apply."""
        with self._lock:
            originals = [
                r.original
                for r in self._records
                if r.plan.target.kind is Kind.FUNCTION and r.original is not _MISSING
            ]
        return _unreached_references(originals, self) if originals else []

    def undo(self) -> None:
        """Restore every patched attribute and alias that still holds our wrapper, remove the
        import hook. Safe to call twice."""
        with STATE.lock:
            if not self.active:
                return
            self.active = False
            if STATE.active is self:
                STATE.active = None
        if self.finder is not None:
            self.finder.uninstall()
        self.observer.uninstall()
        with self._lock:
            aliases, self._aliases = self._aliases, []
            records, self._records = self._records, []
        for alias in reversed(aliases):
            if not alias.restore():
                self._left_alone(f"{alias.module.__name__}.{alias.name}")
        for record in reversed(records):
            if not record.restore():
                self._left_alone(record.plan.target.display)

    def _left_alone(self, name: str) -> None:
        text = f"{name} no longer holds the policy's wrapper (replaced since); left as it is"
        warnings.warn(text, PolicyWarning, stacklevel=3)

    def __enter__(self) -> PolicyHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()

    def __repr__(self) -> str:
        state = "active" if self.active else "undone"
        return f"<PolicyHandle {self.policy.path!r} {state}, {len(self._records)} patched>"


def _wrapper_parts(obj: Any, ours: set[int], depth: int = 0) -> None:
    """Collect the ids of the cells and dicts that make up a wrapper (ours or torch's)."""
    if depth > 6 or obj is None:
        return
    func = obj.__func__ if isinstance(obj, staticmethod | classmethod) else obj
    if hasattr(func, "__dict__"):
        ours.add(id(vars(func)))
    for cell in getattr(func, "__closure__", None) or ():
        ours.add(id(cell))
        with contextlib.suppress(ValueError):  # an empty cell
            _wrapper_parts(cell.cell_contents, ours, depth + 1)
    for attr in ("__wrapped__", "_torchdynamo_orig_callable"):
        inner = getattr(func, attr, None) if hasattr(func, "__dict__") else None
        if inner is not None and inner is not func:
            _wrapper_parts(inner, ours, depth + 1)


def _unreached_references(originals: list[Any], handle: PolicyHandle) -> list[str]:
    """References to original functions that no rebinding reaches: containers, closures.

    Everything that belongs to the journal and to the wrappers themselves is excluded, as are
    module globals (rebound) and frames (running code).
    """
    ours: set[int] = {id(handle._records), id(originals)}
    for record in handle._records:
        ours.update({id(vars(record)), id(vars(record.plan)), id(vars(record.plan.target))})
        _wrapper_parts(record.new, ours)
    module_dicts = {
        id(vars(m)) for m in list(sys.modules.values()) if isinstance(m, types.ModuleType)
    }
    names = {id(r.original): r.plan.target.display for r in handle._records}
    found: list[str] = []
    for ref in gc.get_referrers(*originals):
        if id(ref) in ours or id(ref) in module_dicts or isinstance(ref, types.FrameType):
            continue
        if isinstance(ref, types.CellType):
            held, kind = [ref.cell_contents], "a closure variable"
        elif isinstance(ref, dict):
            held, kind = list(ref.values()), "a dict"
        elif isinstance(ref, list | tuple | set | frozenset):
            held, kind = list(ref), f"a {type(ref).__name__}"
        else:
            held, kind = [], f"a {type(ref).__name__}"
        targets = sorted({names[id(h)] for h in held if id(h) in names}) or ["an original"]
        found.extend(f"{t} is still held by {kind}" for t in targets)
    return found
