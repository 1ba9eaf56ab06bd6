"""The loaded policy: frozen, hashable rules with their positions, and the resolver over them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .._errors import Position
from .tree import Candidate, Explanation, Resolution, Rule, RuleRef, RuleTree, Setting


@dataclass(frozen=True)
class Policy:
    """A validated policy with every layer (``extends``, profile) merged.

    Build one with :func:`policycompile.load`.
    """

    path: str
    profile: str | None
    strict: bool
    rules: tuple[Rule, ...]
    defaults: tuple[Setting, ...]
    profiles: tuple[str, ...]
    sources: tuple[str, ...]
    fingerprint: str
    torch_version: str | None = None  # the torch the compile options were checked against
    tree: RuleTree = field(init=False, repr=False, compare=False, hash=False)
    #: what the layers above compute as a pure function of the policy, once (plans by the
    #: signature of a name, ``RuleRef`` objects): thousands of names share a few rules
    memo: dict[Any, Any] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "tree", RuleTree(self.rules, self.defaults))

    def resolve(self, name: str, direct_only: frozenset[str] = frozenset()) -> Resolution:
        """The effective settings of ``name``, as ``pkg.mod.Class.fn`` or ``pkg.mod:Class.fn``.

        :param direct_only: keys that only rules matching ``name`` itself may set.
        :raises PolicyConflictError: when two equally specific rules disagree.
        """
        return self.tree.resolve(name, direct_only)

    def explain(self, name: str) -> Explanation:
        """Settings of ``name`` with the winning rule of each key and the candidates that lost."""
        return self.tree.explain(name)

    def ref(self, rule: Rule | Candidate) -> RuleRef:
        """How reports name ``rule`` (a candidate: the rule, at the setting that won, or the
        file-level ``compile:`` default)."""
        if isinstance(rule, Candidate):
            pattern, position = rule.source, rule.setting.position
        else:
            pattern, position = rule.pattern.text, rule.position
        key = ("ref", pattern, position.path, position.line)
        ref = self.memo.get(key)
        if ref is None:
            root = os.path.dirname(os.path.abspath(self.path))
            origin = os.path.relpath(os.path.abspath(position.path), root).replace(os.sep, "/")
            ref = self.memo[key] = RuleRef(pattern, position.path, position.line, origin)
        return ref

    def rule_at(self, pattern: str) -> Rule | None:
        """The rule written with exactly this pattern, if any."""
        for rule in self.rules:
            if rule.pattern.text == pattern:
                return rule
        return None

    @property
    def position(self) -> Position:
        """The top of the policy file."""
        return Position(self.path, 1, 1)
