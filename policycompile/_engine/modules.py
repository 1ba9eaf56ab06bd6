"""What the policy does to one module: its targets found and checked (exact rules that name
nothing are located errors), each decided into a plan, without changing anything."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._errors import PolicyError, PolicyTargetError
from .._policy.policy import Policy
from .._policy.tree import Rule
from .containers import Held, in_containers
from .plan import Plan, decide, patch_info, wrapped_as
from .targets import (
    Kind,
    Target,
    class_targets,
    describe,
    inherited_member,
    is_class,
    is_internal,
    module_targets,
    policy_module_name,
    refuses_setattr,
    unwrap,
    wrapped_chain,
)

log = logging.getLogger("policycompile")


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


def plan_module(
    policy: Policy,
    module: types.ModuleType,
    matched: set[Rule],
    *,
    reexports: bool | None = None,
    settled: Callable[[str, Any], bool] | None = None,
) -> ModulePlan:
    """Decide, without changing anything, what the policy does to ``module``.

    Objects that already carry the policy's wrapper for the same name are left alone, so a
    module can be planned again once it has finished executing. A policy wrapper found under
    another name (a re-export of a patched function) is wrapped again, as a hand decorator
    on the re-exported name would wrap the decorated function.

    :param matched: receives every rule that matched an object here (for unused-rule lists).
    :param reexports: True plans only exact rules naming functions defined in another module
        (``from .impl import fn``), False everything else, None both.
    :param settled: module attributes to leave out, as for :func:`module_targets`.
    """
    name = policy_module_name(module)
    result = ModulePlan(name or "?")
    if name is None or not policy.tree.covers_module(name):
        return result
    # (module_targets leaves out what is the policy's already; so do the exact targets)
    exact = _exact_targets(policy, module, name, result)
    targets = [t for t in exact if not wrapped_as(t.raw, t.name)]
    if is_internal(name):
        for target in targets:
            result.problems.append(_internal(target, policy))
        return result
    # Exact rules first: a rule that names an object through an alias (`Public = Impl`,
    # a re-export, a lambda) decides it under the name the rule gives.
    skipped: list[tuple[str, str]] = []
    targets.extend(module_targets(module, None, skipped, wrapped_as, settled))
    if reexports is not True:  # the re-export pass sees the same module a second time
        result.skipped = [
            f"{where.replace(':', '.', 1)}: {why}"
            for where, why in skipped
            if policy.tree.matches(where)
        ]
    result.plans, result.deferred = plan_targets(policy, targets, matched, reexports=reexports)
    return result


def plan_targets(
    policy: Policy,
    targets: Iterable[Target],
    matched: set[Rule],
    *,
    reexports: bool | None = None,
) -> tuple[list[Plan], bool]:
    """The plans for ``targets`` (each owner's attribute once, the first target naming it
    decides), and whether re-exports were left for a later pass; see :func:`plan_module`."""
    deferred = False
    seen: set[tuple[int, str]] = set()

    def chosen() -> Iterator[Target]:
        nonlocal deferred
        for target in targets:
            key = (id(target.owner), target.attr)
            if key in seen:
                continue
            seen.add(key)
            if reexports is not None and is_reexport(target) != reexports:
                deferred = deferred or not reexports
                continue
            yield target

    plans = list(iter_plans(policy, chosen(), matched))
    return plans, deferred


def iter_plans(policy: Policy, targets: Iterable[Target], matched: set[Rule]) -> Iterator[Plan]:
    """The plan of each of ``targets`` the policy wraps, decided as it is asked for (one
    definition's targets are wrapped as they are decided: :meth:`PolicyHandle.define`).

    :param matched: receives every rule that matched one of them (for unused-rule lists).
    """
    found_of = policy.tree.found
    counted: set[int] = set()
    for target in targets:
        found = found_of(target.name)
        if id(found) not in counted:  # shared by many names: their rules counted once
            counted.add(id(found))
            matched.update(rule for rule, _ in found)
        plan = decide(policy, target, found)
        if plan is None:
            continue
        for note in plan.notes:
            log.debug("%s: %s", target.display, note)
        yield plan


@dataclass
class Planned:
    """What the policy would do to every module imported so far (``policycompile plan``)."""

    plans: list[Plan]
    problems: list[PolicyError]  # each once, though a module may reach a rule by several paths
    unused: list[Rule]
    #: module-level container items holding what would be wrapped: ``apply`` points the
    #: rebindable ones at the wrapper, and reports the others
    held: list[Held] = field(default_factory=list)


def plan_imported(policy: Policy) -> Planned:
    """Plan every covered module in ``sys.modules``, in name order, changing nothing."""
    matched: set[Rule] = set()
    out = Planned([], [], [])
    named = [
        (name, m)
        for m in list(sys.modules.values())
        if isinstance(m, types.ModuleType) and (name := policy_module_name(m)) is not None
    ]
    seen: set[str] = set()
    for name, module in sorted(named, key=lambda nm: nm[0]):
        if policy.tree.covers_module(name):
            planned = plan_module(policy, module, matched)
            out.plans.extend(planned.plans)
            for problem in planned.problems:
                if str(problem) not in seen:
                    seen.add(str(problem))
                    out.problems.append(problem)
    out.unused = [r for r in policy.rules if r not in matched]
    functions = {
        id(p.target.raw): p.target.raw for p in out.plans if p.target.kind is Kind.FUNCTION
    }
    out.held = list(in_containers([m for _, m in named], functions))
    return out


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

        if last and _placed_under(raw, f"{name}:{'.'.join(path)}"):
            return []  # wrapped at its definition, under a decorator written over it
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


def _placed_under(raw: Any, name: str) -> bool:
    """Whether ``raw`` (``functools.lru_cache``'s object, another decorator's) wraps, through
    ``__wrapped__``, the policy's wrapper for ``name``, placed at the definition."""
    if isinstance(raw, types.FunctionType):
        return False
    for inner in wrapped_chain(raw):
        info = patch_info(inner)
        if info is not None:
            return bool(info.target.name == name)
    return False


def _mro_get(cls: type, attr: str) -> Any:
    for base in cls.__mro__:
        if attr in vars(base):
            return vars(base)[attr]
    return None
