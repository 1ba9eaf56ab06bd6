"""What ``explain``, ``tree`` and ``plan`` print: a policy and its decisions as text and JSON."""

from __future__ import annotations

import json
import types
from collections.abc import Sequence
from typing import Any

from .._engine.containers import Held
from .._engine.modules import Planned
from .._policy.keys import COMPILE, OPTION_PREFIX, thaw
from .._policy.policy import Policy
from .._policy.tree import Explanation


def explain_json(policy: Policy, explanation: Explanation) -> dict[str, Any]:
    """The ``explain --json`` document (docs/policy.md, "From Python and the command line")."""
    settings: dict[str, Any] = {}
    for key, decision in sorted(explanation.resolution.decisions.items()):
        win = decision.winner
        settings[key] = {
            "value": thaw(decision.value),
            "rule": decision.position.short,
            "pattern": win.source,
            "reason": win.setting.reason,
            "inherited": not decision.direct and win.rule is not None,
            "lost": [
                {
                    "pattern": loser.candidate.source,
                    "rule": loser.candidate.setting.position.short,
                    "value": thaw(loser.candidate.setting.value),
                    "why": loser.why,
                }
                for loser in explanation.losers.get(key, ())
            ],
        }
    return {
        "name": explanation.resolution.name,
        "policy": policy.path,
        "profile": policy.profile,
        "settings": settings,
    }


def _fmt(value: Any) -> str:
    return json.dumps(thaw(value))


def explain_text(policy: Policy, explanation: Explanation) -> str:
    """A readable explanation: each key, its value, the winning rule, and the losers."""
    res = explanation.resolution
    profile = f" (profile {policy.profile})" if policy.profile else ""
    lines = [f"{res.name}{profile}"]
    if not res.decisions:
        lines.append(
            "  no rule of the policy reaches this name: at run time it inherits the "
            "error_on_graph_break setting of whatever calls it (a caller's rule, or torch's "
            "default); a report names that rule for a break here"
        )
    if COMPILE not in res.decisions:
        lines.append("  compile: not a compile entry")
    for key, decision in sorted(res.decisions.items()):
        win = decision.winner
        how = "" if decision.direct or win.rule is None else ", inherited"
        line = (
            f"  {key} = {_fmt(decision.value)}    {win.source!r} at {decision.position.short}{how}"
        )
        if win.setting.reason:
            line += f"  # {win.setting.reason}"
        lines.append(line)
        for loser in explanation.losers.get(key, ()):
            c = loser.candidate
            lines.append(
                f"      lost: {c.source!r} at {c.setting.position.short} "
                f"({_fmt(c.setting.value)}): {loser.why}"
            )
    return "\n".join(lines) + "\n"


def tree_text(policy: Policy) -> str:
    """The rules as a tree of dotted segments, each node with the keys it sets."""
    root: dict[str, Any] = {}
    for rule in policy.rules:
        node = root
        for i, seg in enumerate(rule.pattern.segments):
            label = (":" if rule.pattern.module_end == i else "") + seg
            node = node.setdefault(label, {})
        node[""] = rule
    profile = f" (profile {policy.profile})" if policy.profile else ""
    lines = [f"{policy.path}{profile}: {len(policy.rules)} rules"]
    if policy.defaults:
        opts = ", ".join(f"{s.key[len(OPTION_PREFIX) :]}={_fmt(s.value)}" for s in policy.defaults)
        lines.append(f"compile defaults: {opts}")

    def walk(node: dict[str, Any], prefix: str) -> None:
        children = sorted(k for k in node if k)
        for i, label in enumerate(children):
            last = i == len(children) - 1
            child = node[label]
            text = f"{prefix}{'└── ' if last else '├── '}{label}"
            rule = child.get("")
            if rule is not None:
                keys = ", ".join(f"{s.key}={_fmt(s.value)}" for s in rule.settings)
                text += f"    [{keys}]  {rule.position.short}"
                reasons = {s.reason for s in rule.settings if s.reason}
                if reasons:
                    text += f"  # {'; '.join(sorted(reasons))}"
            lines.append(text)
            walk(child, prefix + ("    " if last else "│   "))

    walk(root, "")
    return "\n".join(lines) + "\n"


def nested_entries(plans: Sequence[Any]) -> list[tuple[str, str]]:
    """(outer, inner) compile entries where the outer one is an ``nn.Module`` forward whose
    class's ``__init__`` names the inner one's class (``GPT2Model`` builds ``GPT2Block``s):
    compiling the outer traces the inner and ignores the inner's options."""
    entries = [p for p in plans if p.compile is not None and p.target.is_forward]
    by_name = {p.target.owner.__name__: p for p in entries}
    found = []
    for outer in entries:
        init = vars(outer.target.owner).get("__init__")
        todo = [getattr(init, "__code__", None)]
        names: set[str] = set()
        while todo:  # the method's code and the code nested in it (comprehensions)
            code = todo.pop()
            if isinstance(code, types.CodeType):
                names.update(code.co_names)
                todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        for name in sorted(names & set(by_name)):
            inner = by_name[name]
            if inner is not outer:
                found.append((outer.target.display, inner.target.display))
    return found


def plan_json(policy: Policy, planned: Planned) -> dict[str, Any]:
    """The ``plan --json`` document."""
    return {
        "policy": policy.path,
        "profile": policy.profile,
        "wrapped": [
            {
                "name": p.target.display,
                "kind": p.target.kind.value,
                "decorators": p.decorators,
                "rules": {key: str(rule) for key, rule in p.rules.items()},
                "notes": list(p.notes),
            }
            for p in planned.plans
        ],
        "problems": [str(e) for e in planned.problems],
        "nested_entries": [{"outer": o, "inner": i} for o, i in nested_entries(planned.plans)],
        "unused_rules": [f"{r.pattern.text} ({r.position.short})" for r in planned.unused],
        "rebound": [_held(h, planned) for h in planned.held if h.rebindable],
        "unreached": [_held(h, planned) for h in planned.held if not h.rebindable],
    }


def _held(held: Held, planned: Planned) -> str:
    names = {id(p.target.raw): p.target.display for p in planned.plans}
    return f"{held.where} holds the original of {names.get(id(held.value), '?')}"


def plan_text(policy: Policy, planned: Planned) -> str:
    """What ``plan`` prints: each target with its decorators and rules, then the warnings."""
    lines = [f"{len(planned.plans)} objects would be wrapped by {policy.path}"]
    for p in planned.plans:
        lines += ["", f"{p.target.display}  [{p.target.kind.value}]"]
        lines += [f"    {decorator}" for decorator in p.decorators]
        lines += [f"      {key}: {rule}" for key, rule in sorted(p.rules.items())]
        lines += [f"      note: {note}" for note in p.notes]
    for outer, inner in nested_entries(planned.plans):
        lines.append(
            f"warning: {inner} is a compile entry built inside {outer}, also a compile "
            "entry: when that one is compiled, Dynamo traces this one inside it and torch "
            "ignores its own options (fullgraph) there; compile one level, not both"
        )
    severity = "error" if policy.strict else "warning"
    lines += [str(e).replace(": error: ", f": {severity}: ", 1) for e in planned.problems]
    lines += [f"unused rule: {r.pattern.text} ({r.position.short})" for r in planned.unused]
    lines += [
        f"rebound: {_held(h, planned)}: apply points it at the wrapper"
        for h in planned.held
        if h.rebindable
    ]
    lines += [
        f"unreached: {_held(h, planned)}: calls through it would not be under the policy"
        for h in planned.held
        if not h.rebindable
    ]
    return "\n".join(lines) + "\n"
