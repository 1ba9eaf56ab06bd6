"""Safe YAML reading that keeps the position of every key and value and refuses what is unsafe."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from .._errors import PolicySyntaxError, Position

JsonPath = tuple[str | int, ...]

# Only the YAML core schema: anything else (``!!python/object``, custom ``!tags``) is refused.
_SCALAR_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "timestamp")
)
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: How many nodes the expansion of aliases may add to a document, in all.
ALIAS_EXPANSION_LIMIT = 10_000
#: Deeper nesting than any policy needs is refused (and never reaches Python's recursion limit).
DEPTH_LIMIT = 64


@dataclass
class Document:
    """A YAML document as plain data, with a position for each key and value."""

    path: str
    data: Any
    key_positions: dict[JsonPath, Position] = field(default_factory=dict)
    value_positions: dict[JsonPath, Position] = field(default_factory=dict)

    def key_position(self, at: JsonPath) -> Position:
        """Where the key of the entry at ``at`` is written (its value, for sequence items)."""
        found = self.key_positions.get(at)
        return found if found is not None else self.value_position(at)

    def value_position(self, at: JsonPath) -> Position:
        """Where the value at ``at`` is written, or the nearest enclosing value."""
        for n in range(len(at), -1, -1):
            found = self.value_positions.get(at[:n])
            if found is not None:
                return found
        return Position(self.path, 1, 1)


def _pos(path: str, mark: yaml.Mark | None) -> Position:
    if mark is None:
        return Position(path, 1, 1)
    return Position(path, mark.line + 1, mark.column + 1)


class _Converter:
    def __init__(self, path: str) -> None:
        self.path = path
        self.constructor = yaml.constructor.SafeConstructor()
        self.sizes: dict[int, int] = {}
        self.expanded = 0
        self.doc = Document(path, None)

    def size(self, node: yaml.Node, stack: frozenset[int] = frozenset()) -> int:
        """The number of nodes ``node`` expands to, memoised; recursion is refused."""
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in stack:
            raise PolicySyntaxError("recursive YAML alias", _pos(self.path, node.start_mark))
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += self.size(k, stack | {key}) + self.size(v, stack | {key})
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += self.size(item, stack | {key})
        self.sizes[key] = total
        return total

    def convert(self, node: yaml.Node, at: JsonPath, seen: set[int] | None) -> Any:
        """Plain data for ``node``; ``seen`` is None inside an alias already paid for."""
        if seen is not None:
            if id(node) in seen:
                # The same node reached twice: an alias. Charge its whole expansion up front,
                # so that an alias bomb is refused before it is built.
                self.expanded += self.size(node)
                if self.expanded > ALIAS_EXPANSION_LIMIT:
                    raise PolicySyntaxError(
                        f"YAML aliases expand to more than {ALIAS_EXPANSION_LIMIT} nodes "
                        "(an alias bomb?)",
                        _pos(self.path, node.start_mark),
                    )
                seen = None
            else:
                seen.add(id(node))
        if len(at) > DEPTH_LIMIT:
            raise PolicySyntaxError(
                f"nested more than {DEPTH_LIMIT} levels deep", _pos(self.path, node.start_mark)
            )
        self.doc.value_positions.setdefault(at, _pos(self.path, node.start_mark))
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                raise self._tag_error(node)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MAP_TAG:
                    raise PolicySyntaxError(
                        "mapping keys must be plain strings", _pos(self.path, key_node.start_mark)
                    )
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise PolicySyntaxError(
                        "YAML merge keys ('<<') are not supported in policies",
                        _pos(self.path, key_node.start_mark),
                    )
                key = self.scalar(key_node)
                if isinstance(key, bool):
                    key = "true" if key else "false"
                key = "null" if key is None else str(key)
                here = (*at, key)
                if key in out:
                    first = self.doc.key_positions[here]
                    raise PolicySyntaxError(
                        f"duplicate key {key!r} (first defined at line {first.line})",
                        _pos(self.path, key_node.start_mark),
                    )
                self.doc.key_positions[here] = _pos(self.path, key_node.start_mark)
                out[key] = self.convert(value_node, here, seen)
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise self._tag_error(node)
            return [self.convert(item, (*at, i), seen) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def scalar(self, node: yaml.Node) -> Any:
        if node.tag not in _SCALAR_TAGS:
            raise self._tag_error(node)
        value = self.constructor.construct_object(node)
        if isinstance(value, datetime.date | datetime.datetime):
            # A date in a reason stays the text the user wrote.
            return str(node.value)
        return value

    def _tag_error(self, node: yaml.Node) -> PolicySyntaxError:
        return PolicySyntaxError(
            f"YAML tag {node.tag!r} is not allowed in a policy (only plain data is)",
            _pos(self.path, node.start_mark),
        )


def parse(text: str, path: str) -> Document:
    """Parse one YAML document into plain data with positions.

    :param text: the decoded file.
    :param path: the file's name, used in positions.
    :returns: the document; an empty file gives ``data`` None.
    :raises PolicySyntaxError: bad YAML, tabs, duplicate keys, tags, several documents,
        an alias bomb.
    """
    try:
        nodes = list(_compose_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if _tab_near(text, mark):
            problem += " (tabs cannot indent YAML; use spaces)"
        raise PolicySyntaxError(f"invalid YAML: {problem}", _pos(path, mark)) from None
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML raises marked errors for text
        raise PolicySyntaxError(f"invalid YAML: {exc}", Position(path, 1, 1)) from None
    if not nodes:
        return Document(path, None)
    if len(nodes) > 1:
        raise PolicySyntaxError(
            "a policy file holds one YAML document, found several",
            _pos(path, nodes[1].start_mark),
        )
    converter = _Converter(path)
    converter.doc.data = converter.convert(nodes[0], (), set())
    return converter.doc


def _tab_near(text: str, mark: yaml.Mark | None) -> bool:
    if mark is None:
        return False
    lines = text.splitlines()
    return any("\t" in lines[n] for n in (mark.line - 1, mark.line) if 0 <= n < len(lines))


def _compose_all(text: str) -> Iterator[yaml.Node]:
    # libyaml's parser when PyYAML was built with it (10x faster); both keep marks.
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield node
    finally:
        loader.dispose()


def decode(raw: bytes, path: str) -> str:
    """Decode a policy file as UTF-8, locating the first bad byte.

    :raises PolicySyntaxError: the bytes are not UTF-8.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise PolicySyntaxError(
            f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
            Position(path, line, column),
        ) from None
    return text.removeprefix("\ufeff")
