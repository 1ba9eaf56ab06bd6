"""Deciding and building wrappers in the contract's order, the journal of patches, atomic
apply, and an undo that restores only what is still ours."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import inspect
import itertools
import logging
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _dynamo
from ._errors import PolicyConflictError, PolicyError, PolicyTargetError
from ._load import mode_with_options
from ._observe import WRAPPER_FILE_PREFIX, ObservedBackend, Observer
from ._policy import Policy
from ._targets import (
    Kind,
    Target,
    class_targets,
    describe,
    inherited_member,
    is_class,
    module_targets,
    policy_module_name,
    refuses_setattr,
    unwrap,
)
from ._tree import (
    ALLOW,
    COMPILE,
    CONFIG_PREFIX,
    CONSTANT,
    DISABLE,
    DONT_SKIP,
    EOGB,
    EXCLUSIVE,
    MARKS,
    NESTED,
    SECTION8_API,
    STANCE,
    Decision,
    Rule,
    split_name,
    thaw,
)

log = logging.getLogger("policycompile")

MISSING: Any = object()


@dataclass(frozen=True)
class Plan:
    """What the policy does to one target: the decorators a person would have written."""

    target: Target
    compile: Mapping[str, Any] | None  # torch.compile keywords, when a compile entry
    disable: bool
    error_on_graph_break: bool | None
    rules: Mapping[str, str]  # key -> "pattern (file:line)" of the rule that decided it
    notes: tuple[str, ...] = ()
    exact: Rule | None = None  # the rule that names this target exactly, if one does
    marks: tuple[str, ...] = ()  # SPEC section 8's tracing marks, innermost first
    disable_recursive: bool = True  # torch.compiler.disable(fn, recursive=...)
    dynamo_config: Mapping[str, Any] | None = None  # torch._dynamo.config.patch(**...)
    stance: str | None = None  # torch.compiler.set_stance(...) around the compile entry

    @property
    def decorators(self) -> list[str]:
        """The hand-written equivalent, outermost first (SPEC section 5)."""
        out = []
        if self.error_on_graph_break is not None:
            out.append(f"@torch._dynamo.error_on_graph_break({self.error_on_graph_break})")
        if self.stance is not None:
            out.append(f"@torch.compiler.set_stance({self.stance!r})")
        if self.dynamo_config:
            opts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.dynamo_config.items()))
            out.append(f"@torch._dynamo.config.patch({opts})")
        if self.compile is not None:
            opts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.compile.items()))
            out.append(f"@torch.compile({opts})" if opts else "@torch.compile")
        elif self.disable:
            recursive = "" if self.disable_recursive else "(recursive=False)"
            out.append(f"@torch.compiler.disable{recursive}")
        out.extend("@" + ".".join(SECTION8_API[m]) for m in reversed(self.marks))
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
    direct: set[str] = {ALLOW, CONSTANT}  # only what a rule matches directly (SPEC 8)
    if target.kind is not Kind.FUNCTION and not target.is_forward:
        direct |= {COMPILE, NESTED}  # reach like compile
    if _is_dunder(target.attr):
        direct |= {COMPILE, EOGB, DISABLE, *MARKS}
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
    want_disable = dis is not None and dis.value is not False
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
    if want_compile:
        mode, options = decisions.get("compile.mode"), decisions.get("compile.options")
        if mode is not None and options is not None and None not in (mode.value, options.value):
            raise mode_with_options(mode.position, options.position)
    if want_compile and _dynamo.is_compiled_function(target.func):
        want_compile = False
        notes.append("already compiled in the source: no second torch.compile")
    marks = tuple(m for m in MARKS if (d := decisions.get(m)) is not None and d.value is True)
    _check_combinations(target, decisions, marks, want_compile, want_disable)
    entry_only = {k: d for k, d in decisions.items() if k == STANCE or k.startswith(CONFIG_PREFIX)}
    if not want_compile:
        for key, d in entry_only.items():
            if d.direct and d.winner.rule is not None and d.winner.rule.pattern.is_exact:
                raise PolicyTargetError(
                    f"{key} on {target.display!r} ({_rule_text(d)}) means nothing: it is not a "
                    "compile entry (set_stance and config.patch are placed around a "
                    "torch.compile'd function; give it 'compile: true' too)",
                    d.position,
                    rule=d.winner.source,
                )
        entry_only = {}
    if not (want_compile or want_disable or eogb is not None or marks):
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
    for key in marks:
        rules[key] = _rule_text(decisions[key])
    for key, d in entry_only.items():
        rules[key] = _rule_text(d)
    if target.defined_in is not None:
        notes.append(
            f"inherited from {target.defined_in.__module__}."
            f"{target.defined_in.__qualname__}; the wrapper is set on the subclass only"
        )
    recursive = True
    if want_disable and dis is not None and not isinstance(dis.value, bool):
        recursive = bool(thaw(dis.value).get("recursive", True))
    stance = entry_only.get(STANCE)
    config = {
        k[len(CONFIG_PREFIX) :]: thaw(d.value)
        for k, d in sorted(entry_only.items())
        if k.startswith(CONFIG_PREFIX)
    }
    return Plan(
        target,
        res.compile_options if want_compile else None,
        want_disable,
        None if eogb is None else bool(eogb.value),
        rules,
        tuple(notes),
        marks=marks,
        disable_recursive=recursive,
        dynamo_config=config or None,
        stance=None if stance is None else str(stance.value),
    )


def _check_combinations(
    target: Target,
    decisions: Mapping[str, Decision],
    marks: tuple[str, ...],
    want_compile: bool,
    want_disable: bool,
) -> None:
    on = (
        set(marks) | ({COMPILE} if want_compile else set()) | ({DISABLE} if want_disable else set())
    )
    for a, b, why in EXCLUSIVE:
        if a in on and b in on:
            second = max(decisions[a], decisions[b], key=lambda d: d.position)
            raise PolicyConflictError(
                f"{target.display!r} gets {a} from {_rule_text(decisions[a])} and {b} from "
                f"{_rule_text(decisions[b])}: {why}",
                second.position,
                rule=second.winner.source,
            )


# -- wrappers ------------------------------------------------------------------------------


_EOGB_TEMPLATE = """
def _pc_make(
    _pc_fn, _pc_ctx, _pc_flags, _pc_value, _pc_is_compiling, _pc_raised, _pc_seen{defaults}
):
    def wrapper({params}):
        if _pc_is_compiling():
            with _pc_ctx:
                return _pc_fn({args})
        _pc_prev = _pc_flags._error_on_graph_break
        if _pc_prev == _pc_value:
            try:
                return _pc_fn({args})
            except _pc_raised as _pc_exc:
                _pc_seen(_pc_exc)
                raise
        _pc_flags._error_on_graph_break = _pc_value
        try:
            return _pc_fn({args})
        except _pc_raised as _pc_exc:
            _pc_seen(_pc_exc)
            raise
        finally:
            _pc_flags._error_on_graph_break = _pc_prev
    return wrapper
"""

_GENERIC = ("*args, **kwargs", "*args, **kwargs", ())
_VARARGS, _VARKEYWORDS = inspect.CO_VARARGS, inspect.CO_VARKEYWORDS
_LABELS = itertools.count(1)


def _call_shape(func: types.FunctionType) -> tuple[str, str, tuple[Any, ...]]:
    """Parameters and call arguments that accept exactly the calls ``func`` accepts.

    A wrapper with the function's own parameters skips packing ``*args, **kwargs`` (about a
    third of the eager overhead). They are read from what the interpreter binds calls with,
    the code object and ``__defaults__``/``__kwdefaults__``, never from ``inspect.signature``:
    a ``__signature__`` attribute may describe other parameters, and a default that happens
    to be ``inspect.Parameter.empty`` is still a default. Defaults are passed in as the very
    same objects. Anything else gets the generic form, which lets ``func`` bind the call.
    """
    code = func.__code__
    names = code.co_varnames
    n_pos, n_posonly, n_kwonly = code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount
    star = names[n_pos + n_kwonly] if code.co_flags & _VARARGS else None
    index = n_pos + n_kwonly + (star is not None)
    starstar = names[index] if code.co_flags & _VARKEYWORDS else None
    every = [*names[: n_pos + n_kwonly], *filter(None, (star, starstar))]
    if any(n.startswith("_pc_") or not n.isidentifier() for n in every):
        return _GENERIC
    pos_defaults = func.__defaults__ or ()
    kw_defaults = func.__kwdefaults__ or {}
    if len(pos_defaults) > n_pos or not set(kw_defaults) <= set(names[n_pos : n_pos + n_kwonly]):
        return _GENERIC
    params: list[str] = []
    args: list[str] = []
    defaults: list[Any] = []
    first_default = n_pos - len(pos_defaults)
    for i, name in enumerate(names[:n_pos]):
        text = name
        if i >= first_default:
            text += f"=_pc_d{len(defaults)}"
            defaults.append(pos_defaults[i - first_default])
        params.append(text)
        args.append(name)
        if i == n_posonly - 1:
            params.append("/")
    if star is not None:
        params.append("*" + star)
        args.append("*" + star)
    elif n_kwonly:
        params.append("*")
    for name in names[n_pos : n_pos + n_kwonly]:
        text = name
        if name in kw_defaults:
            text += f"=_pc_d{len(defaults)}"
            defaults.append(kw_defaults[name])
        params.append(text)
        args.append(f"{name}={name}")
    if starstar is not None:
        params.append("**" + starstar)
        args.append("**" + starstar)
    return ", ".join(params), ", ".join(args), tuple(defaults)


@functools.lru_cache(maxsize=256)
def _eogb_factory(params: str, args: str, n_defaults: int) -> Callable[..., Any]:
    names = "".join(f", _pc_d{i}" for i in range(n_defaults))
    namespace: dict[str, Any] = {}
    source = _EOGB_TEMPLATE.format(defaults=names, params=params, args=args)
    exec(compile(source, "<policycompile error_on_graph_break wrapper>", "exec"), namespace)
    factory: Callable[..., Any] = namespace["_pc_make"]
    return factory


def _ignore(exc: BaseException) -> None:
    pass


def label(kind: str, name: str) -> str:
    """A file name for a wrapper's own code object, unique in the process.

    Frames of policy wrappers show it in tracebacks and in Dynamo's traced stacks, which is
    how a graph break is attributed to the wrapper (and so to the target and rule) it
    happened under, even where targets share one code object (``functools.wraps``).
    """
    return f"{WRAPPER_FILE_PREFIX}{kind} of {name} #{next(_LABELS)}>"


def _relabel(wrapper: Callable[..., Any], filename: str) -> None:
    wrapper.__code__ = wrapper.__code__.replace(co_filename=filename)


def _eogb_wrapper(
    fn: Callable[..., Any],
    value: bool,
    signature_of: types.FunctionType,
    *,
    filename: str = "<policycompile error_on_graph_break wrapper>",
    seen: Callable[[BaseException], None] = _ignore,
) -> Callable[..., Any]:
    """``torch._dynamo.error_on_graph_break(value)(fn)``, with a lean eager path.

    Under Dynamo, ``is_dynamo_compiling()`` folds to True and the wrapper traces exactly like
    the hand decorator (the same context manager around the call). Eagerly it sets the same
    process-global flag, without the context manager's object and list bookkeeping, and
    takes ``signature_of``'s own parameters instead of ``*args, **kwargs``. A graph break
    that Dynamo raises on its way out is shown to ``seen`` (the report), then re-raised.
    """
    import torch._dynamo

    ctx = torch._dynamo.error_on_graph_break(value)
    params, args, defaults = _call_shape(signature_of)
    factory = _eogb_factory(params, args, len(defaults))
    wrapper: Callable[..., Any] = factory(
        fn,
        ctx,
        _dynamo.flag_module(),
        value,
        _dynamo.is_dynamo_compiling(),
        _dynamo.graph_break_error(),
        seen,
        *defaults,
    )
    _relabel(wrapper, filename)
    return wrapper


def _trampoline(compiled: Callable[..., Any], filename: str) -> Callable[..., Any]:
    # A compiled function stored on a class breaks when a compiled caller reaches a graph
    # break inside it (TORCH_FACTS: "missing 1 required positional argument"); a plain
    # Python function in between avoids it.
    def trampoline(*args: Any, **kwargs: Any) -> Any:
        return compiled(*args, **kwargs)

    _relabel(trampoline, filename)
    return trampoline


def build(
    plan: Plan,
    observer: Observer | None = None,
    *,
    audit: bool = False,
) -> Any:
    """The new raw attribute for ``plan``: compile or disable innermost, then
    error_on_graph_break outermost, re-wrapped in the target's descriptor kind.

    :param observer: counts the graphs of compile entries (through the backend), learns
        which wrapper is which, and sees graph breaks raised through the wrappers.
    :param audit: relax what the policy forbids (fullgraph, error_on_graph_break=True) so
        that every break is recorded instead of raised.
    """
    import torch

    target = plan.target
    func: types.FunctionType = target.func
    inner: Callable[..., Any] = func
    for mark in plan.marks:
        inner = _mark(mark, inner, func)
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
            region = observer.region(target.display, plan)
            options["backend"] = ObservedBackend(observer, region, real)
        inner = torch.compile(inner, **options)
        if target.kind is not Kind.FUNCTION:
            filename = label("torch.compile", target.display)
            inner = _keep_identity(_trampoline(inner, filename), func)
            # torch.compile(C.m) keeps the function's attributes; so does its trampoline.
            vars(inner).update(
                (k, v) for k, v in vars(func).items() if not k.startswith("_torchdynamo")
            )
            if observer is not None:
                observer.entries[filename] = plan
    elif plan.disable:
        inner = torch.compiler.disable(  # type: ignore[no-untyped-call]
            inner, recursive=plan.disable_recursive
        )
    if plan.dynamo_config:
        inner = _keep_identity(torch._dynamo.config.patch(**plan.dynamo_config)(inner), func)
    if plan.stance is not None:
        inner = _keep_identity(torch.compiler.set_stance(plan.stance)(inner), func)
    if plan.error_on_graph_break is not None:
        value = plan.error_on_graph_break and not audit
        filename = label(f"error_on_graph_break({plan.error_on_graph_break})", target.display)
        seen = observer.record_exception if observer is not None else _ignore
        inner = _eogb_wrapper(inner, value, func, filename=filename, seen=seen)
        inner = _keep_identity(inner, func)
        if observer is not None:
            observer.wrappers[filename] = plan
    inner.__policycompile__ = PatchInfo(target.name, plan)  # type: ignore[attr-defined]
    if target.kind is Kind.STATICMETHOD:
        return staticmethod(inner)
    if target.kind is Kind.CLASSMETHOD:
        return classmethod(inner)
    return inner


def _mark(mark: str, fn: Callable[..., Any], func: types.FunctionType) -> Callable[..., Any]:
    """``fn`` with one of SPEC section 8's tracing marks, as the hand decorator gives it.

    ``allow_in_graph`` and ``assume_constant_result`` mark the function they are given and
    return it; given the program's own function, they mark a copy instead (same code,
    globals, defaults and attributes), which is what the policy stores, so that undo leaves
    the original unmarked.
    """
    if mark in (ALLOW, CONSTANT) and fn is func:
        fn = _copy_function(func)
    module, name = SECTION8_API[mark]
    marked: Callable[..., Any] = getattr(importlib.import_module(module), name)(fn)
    # dont_skip_tracing returns a bare context-manager wrapper: give it the function's name
    return _keep_identity(marked, func) if mark == DONT_SKIP else marked


def _copy_function(func: types.FunctionType) -> types.FunctionType:
    copy = types.FunctionType(
        func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    copy.__kwdefaults__ = dict(func.__kwdefaults__) if func.__kwdefaults__ else None
    vars(copy).update(vars(func))
    functools.update_wrapper(copy, func, updated=())  # __wrapped__: the original, as wrappers
    return copy


def _keep_identity(wrapper: Callable[..., Any], func: Callable[..., Any]) -> Callable[..., Any]:
    # updated=(): like the hand decorator, whose wrapper does not carry func.__dict__ (and
    # copying it could copy Dynamo's marks of an already-compiled function onto the wrapper,
    # so that Dynamo would skip the wrapper itself).
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
    original: Any  # the value in owner.__dict__ before, or MISSING when inherited
    new: Any

    @property
    def module(self) -> str:
        return self.plan.target.module

    def apply(self) -> None:
        """Set the wrapper.

        :raises PolicyTargetError: the owner refused (a metaclass or module type with its own
            ``__setattr__``, a read-only module), located at the exact rule if one names it.
        """
        try:
            setattr(self.owner, self.attr, self.new)
        except Exception as exc:
            exact = self.plan.exact
            raise PolicyTargetError(
                f"target {self.plan.target.display!r} cannot be patched: setting it on "
                f"{describe(self.owner)} raised {type(exc).__name__}: {exc}",
                exact.position if exact is not None else None,
                rule=exact.pattern.text if exact is not None else None,
            ) from None

    def still_ours(self) -> bool:
        return vars(self.owner).get(self.attr, MISSING) is self.new

    def restore(self) -> bool:
        """Put the original back if the attribute still holds our wrapper."""
        if not self.still_ours():
            return False
        if self.original is MISSING:
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
        if vars(self.module).get(self.name, MISSING) is not self.new:
            return False
        setattr(self.module, self.name, self.original)
        return True


class HookRecord(AliasRecord):
    """A function of torch wrapped by policycompile itself, not by a rule (the process
    group's ``init_process_group`` and ``destroy_process_group``, watched for the ranks)."""


@dataclass
class ModulePlan:
    """Everything the policy does to one module."""

    module: str
    plans: list[Plan] = field(default_factory=list)
    # exact targets that are missing or cannot be patched
    problems: list[PolicyError] = field(default_factory=list)
    # what patterns reach but cannot be patched: one line each, for warnings
    skipped: list[str] = field(default_factory=list)
    # re-exports left for a later pass (``reexports=False``)
    deferred: bool = False


#: Modules that implement torch.compile (and policycompile itself): wrapping their functions
#: would change how Dynamo traces and reads its own flags. Patterns never reach them, and an
#: exact rule naming something in them is an error.
INTERNAL = ("torch._dynamo", "torch._inductor", "torch.compiler", "torch._guards", "torch._logging")


def is_internal(module: str) -> bool:
    """Whether ``module`` is part of torch.compile's machinery (see INTERNAL) or of
    policycompile itself (its examples are ordinary code)."""
    if module == "policycompile" or module.startswith("policycompile._"):
        return True
    return any(module == m or module.startswith(m + ".") for m in INTERNAL)


def plan_module(
    policy: Policy,
    module: types.ModuleType,
    matched: set[Rule],
    only: str | None = None,
    *,
    reexports: bool | None = None,
) -> ModulePlan:
    """Decide, without changing anything, what the policy does to ``module``.

    Objects that already carry the policy's wrapper for the same name are left alone, so a
    module can be planned again once it has finished executing. A policy wrapper found under
    another name (a re-export of a patched function) is wrapped again, as a hand decorator
    on the re-exported name would wrap the decorated function.

    :param matched: receives every rule that matched an object here (for unused-rule lists).
    :param only: consider just this module attribute (and what a class defines).
    :param reexports: True plans only exact rules naming functions defined in another module
        (``from .impl import fn``), False everything else, None both.
    """
    name = policy_module_name(module)
    result = ModulePlan(name or "?")
    if name is None or not policy.tree.covers_module(name):
        return result
    targets: list[Target] = []
    if only is None:
        targets.extend(_exact_targets(policy, module, name, result))
    if is_internal(name):
        for target in targets:
            result.problems.append(_internal(target, policy))
        return result
    # Exact rules first: a rule that names an object through an alias (`Public = Impl`,
    # a re-export, a lambda) decides it under the name the rule gives.
    skipped: list[tuple[str, str]] = []
    targets.extend(module_targets(module, only, skipped))
    if reexports is not True:  # the re-export pass sees the same module a second time
        result.skipped = [
            f"{where.replace(':', '.', 1)}: {why}"
            for where, why in skipped
            if policy.tree.matches(where)
        ]
    seen: set[tuple[int, str]] = set()
    for target in targets:
        key = (id(target.owner), target.attr)
        if key in seen:
            continue
        seen.add(key)
        if reexports is not None and is_reexport(target) != reexports:
            result.deferred = result.deferred or not reexports
            continue
        ours = patch_info(target.raw)
        if ours is not None and ours.name == target.name:
            continue
        rules = policy.tree.matches(target.name)
        matched.update(rules)
        plan = decide(policy, target)
        if plan is None:
            continue
        depth = len(split_name(target.name)[0])
        exact = [r for r, d in rules.items() if d == depth and r.pattern.is_exact]
        if exact:
            plan = dataclasses.replace(plan, exact=exact[0])
        for note in plan.notes:
            log.debug("%s: %s", target.display, note)
        result.plans.append(plan)
    return result


def is_reexport(target: Target) -> bool:
    """Whether ``target`` is a module global holding a function defined elsewhere."""
    return target.kind is Kind.FUNCTION and target.raw.__module__ != target.owner.__name__


def _internal(target: Target, policy: Policy) -> PolicyTargetError:
    rule = next((r for r in policy.tree.matches(target.name) if r.pattern.is_exact), None)
    return PolicyTargetError(
        f"target {target.display!r} cannot be patched: {target.module} is part of "
        "torch.compile itself, and wrapping it would change how Dynamo traces",
        rule.position if rule is not None else None,
        rule=rule.pattern.text if rule is not None else None,
    )


def _exact_targets(
    policy: Policy, module: types.ModuleType, name: str, result: ModulePlan
) -> Iterator[Target]:
    """Check every exact rule that names something inside ``module`` and yield what it
    names, under the name the rule gives (``module_targets`` lists objects under their own
    names, which differ for aliases, re-exports, lambdas and classes made by factories)."""
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
            yield from _lookup(module, name, rest, rule)
        except PolicyTargetError as exc:
            result.problems.append(exc)


def _lazy_export(module: types.ModuleType, attr: str) -> tuple[str, str] | None:
    """(defining module, qualified name) of an attribute that ``module`` resolves on first use
    (a module ``__getattr__``, as transformers' lazy modules have), or None."""
    if "__getattr__" not in vars(module) and "__getattr__" not in vars(type(module)):
        return None
    try:
        obj = getattr(module, attr)  # the module's own lookup: it may import what defines it
    except Exception:
        return None
    owner, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(owner, str) or not isinstance(qual, str) or owner == module.__name__:
        return None
    return owner, qual


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


def _cannot(rule: Rule, what: str) -> PolicyTargetError:
    return PolicyTargetError(
        f"target {rule.pattern.text!r} cannot be patched: {what}",
        rule.position,
        rule=rule.pattern.text,
    )


def _lookup(module: types.ModuleType, name: str, rest: tuple[str, ...], rule: Rule) -> list[Target]:
    """What the exact ``rule`` names below ``module``: ``rest`` are the segments after the
    module. A rule ending at a class names its members; one ending at a submodule names
    nothing here (that module is planned when it is imported).

    :raises PolicyTargetError: the path names nothing, or something that cannot be patched.
    """
    owner: Any = module
    where = name
    path: list[str] = []
    for i, seg in enumerate(rest):
        last = i == len(rest) - 1
        if isinstance(owner, types.ModuleType):
            if seg not in vars(owner):
                if rule.pattern.module_end is None and _is_submodule(owner, where, seg):
                    return []  # checked when that submodule is imported
                lazy = _lazy_export(owner, seg)
                if lazy is not None:
                    defining, qual = lazy
                    named = ".".join((defining, qual, *rest[i + 1 :]))
                    raise _cannot(
                        rule,
                        f"{where}.{seg} is exported lazily by {where} (it is looked up on "
                        f"first use); it is defined in {defining}: name it {named}",
                    )
                raise _missing(rule, f"module {where}", seg, vars(owner))
            raw = vars(owner)[seg]
        else:
            if seg not in vars(owner):
                qual = f"{owner.__qualname__}.{seg}"
                inherited = inherited_member(owner, seg, name, ".".join(path)) if last else None
                if inherited is not None:
                    return [inherited]
                if not any(seg in vars(b) for b in owner.__mro__):
                    raise _missing(rule, f"class {where}", seg, dir(owner))
                raise _cannot(rule, f"{name}.{qual} is {describe(_mro_get(owner, seg))}")
            raw = vars(owner)[seg]
        where = f"{where}.{seg}"
        path.append(seg)
        if is_class(raw):
            why = refuses_setattr(raw)
            if why is not None:
                raise _cannot(rule, f"{where} is {why}")
            owner = raw
            if last:
                return list(class_targets(raw, name, ".".join(path)))
            continue
        if isinstance(raw, types.ModuleType):
            real = vars(raw).get("__name__")
            if real == where or last:
                return []  # a submodule: planned under its own name when imported
            tail = ".".join(rest[i + 1 :])
            raise _cannot(
                rule,
                f"{where} is the module {real}, imported under another name; "
                f"name what it defines as {real}.{tail}",
            )

        found = unwrap(raw)
        if found is None:
            raise _cannot(rule, f"{where} is {describe(raw)}")
        if not last:
            raise _cannot(
                rule,
                f"{where} is a function, and what is defined inside a function has no "
                "attribute to patch",
            )
        kind, func = found
        if isinstance(owner, types.ModuleType):
            kind = Kind.FUNCTION
        qual = ".".join(path)
        return [Target(f"{name}:{qual}", owner, seg, raw, func, kind, name)]
    return []


def _mro_get(cls: type, attr: str) -> Any:
    for base in cls.__mro__:
        if attr in vars(base):
            return vars(base)[attr]
    return None
