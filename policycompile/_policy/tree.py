"""Rules, the rule trie, and precedence: which rule sets each key of a name
(docs/policy.md, "Precedence"). Pure: imports neither torch nor user code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import PolicyConflictError, Position
from .keys import COMPILE, OPTION_PREFIX, thaw
from .patterns import Glob, Pattern, split_name


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


def _why_lost(loser: Candidate, winner: Candidate, name: tuple[str, ...]) -> str:
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


class _Node:
    __slots__ = ("double", "globs", "literal", "loops", "rules")

    def __init__(self, loops: bool = False) -> None:
        self.literal: dict[str, _Node] = {}
        self.globs: dict[str, tuple[Glob, _Node]] = {}
        self.double: _Node | None = None
        self.rules: list[Rule] = []
        self.loops = loops  # reached through '**': consumes any further segment


def _edge_key(pattern: Pattern, index: int) -> str:
    # A segment right after ':' only matches where the name's module ends.
    pinned = pattern.module_end is not None and index == pattern.module_end
    return (":" if pinned else "") + pattern.segments[index]


class RuleTree:
    """The trie over dotted segments. ``resolve`` costs O(depth of the name), not O(rules).

    :param rules: the rules, one per distinct pattern (layers already merged).
    :param defaults: file-level settings, the lowest-precedence candidates for every name.
    """

    def __init__(self, rules: Iterable[Rule], defaults: Iterable[Setting] = ()) -> None:
        self.rules = tuple(rules)
        self.defaults = tuple(defaults)
        self._root = _Node()
        self._cache: dict[tuple[str, frozenset[str]], Resolution] = {}
        #: name -> matches(name): a name is asked for by the import hook, the plan and the
        #: resolution in turn (a memo, cleared when it grows large)
        self._matches: dict[str, dict[Rule, int]] = {}
        self._heads: set[str] = set()  # first segments, literal
        self._head_globs: list[Glob] = []
        for rule in self.rules:
            self._insert(rule)

    def _insert(self, rule: Rule) -> None:
        node = self._root
        for i, seg in enumerate(rule.pattern.segments):
            if seg == "**":
                if node.double is None:
                    node.double = _Node(loops=True)
                node = node.double
            elif "*" in seg:
                key = _edge_key(rule.pattern, i)
                if key not in node.globs:
                    node.globs[key] = (Glob(seg), _Node())
                node = node.globs[key][1]
            else:
                node = node.literal.setdefault(_edge_key(rule.pattern, i), _Node())
        node.rules.append(rule)
        head = rule.pattern.segments[0]
        if "*" in head:
            self._head_globs.append(Glob(head))
        else:
            self._heads.add(head)

    def covers_package(self, top_level: str) -> bool:
        """Whether any rule can match a name under the top-level package ``top_level``."""
        return top_level in self._heads or any(g.match(top_level) for g in self._head_globs)

    @staticmethod
    def _closure(nodes: Iterable[_Node]) -> list[_Node]:
        out: list[_Node] = []
        todo = list(nodes)
        seen: set[int] = set()
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            out.append(node)
            if node.double is not None:
                todo.append(node.double)  # '**' matches zero segments
        return out

    def covers_module(self, module: str) -> bool:
        """Whether any rule can match ``module``, an ancestor of it, or something inside it.

        The import hook asks this for every import: a dict lookup for uncovered packages.
        """
        segments = module.split(".")
        if not self.covers_package(segments[0]):
            return False
        states = self._closure([self._root])
        for seg in segments:
            nxt: list[_Node] = []
            for node in states:
                for key in (seg, ":" + seg):
                    child = node.literal.get(key)
                    if child is not None:
                        nxt.append(child)
                nxt.extend(child for regex, child in node.globs.values() if regex.match(seg))
                if node.loops:
                    nxt.append(node)
            states = self._closure(nxt)
            if not states:
                return False
            if any(node.rules for node in states):
                return True  # a rule on the module or an ancestor governs all of it
        return True  # patterns continue below the module

    def matches(self, name: str) -> dict[Rule, int]:
        """Every rule matching ``name`` or an ancestor, with the deepest node it matched."""
        found = self._matches.get(name)
        if found is None:
            if len(self._matches) >= 1 << 16:
                self._matches.clear()
            found = self._matches[name] = self._match(name)
        return dict(found)

    def _match(self, name: str) -> dict[Rule, int]:
        segments, module_end = split_name(name)
        found: dict[Rule, int] = {}
        states = self._closure([self._root])
        for j, seg in enumerate(segments):
            boundary = module_end is None or module_end == j
            nxt: list[_Node] = []
            for node in states:
                child = node.literal.get(seg)
                if child is not None:
                    nxt.append(child)
                if boundary:
                    child = node.literal.get(":" + seg)
                    if child is not None:
                        nxt.append(child)
                for key, (regex, gchild) in node.globs.items():
                    if (boundary or not key.startswith(":")) and regex.match(seg):
                        nxt.append(gchild)
                if node.loops:
                    nxt.append(node)
            if not nxt:
                break
            states = self._closure(nxt)
            for node in states:
                for rule in node.rules:
                    found[rule] = j + 1
        return found

    def candidates(self, name: str) -> dict[str, list[Candidate]]:
        """Key -> the candidates that set it for ``name``, best first."""
        out: dict[str, list[Candidate]] = {}
        for setting in self.defaults:
            out.setdefault(setting.key, []).append(Candidate(None, setting, 0))
        for rule, depth in self.matches(name).items():
            for setting in rule.settings:
                out.setdefault(setting.key, []).append(Candidate(rule, setting, depth))
        for cands in out.values():
            cands.sort(key=lambda c: (c.specificity, c.source), reverse=True)
        return out

    def resolve(self, name: str, direct_only: frozenset[str] = frozenset()) -> Resolution:
        """The effective settings of ``name``.

        :param direct_only: keys for which only rules matching the name itself count (not
            inheritance from an ancestor).
        :raises PolicyConflictError: two equally specific rules disagree on a key.
        """
        cache_key = (name, direct_only)
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        depth = len(split_name(name)[0])
        decisions: dict[str, Decision] = {}
        for key, cands in self.candidates(name).items():
            if key in direct_only or (key.startswith(OPTION_PREFIX) and COMPILE in direct_only):
                cands = [c for c in cands if c.depth == depth or c.rule is None]
            if not cands:
                continue
            best = cands[0]
            for other in cands[1:]:
                if other.specificity != best.specificity:
                    break
                if other.setting.value != best.setting.value:
                    raise _conflict(name, key, best, other)
            decisions[key] = Decision(key, best, best.depth == depth)
        entry = decisions.get(COMPILE)
        if entry is None or entry.value is not True:
            # Compile options only mean something on a compile entry.
            decisions = {k: d for k, d in decisions.items() if not k.startswith(OPTION_PREFIX)}
        result = Resolution(name, decisions)
        self._cache[cache_key] = result
        return result

    def explain(self, name: str) -> Explanation:
        """Like :meth:`resolve`, with the losing candidates and why each lost."""
        resolution = self.resolve(name)
        segments = split_name(name)[0]
        losers: dict[str, tuple[Loser, ...]] = {}
        for key, cands in self.candidates(name).items():
            if key not in resolution.decisions:
                continue
            winner = resolution.decisions[key].winner
            losers[key] = tuple(
                Loser(c, _why_lost(c, winner, segments)) for c in cands if c != winner
            )

        return Explanation(resolution, losers)


def _conflict(name: str, key: str, a: Candidate, b: Candidate) -> PolicyConflictError:
    first, second = sorted([a, b], key=lambda c: c.setting.position)
    return PolicyConflictError(
        f"conflicting rules for {name!r}: {first.source!r} ({first.setting.position.short}) "
        f"sets {key} to {thaw(first.setting.value)!r} and {second.source!r} "
        f"({second.setting.position.short}) sets it to {thaw(second.setting.value)!r}, "
        "and neither is more specific; add a rule that names it more precisely",
        first.setting.position,
        rule=first.source,
    )
