"""The rule trie and precedence: which rule sets each key of a name (docs/policy.md,
"Precedence"). Pure: imports neither torch nor user code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .._errors import PolicyConflictError
from .keys import COMPILE, OPTION_PREFIX, thaw
from .patterns import Glob, Pattern, split_name
from .rules import (
    Candidate,
    Decision,
    Explanation,
    Loser,
    Resolution,
    Rule,
    RuleRef,
    Setting,
    why_lost,
)

__all__ = [
    "Candidate",
    "Decision",
    "Explanation",
    "Loser",
    "Resolution",
    "Rule",
    "RuleRef",
    "RuleTree",
    "Setting",
]


Found = tuple[tuple[Rule, int], ...]  # matches: (rule, depth of the deepest node it matched)


class _Node:
    __slots__ = ("double", "globs", "literal", "loops", "rules")

    def __init__(self, loops: bool = False) -> None:
        self.literal: dict[str, _Node] = {}
        self.globs: dict[str, tuple[Glob, _Node]] = {}
        self.double: _Node | None = None
        self.rules: list[int] = []  # indices into the tree's rules: ints hash for free
        self.loops = loops  # reached through '**': consumes any further segment


def _sink(states: list[_Node]) -> tuple[int, ...] | None:
    """The rules of ``states`` when nothing but ``**`` leads on from them (every further
    segment reaches the very same states), else None."""
    if all(n.loops and not n.literal and not n.globs and n.double is None for n in states):
        return tuple(index for n in states for index in n.rules)
    return None


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
        #: name -> its matches, as one shared tuple per distinct result: a name is asked for
        #: by the import hook, the plan and the resolution in turn (a memo, cleared when it
        #: grows large; the shared tuples keep thousands of names from costing an object each)
        self._matches: dict[str, Found] = {}
        self._covered: dict[str, bool] = {}  # module -> covers_module(module)
        #: (module, depth) -> the matches of every name that deep below a module where only
        #: '**' leads on
        self._sunk: dict[tuple[str, int], Found] = {}
        self._shared: dict[tuple[tuple[int, int], ...], Found] = {}
        #: a module's segments -> the walk's states and matches (rule index -> depth) at the
        #: module's end
        self._modules: dict[
            tuple[str, ...], tuple[list[_Node], dict[int, int], tuple[int, ...] | None]
        ] = {}
        #: (matches, depth of the name, direct-only keys) -> the decisions: the same for
        #: every name that the same rules match at the same depths
        self._decided: dict[tuple[int, int, frozenset[str]], Mapping[str, Decision]] = {}
        self._heads: set[str] = set()  # first segments, literal
        self._head_globs: list[Glob] = []
        for index, rule in enumerate(self.rules):
            self._insert(rule, index)

    def _insert(self, rule: Rule, index: int) -> None:
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
        node.rules.append(index)
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

        The import hook asks this for every import: a dict lookup for uncovered packages;
        the answer for a covered module is remembered (each definition asks again).
        """
        known = self._covered.get(module)
        if known is None:
            if len(self._covered) >= 1 << 16:
                self._covered.clear()
            known = self._covered[module] = self._covers_module(module)
        return known

    def _covers_module(self, module: str) -> bool:
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
        return dict(self.found(name))

    def signature(self, name: str, found: Found | None = None) -> tuple[int, int]:
        """Two names with the same signature have the same rules matching them at the same
        depths, and the same depth: everything precedence decides by (``resolve``).

        :param found: ``found(name)``, when the caller has it already.
        """
        # the number of segments split_name makes, without making them
        if found is None:
            found = self.found(name)
        return id(found), name.count(".") + 1 + (":" in name)

    def found(self, name: str) -> Found:
        """``matches(name)`` as (rule, depth) pairs: one tuple shared by every name with the
        same matches (compare them by identity)."""
        found = self._matches.get(name)
        if found is None:
            if len(self._matches) >= 1 << 16:
                self._matches.clear()
                self._modules.clear()
                self._sunk.clear()
            module, colon, _ = name.partition(":")
            # below a module where only '**' leads on, the depth alone decides
            sunk = (module, name.count(".") + 2) if colon else None
            found = self._sunk.get(sunk) if sunk is not None else None
            if found is None:
                matched, below_sink = self._match(name)
                key = tuple(matched.items())
                found = self._shared.get(key)
                if found is None:
                    found = self._shared[key] = tuple((self.rules[i], d) for i, d in key)
                if below_sink and sunk is not None:
                    self._sunk[sunk] = found
            self._matches[name] = found
        return found

    def _match(self, name: str) -> tuple[dict[int, int], bool]:
        """Rule index -> the depth of the deepest node it matched; and whether only '**'
        leads on below the name's module (then every name as deep matches alike)."""
        segments, module_end = split_name(name)
        if module_end is None:
            found: dict[int, int] = {}
            self._walk(self._closure([self._root]), segments, 0, len(segments), None, found)
            return found, False
        # Every name of a module walks the module's segments alike: walked once per module.
        module = segments[:module_end]
        at_end = self._modules.get(module)
        if at_end is None:
            found = {}
            root = self._closure([self._root])
            states = self._walk(root, segments, 0, module_end, module_end, found)
            at_end = self._modules[module] = (states, found, _sink(states))
        states, found, sink = at_end[0], dict(at_end[1]), at_end[2]
        if sink is None:
            self._walk(states, segments, module_end, len(segments), module_end, found)
        elif len(segments) > module_end:
            # Only '**' is left (``pkg.**``): each further segment meets the same rules, so
            # they end at the name's depth, without a walk.
            found.update((index, len(segments)) for index in sink)
        return found, sink is not None

    def _walk(
        self,
        states: list[_Node],
        segments: tuple[str, ...],
        start: int,
        stop: int,
        module_end: int | None,
        found: dict[int, int],
    ) -> list[_Node]:
        """The states after ``segments[start:stop]`` of a name whose module ends at
        ``module_end`` (None: a name without ':'), adding the rules met to ``found``."""
        for j in range(start, stop):
            if not states:
                break
            seg = segments[j]
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
            states = self._closure(nxt)
            for node in states:
                for rule in node.rules:
                    found[rule] = j + 1
        return states

    def candidates(self, name: str) -> dict[str, list[Candidate]]:
        """Key -> the candidates that set it for ``name``, best first."""
        return self._candidates(self.found(name))

    def _candidates(self, found: Found) -> dict[str, list[Candidate]]:
        out: dict[str, list[Candidate]] = {}
        for setting in self.defaults:
            out.setdefault(setting.key, []).append(Candidate(None, setting, 0))
        for rule, depth in found:
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
        found = self.found(name)
        depth = len(split_name(name)[0])
        cache_key = (id(found), depth, direct_only)
        cached = self._decided.get(cache_key)
        if cached is not None:
            return Resolution(name, cached)
        decisions: dict[str, Decision] = {}
        for key, cands in self._candidates(found).items():
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
        self._decided[cache_key] = decisions  # shared: never changed once made
        return Resolution(name, decisions)

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
                Loser(c, why_lost(c, winner, segments)) for c in cands if c != winner
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
