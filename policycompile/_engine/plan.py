"""Deciding what the policy does to one target: the plan, with the decorators a person would
have written and the rule behind each (docs/policy.md, "What a rule reaches")."""

from __future__ import annotations

import dataclasses
import logging
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import PolicyConflictError, PolicyTargetError
from .._policy.checks import mode_with_options
from .._policy.keys import (
    ALLOW,
    COMPILE,
    CONFIG_PREFIX,
    CONSTANT,
    DISABLE,
    EOGB,
    EXCLUSIVE,
    MARKS,
    NESTED,
    OPTION_PREFIX,
    SECTION8_API,
    STANCE,
    thaw,
)
from .._policy.patterns import split_name
from .._policy.policy import Policy
from .._policy.tree import Decision, Found, Rule, RuleRef
from .._torch import dynamo as _dynamo
from .targets import (
    Kind,
    Target,
)

log = logging.getLogger("policycompile")


@dataclass(slots=True)
class Plan:
    """What the policy does to one target: the decorators a person would have written.
    Never changed once made (not frozen, as :class:`~.targets.Target`)."""

    target: Target
    compile: Mapping[str, Any] | None  # torch.compile keywords, when a compile entry
    disable: bool
    error_on_graph_break: bool | None
    rules: Mapping[str, RuleRef]  # key -> the rule that decided it
    notes: tuple[str, ...] = ()
    exact: Rule | None = None  # the rule that names this target exactly, if one does
    marks: tuple[str, ...] = ()  # the tracing marks (per-function controls), innermost first
    disable_recursive: bool = True  # torch.compiler.disable(fn, recursive=...)
    dynamo_config: Mapping[str, Any] | None = None  # torch._dynamo.config.patch(**...)
    stance: str | None = None  # torch.compiler.set_stance(...) around the compile entry

    @property
    def decorators(self) -> list[str]:
        """The hand-written equivalent, outermost first (docs/apply.md, "Wrapping order")."""
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


def _is_dunder(attr: str) -> bool:
    return attr.startswith("__") and attr.endswith("__") and attr != "__call__"


def _rule_text(decision: Decision) -> str:
    return f"{decision.winner.source} ({decision.position.short})"


def decide(policy: Policy, target: Target, found: Found | None = None) -> Plan | None:
    """The plan for ``target``, or None when the policy leaves it alone (``found``: the
    tree's ``found(target.name)``, when the caller has it).

    Inheritance reaches as docs/policy.md ("What a rule reaches") says: ``compile`` reaches
    module-level functions and the ``forward`` of ``nn.Module`` subclasses; other methods
    only from a rule that matches them; dunder methods other than ``__call__`` only from a
    rule that matches them.

    A plan is a function of the rules that match the target's name (and at which depths),
    the depth of the name, and what kind of member it is, except for compile entries (is
    the function compiled already?) and inherited members (whose notes name the base): the
    rest is decided once per such signature, so a module of thousands of functions under
    one broad rule costs a few dictionary lookups per function.
    """
    memo = policy.memo
    key = (
        "plan",
        *policy.tree.signature(target.name, found),
        target.kind is not Kind.FUNCTION and not target.is_forward,
        _is_dunder(target.attr),
    )
    known: Any = memo.get(key, _UNDECIDED) if target.defined_in is None else _UNDECIDED
    if known is _UNDECIDED:
        plan = _decide(policy, target)
        if target.defined_in is None and (plan is None or plan.compile is None):
            memo[key] = None if plan is None else _fields(plan)
        return plan
    if known is None:
        return None
    fields: tuple[Any, ...] = known
    return Plan(target, *fields)


_UNDECIDED: Any = object()


def _fields(plan: Plan) -> tuple[Any, ...]:
    """Everything of ``plan`` but its target, in the order of Plan's fields."""
    return tuple(getattr(plan, f.name) for f in dataclasses.fields(plan)[1:])


def _decide(policy: Policy, target: Target) -> Plan | None:
    decisions = _reaching(policy, target)
    notes: list[str] = []
    want_compile, want_disable = _compile_or_disable(target, decisions, notes)
    marks = tuple(m for m in MARKS if (d := decisions.get(m)) is not None and d.value is True)
    _check_combinations(target, decisions, marks, want_compile, want_disable)
    entry_only = _entry_only(target, decisions, want_compile)
    eogb = decisions.get(EOGB)
    if not (want_compile or want_disable or eogb is not None or marks):
        return None
    kept = {
        k: d
        for k, d in decisions.items()
        if (want_compile and (k == COMPILE or k.startswith(OPTION_PREFIX)))
        or (want_disable and k == DISABLE)
        or k == EOGB
        or k in marks
        or k in entry_only
    }
    if target.defined_in is not None:
        notes.append(
            f"inherited from {target.defined_in.__module__}."
            f"{target.defined_in.__qualname__}; the wrapper is set on the subclass only"
        )
    dis = decisions.get(DISABLE)
    recursive = True
    if want_disable and dis is not None and not isinstance(dis.value, bool):
        recursive = bool(thaw(dis.value).get("recursive", True))
    stance = entry_only.get(STANCE)
    config = {
        k[len(CONFIG_PREFIX) :]: thaw(d.value)
        for k, d in sorted(entry_only.items())
        if k.startswith(CONFIG_PREFIX)
    }
    depth = len(split_name(target.name)[0])
    exact = [r for r, d in policy.tree.found(target.name) if d == depth]
    return Plan(
        target,
        policy.resolve(target.name, _direct_only(target)).compile_options if want_compile else None,
        want_disable,
        None if eogb is None else bool(eogb.value),
        {key: policy.ref(d.winner) for key, d in kept.items()},
        tuple(notes),
        exact=next((r for r in exact if r.pattern.is_exact), None),
        marks=marks,
        disable_recursive=recursive,
        dynamo_config=config or None,
        stance=None if stance is None else str(stance.value),
    )


def _direct_only(target: Target) -> frozenset[str]:
    """The keys that only a rule matching ``target`` itself may set."""
    return _DIRECT_ONLY[
        (target.kind is not Kind.FUNCTION and not target.is_forward, _is_dunder(target.attr))
    ]


_DIRECT_ONLY = {
    (method, dunder): frozenset(
        {ALLOW, CONSTANT}
        | ({COMPILE, NESTED} if method else set())  # reach like compile
        | ({COMPILE, EOGB, DISABLE, *MARKS} if dunder else set())
    )
    for method in (False, True)
    for dunder in (False, True)
}


def _reaching(policy: Policy, target: Target) -> dict[str, Decision]:
    """The decisions of the rules that reach ``target``."""
    decisions = dict(policy.resolve(target.name, _direct_only(target)).decisions)
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
    return decisions


def _compile_or_disable(
    target: Target, decisions: Mapping[str, Decision], notes: list[str]
) -> tuple[bool, bool]:
    """(compile entry, disabled): the more specific of two rules asking for both wins; a tie
    is a conflict."""
    comp, dis = decisions.get(COMPILE), decisions.get(DISABLE)
    want_compile = comp is not None and comp.value is True
    want_disable = dis is not None and dis.value is not False
    if comp is not None and dis is not None and want_compile and want_disable:
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
    return want_compile, want_disable


def _entry_only(
    target: Target, decisions: Mapping[str, Decision], want_compile: bool
) -> dict[str, Decision]:
    """``stance`` and ``dynamo_config`` decisions, which sit around a compile entry only; an
    exact rule giving them to a function that is not one is an error."""
    entry_only = {k: d for k, d in decisions.items() if k == STANCE or k.startswith(CONFIG_PREFIX)}
    if want_compile:
        return entry_only
    for key, d in entry_only.items():
        if d.direct and d.winner.rule is not None and d.winner.rule.pattern.is_exact:
            raise PolicyTargetError(
                f"{key} on {target.display!r} ({_rule_text(d)}) means nothing: it is not a "
                "compile entry (set_stance and config.patch are placed around a "
                "torch.compile'd function; give it 'compile: true' too)",
                d.position,
                rule=d.winner.source,
            )
    return {}


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


def patch_info(obj: Any) -> Plan | None:
    """The plan a policy wrapper (function or descriptor) was made for, else None: every
    wrapper carries its plan as ``__policycompile__``."""
    kind = type(obj)
    if kind is not types.FunctionType and isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    info = getattr(obj, "__policycompile__", None)
    return info if isinstance(info, Plan) else None


def wrapped_as(obj: Any, name: str) -> bool:
    """Whether ``obj`` is the policy's wrapper for ``name`` already (nothing to patch)."""
    info = patch_info(obj)
    return info is not None and info.target.name == name
