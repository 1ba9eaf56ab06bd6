"""The keys a rule can set, the torch decorator each per-function control is, and the
frozen form of their values (docs/policy.md, "Per-function Dynamo controls")."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

#: Keys a rule can set, besides the per-option ``compile.<option>`` keys.
COMPILE = "compile"


EOGB = "error_on_graph_break"


DISABLE = "disable"


OPTION_PREFIX = "compile."


# the other per-function controls, each the decorator of the same name (docs/policy.md)
NONSTRICT = "nonstrict_trace"


DONT_SKIP = "dont_skip_tracing"


ALLOW = "allow_in_graph"


CONSTANT = "assume_constant_result"


NESTED = "nested_compile_region"


STANCE = "stance"


CONFIG_PREFIX = "dynamo_config."


#: the tracing marks, innermost first (docs/apply.md, "Wrapping order")
MARKS = (NONSTRICT, DONT_SKIP, ALLOW, CONSTANT, NESTED)


#: the per-function controls and the torch function each one is: (module, name)
SECTION8_API = {
    NONSTRICT: ("torch._dynamo", "nonstrict_trace"),
    DONT_SKIP: ("torch._dynamo", "dont_skip_tracing"),
    ALLOW: ("torch.compiler", "allow_in_graph"),
    CONSTANT: ("torch.compiler", "assume_constant_result"),
    NESTED: ("torch.compiler", "nested_compile_region"),
    STANCE: ("torch.compiler", "set_stance"),
}


#: pairs of settings that cannot both hold for one function: torch rejects them, or one
#: undoes what the other asks (docs/policy.md, "Per-function Dynamo controls")
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
