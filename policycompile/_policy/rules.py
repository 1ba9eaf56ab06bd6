"""The values precedence works with: a rule and its settings, the candidates for a key of a
name, the decision and the resolution of a name, and how a rule is referred to in reports
(docs/policy.md, "Precedence"). Pure: imports neither torch nor user code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import Position
from .keys import OPTION_PREFIX, thaw
from .patterns import Pattern


@dataclass(frozen=True)
class Setting:
    """One key set by one rule, with the file position of the rule's pattern."""

    key: str
    value: Any
    position: Position
    reason: str | None = None


@dataclass(frozen=True)
class Rule:
    """A pattern and the keys it sets. ``settings`` is ordered by key."""

    pattern: Pattern
    settings: tuple[Setting, ...]

    def __hash__(self) -> int:
        # Rules are hashed into sets at every definition a policy patches (which rules
        # matched): the hash of the whole rule is computed once, in this process only
        # (a string's hash differs from process to process, so it is never pickled)
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = self.__dict__["_hash"] = hash((self.pattern, self.settings))
        return cached

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def get(self, key: str) -> Setting | None:
        """The setting for ``key``, if this rule sets it."""
        for setting in self.settings:
            if setting.key == key:
                return setting
        return None

    @property
    def position(self) -> Position:
        """Where the pattern is written (the earliest layer that sets one of its keys)."""
        return min(s.position for s in self.settings)


@dataclass(frozen=True)
class RuleRef:
    """A rule as reports and plans name it: its pattern and where it is written.

    Hashable, and the same in every process of a run: identity is the pattern, the line and
    ``origin``, the file relative to the root policy's folder; ``file`` is how this process
    names the file, for display only. A child process that loads the policy by its absolute
    path, or a rank whose checkout is elsewhere, names the same rule.

    :param site: not a policy rule but a ``torch.compile`` call of the program (``suggest``
        observes those), at ``file:line``.
    """

    pattern: str
    file: str = field(compare=False)
    line: int
    origin: str
    site: bool = False

    @property
    def where(self) -> str:
        """``file:line``."""
        return f"{self.file}:{self.line}"

    def __str__(self) -> str:
        if self.site:
            return f"torch.compile at {self.where}"
        return f"{self.pattern} ({self.where})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``from_dict`` reads it back in another process)."""
        return {
            "pattern": self.pattern,
            "file": self.file,
            "line": self.line,
            "origin": self.origin,
            "site": self.site,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RuleRef:
        return cls(
            str(doc["pattern"]),
            str(doc["file"]),
            int(doc["line"]),
            str(doc["origin"]),
            bool(doc.get("site", False)),
        )

    @classmethod
    def at_site(cls, file: str, line: int) -> RuleRef:
        """A ``torch.compile`` call of the program, at ``file:line``."""
        return cls("torch.compile", file, line, file, site=True)


@dataclass(frozen=True)
class Candidate:
    """A rule that sets a key for a name, matching the name or one of its ancestors."""

    rule: Rule | None  # None for a file-level default (``compile:`` at the top of the file)
    setting: Setting
    depth: int  # number of name segments of the node it matched

    @property
    def specificity(self) -> tuple[int, int, int, int]:
        if self.rule is None:
            return (-1, 0, 0, 0)
        return self.rule.pattern.specificity(self.depth)

    @property
    def source(self) -> str:
        """The pattern, or ``compile:`` for a file-level default."""
        return self.rule.pattern.text if self.rule is not None else "compile:"


@dataclass(frozen=True)
class Decision:
    """The effective value of one key for one name, and the candidate that won it."""

    key: str
    winner: Candidate
    direct: bool  # the winning rule matched the name itself, not an ancestor

    @property
    def value(self) -> Any:
        return self.winner.setting.value

    @property
    def position(self) -> Position:
        return self.winner.setting.position


@dataclass(frozen=True)
class Resolution:
    """Effective settings of one name: key -> Decision. Keys no rule sets are absent."""

    name: str
    decisions: Mapping[str, Decision]

    def get(self, key: str, default: Any = None) -> Any:
        """The effective value of ``key``, or ``default``."""
        decision = self.decisions.get(key)
        return decision.value if decision is not None else default

    @property
    def compile_options(self) -> dict[str, Any]:
        """The ``torch.compile`` keywords in effect (file-level defaults merged with rules)."""
        return {
            k[len(OPTION_PREFIX) :]: thaw(d.value)
            for k, d in sorted(self.decisions.items())
            if k.startswith(OPTION_PREFIX)
        }

    def values(self) -> dict[str, Any]:
        """Key -> plain value."""
        return {k: thaw(d.value) for k, d in sorted(self.decisions.items())}


@dataclass(frozen=True)
class Loser:
    """A candidate that lost, and the criterion it lost on."""

    candidate: Candidate
    why: str


@dataclass(frozen=True)
class Explanation:
    """What ``explain`` shows: every key's decision and the candidates that lost."""

    resolution: Resolution
    losers: Mapping[str, tuple[Loser, ...]]


def why_lost(loser: Candidate, winner: Candidate, name: tuple[str, ...]) -> str:
    """The criterion ``loser`` lost to ``winner`` on, for the segments ``name``."""
    if loser.rule is None:
        return "a file-level default, which any rule overrides"
    a, b = loser.specificity, winner.specificity
    if a[0] != b[0]:
        return f"fewer literal segments ({a[0]} < {b[0]})"
    if a[1] != b[1]:
        node = ".".join(name[: loser.depth])
        return f"matches a shallower node ({node!r}, depth {a[1]} < {b[1]})"
    if a[2] != b[2]:
        return f"fewer segments mixing text and '*' ({a[2]} < {b[2]})"
    if a[3] != b[3]:
        return f"more '**' segments ({-a[3]} > {-b[3]})"
    return "equally specific, same value"
