"""Warnings ``validate`` can prove from the rules alone: conflicts, unreachable inheritance,
compile entries nested in compile entries."""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from .._errors import PolicyConflictError, Position
from .keys import COMPILE, DISABLE
from .patterns import Pattern, overlap_witness
from .policy import Policy
from .tree import Rule


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One located finding of ``validate``."""

    position: Position
    severity: str  # "error" or "warning"
    message: str

    def __str__(self) -> str:
        return f"{self.position}: {self.severity}: {self.message}"


def lint(policy: Policy) -> list[Diagnostic]:
    """Every warning that can be proven for ``policy``, sorted by position, without duplicates."""
    found = set(_conflicts(policy)) | set(_unreachable(policy)) | set(_nested(policy))
    return sorted(found)


def _conflicts(policy: Policy) -> Iterator[Diagnostic]:
    # Only equally specific patterns can tie; two literal patterns tie only if identical,
    # and identical patterns are one rule, so at least one of a pair has a wildcard. And two
    # patterns can only match one name if the literal segments they start with agree: each
    # rule with a wildcard is compared with the rules whose literal prefix is an ancestor of
    # its own, equal to it, or under it (sub-quadratic: 10,000 targets take seconds).
    groups: dict[tuple[str, int, int, int], list[Rule]] = defaultdict(list)
    for rule in policy.rules:
        p = rule.pattern
        for setting in rule.settings:
            groups[(setting.key, p.literal, p.partial, p.double)].append(rule)
    for (key, *_), rules in groups.items():
        wild = [r for r in rules if not r.pattern.is_exact]
        if not wild:
            continue
        index: dict[tuple[str, ...], list[Rule]] = defaultdict(list)
        for r in rules:
            index[_literal_prefix(r.pattern)].append(r)
        prefixes = sorted(index)
        seen: set[tuple[int, int]] = set()
        for a in wild:
            mine = _literal_prefix(a.pattern)
            near = [r for k in range(len(mine)) for r in index.get(mine[:k], ())]
            for prefix in prefixes[bisect.bisect_left(prefixes, mine) :]:
                if prefix[: len(mine)] != mine:
                    break
                near.extend(index[prefix])
            for b in near:
                pair = (min(id(a), id(b)), max(id(a), id(b)))
                if b is a or pair in seen:
                    continue
                seen.add(pair)
                found = _conflict(policy, key, a, b)
                if found is not None:
                    yield found


def _literal_prefix(pattern: Pattern) -> tuple[str, ...]:
    """The segments a pattern starts with that are written without any glob."""
    return tuple(itertools.takewhile(lambda s: "*" not in s, pattern.segments))


def _conflict(policy: Policy, key: str, a: Rule, b: Rule) -> Diagnostic | None:
    sa, sb = a.get(key), b.get(key)
    if sa is None or sb is None or sa.value == sb.value:
        return None
    witness = overlap_witness(a.pattern, b.pattern)
    if witness is None:
        return None
    try:
        policy.resolve(witness)
    except PolicyConflictError as exc:
        where = exc.position if exc.position is not None else a.position
        return Diagnostic(where, "warning", f"{exc.message} (for example)")
    return None


def _under(pattern: Pattern) -> Pattern:
    return Pattern(pattern.text + ".**", (*pattern.segments, "**"), pattern.module_end)


def _unreachable(policy: Policy) -> Iterator[Diagnostic]:
    disabling = [r for r in policy.rules if (s := r.get(DISABLE)) is not None and s.value is True]
    entries = [r for r in policy.rules if (s := r.get(COMPILE)) is not None and s.value is True]
    for d in disabling:
        for e in entries:
            witness = overlap_witness(e.pattern, _under(d.pattern))
            if witness is None or e is d:
                continue
            try:
                res = policy.resolve(witness)
            except PolicyConflictError:
                continue
            dis, comp = res.decisions.get(DISABLE), res.decisions.get(COMPILE)
            if dis is None or comp is None or dis.value is not True or comp.value is not True:
                continue
            if dis.winner.rule is d and comp.winner.rule is e:
                yield Diagnostic(
                    d.position,
                    "warning",
                    f"'disable' of {d.pattern.text!r} does not reach {witness!r}: "
                    f"{e.pattern.text!r} ({e.position.short}) makes it a compile entry, and "
                    "the more specific rule decides whether Dynamo compiles or skips it",
                )


def _nested(policy: Policy) -> Iterator[Diagnostic]:
    entries = [r for r in policy.rules if (s := r.get(COMPILE)) is not None and s.value is True]
    for outer in entries:
        last = outer.pattern.segments[-1]
        # Only a class (by PEP 8 its name is capitalised) holds methods lexically; a rule on
        # a module path is the same entry named more broadly, not an outer region.
        if not last[:1].isupper():
            continue
        for inner in entries:
            segs = inner.pattern.segments
            n = len(outer.pattern.segments)
            if len(segs) <= n or segs[:n] != outer.pattern.segments:
                continue
            if segs[n:] == ("forward",):
                continue  # the same entry: a rule on an nn.Module compiles its forward
            yield Diagnostic(
                inner.position,
                "warning",
                f"compile entry {inner.pattern.text!r} lies inside compile entry "
                f"{outer.pattern.text!r} ({outer.position.short}); when it is reached from "
                "there it is inlined and its own compile options are ignored",
            )
