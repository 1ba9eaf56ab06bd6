"""Target patterns over dotted names: parsing, matching one segment, and proving that two
patterns overlap (docs/policy.md, "Names and patterns")."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .._errors import PolicyPatternError, Position


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
        """The precedence key of this pattern matching a node at ``depth`` (docs/policy.md,
        "Precedence")."""
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
