"""Schema errors as users read them: each JSON Schema failure translated into one located
``PolicyError`` that says what is wrong in the policy's own words."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema.exceptions

from .._errors import PolicyError, PolicyPatternError, PolicySchemaError
from .patterns import Pattern
from .schema import schema
from .yaml import Document, JsonPath


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema())
    return cls(schema())


def validate_schema(doc: Document) -> list[PolicyError]:
    """Every schema error of ``doc``, located and in the policy's own words, in file order."""
    found: list[tuple[JsonPath, str, PolicyError]] = []
    for error in _validator().iter_errors(doc.data):
        problem = _translate(doc, error)
        if problem is not None:
            found.append((tuple(error.absolute_path), str(error.validator), problem))
    # "Target sets nothing" is noise beside a precise error inside the same target.
    return sorted(
        (
            problem
            for path, kind, problem in found
            if kind != "anyOf"
            or not any(p[: len(path)] == path and k != "anyOf" for p, k, _ in found)
        ),
        key=lambda p: (p.line or 0, p.column or 0),
    )


def raise_all(problems: list[PolicyError]) -> None:
    """Raise the first of ``problems`` in file order, carrying the others (``validate`` lists
    them all in one pass); nothing when there are none."""
    if problems:
        ordered = sorted(problems, key=lambda p: (p.path or "", p.line or 0, p.column or 0))
        ordered[0].others = tuple(ordered[1:])
        raise ordered[0]


def _where(path: JsonPath) -> str:
    if not path:
        return "at the top level"
    if path[0] == "targets" and len(path) >= 2:
        inner = " of its compile options" if len(path) > 2 and path[2] == "compile" else ""
        return f"in target {path[1]!r}{inner}"
    if path[0] == "profiles" and len(path) >= 2:
        rest = _where(tuple(path[2:]))
        return f"in profile {path[1]!r}" + ("" if rest == "at the top level" else " " + rest)
    return "in " + ".".join(str(p) for p in path)


def _is_compile_mapping(path: JsonPath) -> bool:
    return bool(path) and path[-1] == "compile"


_TYPE_WORDS = {
    "boolean": "true or false",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "integer": "an integer",
    "null": "null",
}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"


class _Skip:
    """A schema failure that is no error of its own (checked elsewhere, or noise)."""


_SKIP = _Skip()
Translation = PolicyError | _Skip | None  # None: not this translator's kind of failure


@dataclass(frozen=True)
class _Failure:
    """One schema failure and where it is."""

    doc: Document
    error: jsonschema.exceptions.ValidationError

    @property
    def path(self) -> JsonPath:
        return tuple(self.error.absolute_path)

    @property
    def where(self) -> str:
        return _where(self.path)

    @property
    def rule(self) -> str | None:
        path = self.path
        return str(path[1]) if len(path) >= 2 and path[0] == "targets" else None

    def at_value(self, message: str) -> PolicySchemaError:
        return PolicySchemaError(message, self.doc.value_position(self.path), rule=self.rule)

    def at_key(self, message: str, key: str | int) -> PolicySchemaError:
        position = self.doc.key_position((*self.path, key))
        return PolicySchemaError(message, position, rule=self.rule)


def _translate(doc: Document, error: jsonschema.exceptions.ValidationError) -> PolicyError | None:
    """The located error a user reads for one schema failure (None: no error of its own)."""
    failure = _Failure(doc, error)
    for translate in _TRANSLATORS:
        found = translate(failure)
        if found is not None:
            return None if isinstance(found, _Skip) else found
    return failure.at_value(f"{failure.where}: {error.message}")


def _unknown_key(f: _Failure) -> Translation:
    if f.error.validator != "additionalProperties":
        return None
    if _is_compile_mapping(f.path):
        return _SKIP  # checked against the installed torch.compile, which names its version
    sub = f.error.schema if isinstance(f.error.schema, dict) else {}
    allowed = set(sub.get("properties", {}))
    extra = sorted(
        (k for k in f.error.instance if k not in allowed),
        key=lambda k: f.doc.key_position((*f.path, k)),
    )
    key = extra[0]
    return f.at_key(f"unknown key {key!r} {f.where}{_did_you_mean(key, allowed)}", key)


def _missing_key(f: _Failure) -> Translation:
    if f.error.validator != "required":
        return None
    missing = [k for k in f.error.validator_value if k not in f.error.instance]
    hint = " (this file format is 'version: 1')" if "version" in missing else ""
    return f.at_value(f"missing required key {missing[0]!r} {f.where}{hint}")


def _bad_name(f: _Failure) -> Translation:
    """A mapping key that is not a name: a ``dynamo_config`` name, or a target pattern."""
    if f.error.validator != "pattern" or "propertyNames" not in f.error.schema_path:
        return None
    bad = str(f.error.instance)
    if f.path[-1:] == ("dynamo_config",):
        message = f"{bad!r} {f.where} is not a torch._dynamo.config name (a Python identifier)"
        return f.at_key(message, bad)
    at = f.doc.key_position((*f.path, bad))
    try:
        Pattern.parse(bad, at)
    except PolicyPatternError as exc:
        return exc
    return PolicyPatternError(f"bad pattern {bad!r}", at, rule=bad)


def _empty_config(f: _Failure) -> Translation:
    if f.error.validator != "minProperties" or f.path[-1:] != ("dynamo_config",):
        return None
    return f.at_value(
        f"'dynamo_config' {f.where} is empty: give torch._dynamo.config names and values"
    )


def _version(f: _Failure) -> Translation:
    if f.error.validator != "const" or f.path != ("version",):
        return None
    return PolicySchemaError(
        f"unsupported policy version {_describe(f.error.instance)}; this policycompile reads "
        "version 1",
        f.doc.value_position(f.path),
    )


def _wrong_type(f: _Failure) -> Translation:
    if f.error.validator != "type":
        return None
    expected = f.error.validator_value
    words = " or ".join(
        _TYPE_WORDS.get(str(t), str(t))
        for t in (expected if isinstance(expected, list) else [expected])
    )
    path = f.path
    key = f"{path[-1]!r} " if path and isinstance(path[-1], str) else ""
    return f.at_value(f"{key}{f.where} must be {words}, not {_describe(f.error.instance)}")


def _sets_nothing(f: _Failure) -> Translation:
    path = f.path
    if f.error.validator != "anyOf" or len(path) < 2 or path[-2] != "targets":
        return None
    return PolicySchemaError(
        f"target {path[-1]!r} sets nothing: give at least one of compile, fullgraph, "
        "error_on_graph_break, disable, nonstrict_trace, dont_skip_tracing, allow_in_graph, "
        "assume_constant_result, nested_compile_region, stance, dynamo_config ('reason' "
        "alone is not a setting)",
        f.doc.key_position(path),
        rule=str(path[-1]),
    )


def _forbidden_combination(f: _Failure) -> Translation:
    """A combination the schema forbids with a message of its own (editors show it too)."""
    schema = f.error.schema
    message = schema.get("errorMessage") if isinstance(schema, dict) else None
    if not isinstance(message, str) or len(f.path) < 3 or f.path[0] != "targets":
        return None
    target = f.path[:-1]
    return PolicySchemaError(
        f"{_where(target)}: {message}", f.doc.key_position((*target, "disable")), rule=f.rule
    )


def _one_of(f: _Failure) -> Translation:
    """A value of none of a key's forms: the precise error of one form, else the forms."""
    if f.error.validator != "oneOf" or not f.error.context:
        return None
    inner = [_translate(f.doc, e) for e in f.error.context]
    precise = [e for e in inner if e is not None and "must be" not in e.message]
    if precise:
        return precise[0]
    path, value = f.path, f.error.instance
    if _is_compile_mapping(path) and isinstance(value, dict):
        return _SKIP
    if path and path[-1] == "disable":
        recursive = isinstance(value, dict) and "recursive" in value
        return f.at_value(
            f"'disable' {f.where} must be true, false or {{recursive: true or false}}, not "
            f"{_describe(value)}"
            + (f" (recursive: {_describe(value.get('recursive'))})" if recursive else "")
        )
    if path and path[-1] == "compile":
        return f.at_value(
            f"'compile' {f.where} must be true, false or a mapping of torch.compile options, "
            f"not {_describe(value)}"
        )
    if path == ("extends",):
        return PolicySchemaError(
            f"'extends' must be a path or a list of paths, not {_describe(value)}",
            f.doc.value_position(path),
        )
    return None


#: in order: the first that recognises a failure translates it
_TRANSLATORS: tuple[Callable[[_Failure], Translation], ...] = (
    _unknown_key,
    _missing_key,
    _bad_name,
    _empty_config,
    _version,
    _wrong_type,
    _sets_nothing,
    _forbidden_combination,
    _one_of,
)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
