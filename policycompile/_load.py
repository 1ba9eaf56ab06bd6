"""Reading a policy: bytes, YAML, schema, ``extends``, profiles, compile options -> Policy."""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema.exceptions

from ._errors import (
    PolicyError,
    PolicyExtendsError,
    PolicyFileError,
    PolicyOptionError,
    PolicyPatternError,
    PolicyProfileError,
    PolicySchemaError,
    Position,
)
from ._policy import Policy
from ._schema import schema
from ._tree import (
    COMPILE,
    CONFIG_PREFIX,
    DISABLE,
    EOGB,
    EXCLUSIVE,
    MARKS,
    OPTION_PREFIX,
    SECTION8_API,
    STANCE,
    Pattern,
    Rule,
    Setting,
    freeze,
    thaw,
)
from ._yaml import Document, JsonPath, decode, parse

#: Default bound on a policy file's size; ``load(max_bytes=...)`` changes it.
MAX_BYTES = 1 << 20
#: Longest ``extends`` chain (files extending files) accepted.
EXTENDS_DEPTH = 64
PROFILE_ENV = "POLICYCOMPILE_PROFILE"


@dataclass
class _Layer:
    """One file's (or one profile's) contribution, before merging."""

    strict: Setting | None = None
    defaults: dict[str, Setting] = field(default_factory=dict)
    targets: dict[str, tuple[Pattern, dict[str, Setting]]] = field(default_factory=dict)

    def merge(self, over: _Layer) -> None:
        """Layer ``over`` on top of this one: same pattern overrides key by key."""
        if over.strict is not None:
            self.strict = over.strict
        self.defaults.update(over.defaults)
        for text, (pattern, settings) in over.targets.items():
            if text in self.targets:
                self.targets[text][1].update(settings)
            else:
                self.targets[text] = (pattern, dict(settings))


@dataclass
class _File:
    """A file with its extends merged in, and its profiles, still separate."""

    base: _Layer
    profiles: dict[str, _Layer]
    sources: list[str]
    options: list[tuple[str, Any, Position]]  # every compile option written, for torch to check


def load(
    source: str | os.PathLike[str],
    *,
    profile: str | None = None,
    max_bytes: int = MAX_BYTES,
    backends: Iterable[str] = (),
    strict: bool | None = None,
) -> Policy:
    """Load and validate a policy file.

    :param source: path of the YAML file.
    :param profile: profile to layer on top; None reads ``POLICYCOMPILE_PROFILE``, and ``""``
        means no profile even when that variable is set.
    :param max_bytes: refuse files larger than this (each file of an ``extends`` chain).
    :param backends: backend names to accept besides those torch knows now (for checking a
        policy without the program that registers its backends).
    :param strict: None: the file's ``strict`` (true unless it says otherwise); a bool
        overrides it (``policycompile suggest --update`` runs a policy leniently).
    :returns: the frozen policy.
    :raises PolicyError: a subclass that says what is wrong, with file:line:column.
    """
    path = os.fspath(source)
    merged = _load_file(path, (), max_bytes, {})
    return _finish(path, merged, profile, frozenset(backends), strict)


def loads(text: str, *, path: str = "<string>", profile: str | None = None) -> Policy:
    """Load a policy from text (``extends`` resolves relative to the current directory)."""
    merged = _from_document(_parse_text(text, path), path, (), MAX_BYTES, {})
    return _finish(path, merged, profile)


def _finish(
    path: str,
    merged: _File,
    profile: str | None,
    backends: frozenset[str] = frozenset(),
    strict_over: bool | None = None,
) -> Policy:
    if profile is None:
        profile = os.environ.get(PROFILE_ENV) or None
    layer = _Layer()
    layer.merge(merged.base)
    if profile:
        if profile not in merged.profiles:
            known = ", ".join(sorted(merged.profiles)) or "none"
            hint = _did_you_mean(profile, merged.profiles)
            raise PolicyProfileError(
                f"unknown profile {profile!r}{hint}; the policy defines: {known}", path=path
            )
        layer.merge(merged.profiles[profile])
    torch_version = _check_options(merged.options, backends) if merged.options else None
    _check_mode_with_options(layer)
    if _check_section8(layer):
        torch_version = torch_compile_keywords()[0]
    rules = tuple(
        Rule(pattern, tuple(sorted(settings.values(), key=lambda s: s.key)))
        for pattern, settings in (layer.targets[t] for t in sorted(layer.targets))
    )
    strict = bool(layer.strict.value) if layer.strict is not None else True
    if strict_over is not None:
        strict = strict_over
    defaults = tuple(sorted(layer.defaults.values(), key=lambda s: s.key))
    return Policy(
        path=path,
        profile=profile or None,
        strict=strict,
        rules=rules,
        defaults=defaults,
        profiles=tuple(sorted(merged.profiles)),
        sources=tuple(merged.sources),
        fingerprint=_fingerprint(profile or None, strict, defaults, rules),
        torch_version=torch_version,
    )


def _fingerprint(
    profile: str | None, strict: bool, defaults: Sequence[Setting], rules: Sequence[Rule]
) -> str:
    data = {
        "version": 1,
        "profile": profile,
        "strict": strict,
        "compile": {s.key: thaw(s.value) for s in defaults},
        "targets": {r.pattern.text: {s.key: thaw(s.value) for s in r.settings} for r in rules},
    }
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _read(path: str, max_bytes: int, at: Position | None) -> str:
    """The text of a policy file; ``at`` is the ``extends`` entry that names it, if any."""
    name = f"{path}: " if at is not None else ""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise PolicyFileError(f"{name}no such policy file", at, path=path) from None
    except OSError as exc:
        raise PolicyFileError(f"{name}cannot read: {exc.strerror}", at, path=path) from None
    for test, kind in _NOT_REGULAR:
        # reading one could block forever (a FIFO nobody writes to) or never end
        if test(mode):
            raise PolicyFileError(f"{name}is {kind}, not a regular file", at, path=path)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise PolicyFileError(f"{name}no such policy file", at, path=path) from None
    except IsADirectoryError:
        raise PolicyFileError(f"{name}is a directory, not a policy file", at, path=path) from None
    except OSError as exc:
        raise PolicyFileError(f"{name}cannot read: {exc.strerror}", at, path=path) from None
    if len(raw) > max_bytes:
        raise PolicyFileError(
            f"{name}policy file is over the limit of {max_bytes} bytes "
            "(raise it with max_bytes= or --max-bytes)",
            at,
            path=path,
        )
    return decode(raw, path)


def _parse_text(text: str, path: str) -> Document:
    doc = parse(text, path)
    if doc.data is None:
        raise PolicySchemaError(
            "the policy is empty; it needs at least 'version: 1' and 'targets:'",
            Position(path, 1, 1),
        )
    if not isinstance(doc.data, dict):
        kind = "a list" if isinstance(doc.data, list) else f"a {type(doc.data).__name__}"
        raise PolicySchemaError(
            f"a policy is a mapping of keys (version, targets, ...), not {kind}",
            doc.value_position(()),
        )
    return doc


def _load_file(
    path: str,
    chain: tuple[str, ...],
    max_bytes: int,
    cache: dict[str, _File],
    at: Position | None = None,
) -> _File:
    """Load ``path`` and what it extends. ``cache`` holds the files this load has already
    read: a file extended by several others (a diamond) is read and validated once."""
    real = os.path.realpath(path)
    if real in chain:
        names = [os.path.basename(p) for p in (*chain, real)]
        start = names.index(os.path.basename(real))
        raise PolicyExtendsError("circular extends: " + " -> ".join(names[start:]), at)
    if len(chain) >= EXTENDS_DEPTH:
        raise PolicyExtendsError(f"extends chain deeper than {EXTENDS_DEPTH} files", at)
    if real in cache:
        return cache[real]
    doc = _parse_text(_read(path, max_bytes, at), path)
    loaded = cache[real] = _from_document(doc, path, (*chain, real), max_bytes, cache)
    return loaded


def _from_document(
    doc: Document, path: str, chain: tuple[str, ...], max_bytes: int, cache: dict[str, _File]
) -> _File:
    _validate_schema(doc)
    data: dict[str, Any] = doc.data
    out = _File(_Layer(), {}, [path], [])
    extends = data.get("extends", [])
    for i, entry in enumerate([extends] if isinstance(extends, str) else extends):
        at = doc.value_position(("extends",) if isinstance(extends, str) else ("extends", i))
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), entry))
        if not os.path.lexists(base_path):
            raise PolicyExtendsError(f"extends {entry!r}: no such file ({base_path})", at)
        base = _load_file(base_path, chain, max_bytes, cache, at)
        out.base.merge(base.base)
        for name, prof in base.profiles.items():
            out.profiles.setdefault(name, _Layer()).merge(prof)
        out.sources.extend(s for s in base.sources if s not in out.sources)
        written = {position for _, _, position in out.options}
        out.options.extend(o for o in base.options if o[2] not in written)
    own = _layer(doc, (), data, out.options)
    out.base.merge(own)
    for name, body in data.get("profiles", {}).items():
        prof = _layer(doc, ("profiles", name), body, out.options)
        out.profiles.setdefault(name, _Layer()).merge(prof)
    return out


def _layer(
    doc: Document, at: JsonPath, body: dict[str, Any], options: list[tuple[str, Any, Position]]
) -> _Layer:
    layer = _Layer()
    if "strict" in body:
        layer.strict = Setting("strict", body["strict"], doc.key_position((*at, "strict")))
    for opt, value in body.get("compile", {}).items():
        setting = Setting(
            OPTION_PREFIX + opt, freeze(value), doc.key_position((*at, "compile", opt))
        )
        layer.defaults[setting.key] = setting
        options.append((opt, value, setting.position))
    for text, spec in body.get("targets", {}).items():
        where = doc.key_position((*at, "targets", text))
        pattern = Pattern.parse(text, where)
        settings = _target_settings(doc, (*at, "targets", text), spec, where)
        comp = spec.get("compile")
        for opt, value in comp.items() if isinstance(comp, dict) else ():
            position = doc.key_position((*at, "targets", text, "compile", opt))
            options.append((opt, value, position))
        if "fullgraph" in spec:
            position = doc.key_position((*at, "targets", text, "fullgraph"))
            options.append(("fullgraph", spec["fullgraph"], position))
        layer.targets[text] = (pattern, settings)
    return layer


def _target_settings(
    doc: Document, at: JsonPath, spec: dict[str, Any], where: Position
) -> dict[str, Setting]:
    reason = spec.get("reason")
    out: dict[str, Setting] = {}

    def put(key: str, value: Any, at_key: JsonPath | None = None) -> None:
        position = where if at_key is None else doc.key_position((*at, *at_key))
        out[key] = Setting(key, freeze(value), position, reason)

    comp = spec.get("compile")
    if "fullgraph" in spec and (comp is False or (isinstance(comp, dict) and "fullgraph" in comp)):
        raise PolicySchemaError(
            "'fullgraph' is shorthand for 'compile: {fullgraph: ...}'; set it in one place",
            doc.key_position((*at, "fullgraph")),
            rule=str(at[-1]),
        )
    if comp is not None:
        put(COMPILE, comp is not False)
        if isinstance(comp, dict):
            for opt, value in comp.items():
                put(OPTION_PREFIX + opt, value)
    if "fullgraph" in spec:
        put(COMPILE, True)
        put(OPTION_PREFIX + "fullgraph", spec["fullgraph"])
    for key in (EOGB, DISABLE):
        if key in spec:
            put(key, spec[key])
    for key in (*MARKS, STANCE):  # located at their own key, where errors about them point
        if key in spec:
            put(key, spec[key], (key,))
    for name, value in (spec.get("dynamo_config") or {}).items():
        put(CONFIG_PREFIX + name, value, ("dynamo_config", name))
    return out


# -- schema -----------------------------------------------------------------------------------


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema())
    return cls(schema())


def _validate_schema(doc: Document) -> None:
    found: list[tuple[JsonPath, str, PolicyError]] = []
    for error in _validator().iter_errors(doc.data):
        problem = _translate(doc, error)
        if problem is not None:
            found.append((tuple(error.absolute_path), str(error.validator), problem))
    # "Target sets nothing" is noise beside a precise error inside the same target.
    problems = [
        problem
        for path, kind, problem in found
        if kind != "anyOf" or not any(p[: len(path)] == path and k != "anyOf" for p, k, _ in found)
    ]
    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.column or 0))
        first = problems[0]
        first.diagnostics = problems  # type: ignore[attr-defined]
        raise first


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


def _translate(doc: Document, error: jsonschema.exceptions.ValidationError) -> PolicyError | None:
    path: JsonPath = tuple(error.absolute_path)
    where = _where(path)
    rule = str(path[1]) if len(path) >= 2 and path[0] == "targets" else None
    kind = error.validator
    if kind == "additionalProperties":
        sub = error.schema if isinstance(error.schema, dict) else {}
        allowed = set(sub.get("properties", {}))
        extra = sorted(
            (k for k in error.instance if k not in allowed),
            key=lambda k: doc.key_position((*path, k)),
        )
        if _is_compile_mapping(path):
            return None  # checked against the installed torch.compile, which names its version
        key = extra[0]
        return PolicySchemaError(
            f"unknown key {key!r} {where}{_did_you_mean(key, allowed)}",
            doc.key_position((*path, key)),
            rule=rule,
        )
    if kind == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        hint = " (this file format is 'version: 1')" if "version" in missing else ""
        return PolicySchemaError(
            f"missing required key {missing[0]!r} {where}{hint}",
            doc.value_position(path),
            rule=rule,
        )
    if (
        kind == "pattern"
        and "propertyNames" in error.schema_path
        and path[-1:] == ("dynamo_config",)
    ):
        bad = str(error.instance)
        return PolicySchemaError(
            f"{bad!r} {where} is not a torch._dynamo.config name (a Python identifier)",
            doc.key_position((*path, bad)),
            rule=rule,
        )
    if kind == "minProperties" and path[-1:] == ("dynamo_config",):
        return PolicySchemaError(
            f"'dynamo_config' {where} is empty: give torch._dynamo.config names and values",
            doc.value_position(path),
            rule=rule,
        )
    if kind == "pattern" and "propertyNames" in error.schema_path:
        bad = str(error.instance)
        at = doc.key_position((*path, bad))
        try:
            Pattern.parse(bad, at)
        except PolicyPatternError as exc:
            return exc
        return PolicyPatternError(f"bad pattern {bad!r}", at, rule=bad)
    if kind == "const" and path == ("version",):
        return PolicySchemaError(
            f"unsupported policy version {_describe(error.instance)}; this policycompile reads "
            "version 1",
            doc.value_position(path),
        )
    if kind == "type":
        expected = error.validator_value
        words = " or ".join(
            _TYPE_WORDS.get(str(t), str(t))
            for t in (expected if isinstance(expected, list) else [expected])
        )
        key = f"{path[-1]!r} " if path and isinstance(path[-1], str) else ""
        return PolicySchemaError(
            f"{key}{where} must be {words}, not {_describe(error.instance)}",
            doc.value_position(path),
            rule=rule,
        )
    if kind == "anyOf" and path and len(path) >= 2 and path[-2] == "targets":
        return PolicySchemaError(
            f"target {path[-1]!r} sets nothing: give at least one of compile, fullgraph, "
            "error_on_graph_break, disable, nonstrict_trace, dont_skip_tracing, allow_in_graph, "
            "assume_constant_result, nested_compile_region, stance, dynamo_config ('reason' "
            "alone is not a setting)",
            doc.key_position(path),
            rule=str(path[-1]),
        )
    message = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    if isinstance(message, str) and len(path) >= 3 and path[0] == "targets":
        # a combination the schema forbids with a message of its own (editors show it too)
        target = path[:-1]
        return PolicySchemaError(
            f"{_where(target)}: {message}",
            doc.key_position((*target, "disable")),
            rule=rule,
        )
    if kind == "oneOf" and error.context:
        inner = [_translate(doc, e) for e in error.context]
        inner_real = [e for e in inner if e is not None and "must be" not in e.message]
        if inner_real:
            return inner_real[0]
        if _is_compile_mapping(path) and isinstance(error.instance, dict):
            return None
        if path and path[-1] == "disable":
            return PolicySchemaError(
                f"'disable' {where} must be true, false or {{recursive: true or false}}, not "
                f"{_describe(error.instance)}"
                + (
                    f" (recursive: {_describe(error.instance.get('recursive'))})"
                    if isinstance(error.instance, dict) and "recursive" in error.instance
                    else ""
                ),
                doc.value_position(path),
                rule=rule,
            )
        if path and path[-1] == "compile":
            return PolicySchemaError(
                f"'compile' {where} must be true, false or a mapping of torch.compile options, "
                f"not {_describe(error.instance)}",
                doc.value_position(path),
                rule=rule,
            )
        if path == ("extends",):
            return PolicySchemaError(
                f"'extends' must be a path or a list of paths, not {_describe(error.instance)}",
                doc.value_position(path),
            )
    return PolicySchemaError(f"{where}: {error.message}", doc.value_position(path), rule=rule)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# -- compile options against the installed torch --------------------------------------------


@functools.cache
def torch_compile_keywords() -> tuple[str, frozenset[str]]:
    """The installed torch's version and the keywords its ``torch.compile`` accepts."""
    import inspect

    import torch

    params = inspect.signature(torch.compile).parameters
    return str(torch.__version__), frozenset(p for p in params if p != "model")


def _check_options(options: Iterable[tuple[str, Any, Position]], backends: frozenset[str]) -> str:
    version, accepted = torch_compile_keywords()
    for name, value, position in sorted(options, key=lambda o: o[2]):
        if name not in accepted:
            raise PolicyOptionError(
                f"unknown compile option {name!r}: torch.compile in torch {version} accepts "
                f"{', '.join(sorted(accepted))}{_did_you_mean(name, accepted)}",
                position,
            )
        problem = _check_value(name, value, backends)
        if problem is not None:
            raise PolicyOptionError(f"{problem} (torch {version})", position)
    return version


def _check_value(name: str, value: Any, backends: frozenset[str]) -> str | None:
    """What is wrong with compile option ``name: value`` for the installed torch, or None."""
    if name == "backend" and isinstance(value, str):
        known = set(torch_backends()) | backends
        if value not in known:
            return (
                f"unknown backend {value!r}{_did_you_mean(value, known)} (a backend the "
                "program registers itself must be registered before apply; `policycompile "
                "validate --backend NAME` accepts it)"
            )
    if name == "mode" and value is not None:
        modes = inductor_modes()
        if value not in modes:
            return f"unknown mode {value!r}{_did_you_mean(str(value), modes)}; modes: " + (
                ", ".join(modes)
            )
    if name == "options" and isinstance(value, dict):
        known_options = inductor_options()
        for key, given in value.items():
            if key not in known_options:
                hint = _did_you_mean(key, known_options) or "; see torch._inductor.list_options()"
                return f"unknown Inductor option {key!r}{hint}"
            expected = known_options[key]
            if not _same_kind(given, expected):
                return f"Inductor option {key!r} takes {_kind(expected)}, not {_describe(given)}"
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _same_kind(given: Any, default: Any) -> bool:
    """Whether ``given`` fits an option whose default is ``default`` (None: anything)."""
    if default is None or given is None:
        return True
    if isinstance(default, bool):
        return isinstance(given, bool)
    if isinstance(default, int):
        return isinstance(given, int) and not isinstance(given, bool)
    if isinstance(default, float):
        return isinstance(given, int | float) and not isinstance(given, bool)
    if isinstance(default, str):
        return isinstance(given, str)
    if isinstance(default, list | tuple | set | frozenset):
        return isinstance(given, list)
    if isinstance(default, dict):
        return isinstance(given, dict)
    return True


def torch_backends() -> tuple[str, ...]:
    """The backends torch knows by name, its own and those registered so far (not cached:
    a program registers its own before apply)."""
    import torch._dynamo

    return tuple(torch._dynamo.list_backends(exclude_tags=()))


@functools.cache
def inductor_modes() -> tuple[str, ...]:
    """The modes ``torch.compile`` accepts (Inductor's)."""
    import torch._inductor

    return tuple(torch._inductor.list_mode_options())


@functools.cache
def inductor_options() -> dict[str, Any]:
    """Inductor's options and their defaults (``torch.compile(options=...)`` keys)."""
    import torch._inductor.config

    return dict(torch._inductor.config.get_config_copy())


def _check_section8(layer: _Layer) -> bool:
    """SPEC section 8's keys against the installed torch, and combinations within one rule
    that cannot mean anything. True when any such key is set."""
    found = False
    for text, (_pattern, settings) in sorted(layer.targets.items()):
        for key, setting in sorted(settings.items(), key=lambda kv: kv[1].position):
            if key in SECTION8_API or key.startswith(CONFIG_PREFIX):
                found = True
                _check_section8_value(key, setting, text)
            elif key == DISABLE and not isinstance(setting.value, bool):
                found = True
                if "recursive" not in _parameters("torch.compiler", "disable"):
                    raise PolicyOptionError(
                        "'disable: {recursive: ...}' needs torch.compiler.disable(recursive=...), "
                        f"which torch {torch_compile_keywords()[0]} does not have",
                        setting.position,
                        rule=text,
                    )
        on = {k for k, s in settings.items() if s.value is not False}
        for a, b, why in (
            (COMPILE, DISABLE, "Dynamo would skip what it is asked to compile"),
            *EXCLUSIVE,
        ):
            if a in on and b in on:
                later = max(settings[a].position, settings[b].position)
                raise PolicySchemaError(
                    f"target {text!r} sets {a} and {b}: {why}", later, rule=text
                )
        compile_ = settings.get(COMPILE)
        for key, setting in settings.items():
            entry_only = key == STANCE or key.startswith(CONFIG_PREFIX)
            if entry_only and compile_ is not None and compile_.value is False:
                raise PolicySchemaError(
                    f"target {text!r} sets {key.split('.')[0]} with 'compile: false': it "
                    "only applies around a compile entry",
                    setting.position,
                    rule=text,
                )
    return found


def _check_section8_value(key: str, setting: Setting, rule: str) -> None:
    import importlib

    import torch

    version = str(torch.__version__)
    if key in SECTION8_API:
        module, name = SECTION8_API[key]
        if getattr(importlib.import_module(module), name, None) is None:
            raise PolicyOptionError(
                f"'{key}' needs {module}.{name}, which torch {version} does not have",
                setting.position,
                rule=rule,
            )
    if key == STANCE:
        from . import _dynamo

        stances = _dynamo.stances()
        if setting.value not in stances:
            raise PolicyOptionError(
                f"unknown stance {setting.value!r}{_did_you_mean(str(setting.value), stances)}; "
                f"torch {version} has: {', '.join(stances)}",
                setting.position,
                rule=rule,
            )
    if key.startswith(CONFIG_PREFIX):
        name = key[len(CONFIG_PREFIX) :]
        config = dynamo_config_defaults()
        if name not in config:
            hint = _did_you_mean(name, config) or "; see torch._dynamo.config"
            raise PolicyOptionError(
                f"unknown torch._dynamo.config name {name!r} in torch {version}{hint}",
                setting.position,
                rule=rule,
            )
        value = thaw(setting.value)
        if not _same_kind(value, config[name]):
            raise PolicyOptionError(
                f"torch._dynamo.config.{name} takes {_kind(config[name])}, not "
                f"{_describe(value)} (torch {version})",
                setting.position,
                rule=rule,
            )


@functools.cache
def dynamo_config_defaults() -> dict[str, Any]:
    """``torch._dynamo.config`` names and their defaults."""
    import torch._dynamo.config

    return dict(torch._dynamo.config.get_config_copy())


def _parameters(module: str, name: str) -> frozenset[str]:
    import importlib
    import inspect

    try:
        return frozenset(
            inspect.signature(getattr(importlib.import_module(module), name)).parameters
        )
    except (AttributeError, TypeError, ValueError):
        return frozenset()


def _check_mode_with_options(layer: _Layer) -> None:
    """torch.compile raises "Either mode or options can be specified" for both at once:
    the same here, located, for the file's defaults and each target's own options."""
    defaults = layer.defaults

    def given(settings: dict[str, Setting], key: str) -> Setting | None:
        found = settings.get(OPTION_PREFIX + key)
        return found if found is not None and found.value is not None else None

    groups = [defaults] + [
        {**defaults, **settings}
        for _, settings in layer.targets.values()
        if (entry := settings.get(COMPILE)) is not None and entry.value is True
    ]
    for settings in groups:
        mode, options = given(settings, "mode"), given(settings, "options")
        if mode is not None and options is not None:
            raise mode_with_options(mode.position, options.position)


def mode_with_options(mode: Position, options: Position) -> PolicyOptionError:
    """The error for 'mode' and 'options' given together, located at the later of the two."""
    second = max(mode, options)
    return PolicyOptionError(
        f"'mode' ({mode.short}) and 'options' ({options.short}) together: torch.compile "
        "raises 'Either mode or options can be specified, but both can't be specified at the "
        "same time.'; give Inductor's options for the mode yourself, or only the mode",
        second,
    )
