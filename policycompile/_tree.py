"""Patterns over dotted names, the rule trie, and precedence: which rule sets each key of a name.

Pure: imports neither torch nor user code.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import PolicyConflictError, PolicyPatternError, Position

#: Keys a rule can set, besides the per-option ``compile.<option>`` keys.
COMPILE = "compile"
EOGB = "error_on_graph_break"
DISABLE = "disable"
OPTION_PREFIX = "compile."
# SPEC section 8: the other per-function controls, each the decorator of the same name
NONSTRICT = "nonstrict_trace"
DONT_SKIP = "dont_skip_tracing"
ALLOW = "allow_in_graph"
CONSTANT = "assume_constant_result"
NESTED = "nested_compile_region"
STANCE = "stance"
CONFIG_PREFIX = "dynamo_config."
#: the tracing marks, innermost first (SPEC section 5)
MARKS = (NONSTRICT, DONT_SKIP, ALLOW, CONSTANT, NESTED)
#: SPEC section 8's keys and the torch function each one is: (module, name)
SECTION8_API = {
    NONSTRICT: ("torch._dynamo", "nonstrict_trace"),
    DONT_SKIP: ("torch._dynamo", "dont_skip_tracing"),
    ALLOW: ("torch.compiler", "allow_in_graph"),
    CONSTANT: ("torch.compiler", "assume_constant_result"),
    NESTED: ("torch.compiler", "nested_compile_region"),
    STANCE: ("torch.compiler", "set_stance"),
}

#: pairs of settings that cannot both hold for one function: torch rejects them, or one
#: undoes what the other asks (SPEC section 8)
EXCLUSIVE = (
    (COMPILE, ALLOW, "a compile entry cannot also be put into the graph as one opaque call"),
    (DISABLE, ALLOW, "Dynamo cannot skip a function and put it into the graph"),
    (NONSTRICT, ALLOW, "nonstrict_trace and allow_in_graph are two ways of the same thing"),
    (CONSTANT, ALLOW, "a function folded to a constant is never called from the graph"),
    (DISABLE, NONSTRICT, "Dynamo cannot skip a function and trace it non-strictly"),
    (DISABLE, NESTED, "Dynamo cannot skip a function and trace it as a nested region"),
    (NESTED, ALLOW, "a nested compile region is traced, an allow_in_graph function is not"),
)


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable mapping, used for mapping-valued compile options."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any]) -> None:
        self._items = {k: freeze(v) for k, v in sorted(items.items())}

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return repr(self._items)


def freeze(value: Any) -> Any:
    """Make a YAML value hashable: mappings become FrozenMap, lists tuples."""
    if isinstance(value, Mapping):
        return FrozenMap(value)
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain (JSON-like) form of a value made by :func:`freeze`."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Pattern:
    """A target pattern: dotted segments, ``*`` inside a segment, ``**`` as a whole segment.

    ``module_end`` is the number of segments before a ``:``, which pins where the module
    name ends; None when the pattern has no ``:``.
    """

    text: str
    segments: tuple[str, ...]
    module_end: int | None = None

    @classmethod
    def parse(cls, text: str, position: Position | None = None) -> Pattern:
        """Check and split a pattern.

        :raises PolicyPatternError: with the column of the offending segment.
        """

        def fail(message: str, offset: int = 0) -> PolicyPatternError:
            where = None
            if position is not None:
                where = Position(position.path, position.line, position.column + offset)
            return PolicyPatternError(f"bad pattern {text!r}: {message}", where, rule=text)

        if not text or text != text.strip():
            raise fail("a pattern is dotted names without spaces, such as 'pkg.mod.fn'")
        if text.count(":") > 1:
            raise fail("at most one ':' (it marks where the module name ends)", text.rfind(":"))
        module_part, colon, rest = text.partition(":")
        module_segments = module_part.split(".")
        segments = module_segments + (rest.split(".") if colon else [])
        offset = 0
        for i, seg in enumerate(segments):
            if not seg:
                raise fail("empty segment (two dots in a row, or a dot at an end)", offset)
            if seg != "**" and "**" in seg:
                raise fail(f"'**' must be a whole segment, not part of {seg!r}", offset)
            normal = unicodedata.normalize("NFKC", seg)
            if normal != seg:
                raise fail(
                    f"segment {seg!r} is not in the Unicode form Python gives names (NFKC): "
                    f"Python reads the identifier as {normal!r}, so write that",
                    offset,
                )
            if seg != "**" and not seg.replace("*", "x").isidentifier():
                raise fail(f"segment {seg!r} is not a Python identifier with '*' globs", offset)
            if i == 0 and seg in ("*", "**"):
                raise fail(
                    "the first segment must name a package; a pattern over every "
                    "top-level package would reach torch and the standard library"
                )
            if colon and i == len(module_segments) and seg == "**":
                raise fail("'**' cannot follow ':'; write the segments after the module", offset)
            offset += len(seg) + 1
        return cls(text, tuple(segments), len(module_segments) if colon else None)

    @property
    def literal(self) -> int:
        """Segments without any glob."""
        return sum(1 for s in self.segments if "*" not in s)

    @property
    def partial(self) -> int:
        """Segments that mix literal text and ``*`` (``*Block``)."""
        return sum(1 for s in self.segments if "*" in s and s not in ("*", "**"))

    @property
    def double(self) -> int:
        """``**`` segments."""
        return self.segments.count("**")

    @property
    def is_exact(self) -> bool:
        """True when the pattern names one object (no wildcard)."""
        return self.literal == len(self.segments)

    def specificity(self, depth: int) -> tuple[int, int, int, int]:
        """The precedence key (SPEC section 4) of this pattern matching a node at ``depth``."""
        return (self.literal, depth, self.partial, -self.double)

    def __str__(self) -> str:
        return self.text


def split_name(name: str) -> tuple[tuple[str, ...], int | None]:
    """Split ``pkg.mod.Class.fn`` or ``pkg.mod:Class.fn`` into segments and the module end."""
    module_part, colon, rest = name.partition(":")
    segments = module_part.split(".")
    if colon:
        return tuple(segments + rest.split(".")), len(segments)
    return tuple(segments), None


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


class Glob:
    """One segment pattern with ``*`` (any characters), matched in time linear in the name.

    A regular expression would backtrack: ``*a*a*a*a*a*a*a*a*a*a*a*a*b`` against a long
    name never finishes. With only ``*``, matching the literal pieces leftmost, in order,
    between the fixed prefix and suffix, is exact.
    """

    __slots__ = ("parts", "text")

    def __init__(self, segment: str) -> None:
        self.text = segment
        self.parts = segment.split("*")

    def match(self, name: str) -> bool:
        parts = self.parts
        if len(parts) == 1:
            return name == parts[0]
        first, last = parts[0], parts[-1]
        end = len(name) - len(last)
        if end < len(first) or not name.startswith(first) or not name.endswith(last):
            return False
        at = len(first)
        for piece in parts[1:-1]:
            if piece:
                found = name.find(piece, at, end)
                if found < 0:
                    return False
                at = found + len(piece)
        return True


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


def _segment_witness(a: str, b: str) -> str | None:
    """A string matched by both single-segment globs (no '**'), or None if none exists."""
    if "*" not in a:
        return a if Glob(b).match(a) else None
    if "*" not in b:
        return b if Glob(a).match(b) else None
    # Both have '*': a string exists iff the literal prefixes agree and the suffixes agree,
    # since each '*' can absorb the other pattern's inner pieces.
    pa, pb = a.split("*"), b.split("*")
    prefix = max(pa[0], pb[0], key=len)
    suffix = max(pa[-1], pb[-1], key=len)
    if not (prefix.startswith(pa[0]) and prefix.startswith(pb[0])):
        return None
    if not (suffix.endswith(pa[-1]) and suffix.endswith(pb[-1])):
        return None
    return prefix + "".join(pa[1:-1]) + "".join(pb[1:-1]) + suffix or "x"


def overlap_witness(a: Pattern, b: Pattern) -> str | None:
    """A dotted name matched by both patterns, or None when they cannot both match one name.

    Used by ``validate`` to prove a conflict; ``**`` may stand for zero or more segments.
    """
    sa, sb = a.segments, b.segments
    memo: dict[tuple[int, int], tuple[str, ...] | None] = {}

    def go(i: int, j: int) -> tuple[str, ...] | None:
        if (i, j) in memo:
            return memo[(i, j)]
        memo[(i, j)] = None  # guards the '**' x '**' self-loop
        result: tuple[str, ...] | None = None
        if i == len(sa) and j == len(sb):
            result = ()
        elif i < len(sa) and sa[i] == "**":
            result = go(i + 1, j)  # zero segments
            if result is None and j < len(sb):
                rest = go(i, j + 1) if sb[j] != "**" else go(i + 1, j + 1)
                if rest is not None:
                    result = (sb[j].replace("*", "x") if sb[j] != "**" else "x", *rest)
        elif j < len(sb) and sb[j] == "**":
            result = go(i, j + 1)
            if result is None and i < len(sa):
                rest = go(i + 1, j)
                if rest is not None:
                    result = (sa[i].replace("*", "x"), *rest)
        elif i < len(sa) and j < len(sb):
            seg = _segment_witness(sa[i], sb[j])
            if seg is not None:
                rest = go(i + 1, j + 1)
                if rest is not None:
                    result = (seg, *rest)
        memo[(i, j)] = result
        return result

    found = go(0, 0)
    return ".".join(found) if found else None
