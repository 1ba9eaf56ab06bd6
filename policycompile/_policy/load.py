"""Reading a policy: bytes, YAML, schema, ``extends``, profiles, compile options -> Policy."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import (
    PolicyError,
    PolicyExtendsError,
    PolicyFileError,
    PolicyOptionError,
    PolicyProfileError,
    PolicySchemaError,
    PolicyTorchError,
    Position,
)
from .._torch import catalog
from .checks import check_controls, check_mode_with_options, check_options
from .diagnose import _did_you_mean, raise_all, validate_schema
from .keys import (
    COMPILE,
    CONFIG_PREFIX,
    DISABLE,
    EOGB,
    MARKS,
    OPTION_PREFIX,
    STANCE,
    freeze,
    thaw,
)
from .patterns import Pattern
from .policy import Policy
from .tree import Rule, Setting
from .yaml import Document, JsonPath, decode, parse

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
    problem = catalog.version_problem()
    if problem is not None:  # one line, before anything of torch's can fail in its own way
        raise PolicyTorchError(problem, path=path)
    merged = _load_file(path, (), max_bytes, {}, backends=frozenset(backends))
    return _finish(path, merged, profile, frozenset(backends), strict)


def loads(text: str, *, path: str = "<string>", profile: str | None = None) -> Policy:
    """Load a policy from text (``extends`` resolves relative to the current directory)."""
    merged = _from_document(_parse_text(text, path), path, (), MAX_BYTES, {}, frozenset())
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
    problems = check_options(merged.options, backends) if merged.options else []
    problems += check_mode_with_options(layer.defaults, layer.targets)
    controls, found = check_controls(layer.targets)
    raise_all(problems + found)
    torch_version = catalog.version() if merged.options or controls else None
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
    *,
    backends: frozenset[str] = frozenset(),
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
    loaded = cache[real] = _from_document(doc, path, (*chain, real), max_bytes, cache, backends)
    return loaded


def _from_document(
    doc: Document,
    path: str,
    chain: tuple[str, ...],
    max_bytes: int,
    cache: dict[str, _File],
    backends: frozenset[str],
) -> _File:
    problems = validate_schema(doc)
    if problems:
        raise_all(problems + _checks_despite(doc, backends))
    data: dict[str, Any] = doc.data
    out = _File(_Layer(), {}, [path], [])
    extends = data.get("extends", [])
    for i, entry in enumerate([extends] if isinstance(extends, str) else extends):
        at = doc.value_position(("extends",) if isinstance(extends, str) else ("extends", i))
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), entry))
        if not os.path.lexists(base_path):
            raise PolicyExtendsError(f"extends {entry!r}: no such file ({base_path})", at)
        base = _load_file(base_path, chain, max_bytes, cache, at, backends=backends)
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


def _checks_despite(doc: Document, backends: frozenset[str]) -> list[PolicyError]:
    """The checks against the installed torch of a file that failed its schema, as far as
    its layers can be read: ``validate`` reports every problem of a file in one pass."""
    problems: list[PolicyError] = []
    data: dict[str, Any] = doc.data
    bodies: list[tuple[JsonPath, Any]] = [((), data)]
    profiles = data.get("profiles")
    if isinstance(profiles, dict):
        bodies += [(("profiles", name), body) for name, body in profiles.items()]
    for at, body in bodies:
        options: list[tuple[str, Any, Position]] = []
        if not isinstance(body, dict):
            continue  # a shape the schema errors already describe
        layer = _layer(doc, at, body, options, lenient=True)
        problems += check_options(options, backends)
        # the torch checks only: the schema already said what combinations it forbids
        problems += [
            p for p in check_controls(layer.targets)[1] if isinstance(p, PolicyOptionError)
        ]
    return problems


def _layer(
    doc: Document,
    at: JsonPath,
    body: dict[str, Any],
    options: list[tuple[str, Any, Position]],
    *,
    lenient: bool = False,
) -> _Layer:
    """One file's (or profile's) settings. ``lenient`` (a file that failed its schema, read
    for its other errors): a part that cannot be read is skipped, the rest read."""
    layer = _Layer()
    if "strict" in body:
        layer.strict = Setting("strict", body["strict"], doc.key_position((*at, "strict")))
    compile_ = body.get("compile", {})
    for opt, value in compile_.items() if isinstance(compile_, dict) or not lenient else ():
        setting = Setting(
            OPTION_PREFIX + opt, freeze(value), doc.key_position((*at, "compile", opt))
        )
        layer.defaults[setting.key] = setting
        options.append((opt, value, setting.position))
    targets = body.get("targets", {})
    for text, spec in targets.items() if isinstance(targets, dict) or not lenient else ():
        try:
            _target(doc, (*at, "targets", text), text, spec, layer, options)
        except (PolicyError, AttributeError, TypeError, KeyError, ValueError):
            if not lenient:
                raise
    return layer


def _target(
    doc: Document,
    at: JsonPath,
    text: str,
    spec: Any,
    layer: _Layer,
    options: list[tuple[str, Any, Position]],
) -> None:
    where = doc.key_position(at)
    pattern = Pattern.parse(text, where)
    settings = _target_settings(doc, at, spec, where)
    comp = spec.get("compile")
    found = []
    for opt, value in comp.items() if isinstance(comp, dict) else ():
        found.append((opt, value, doc.key_position((*at, "compile", opt))))
    if "fullgraph" in spec:
        found.append(("fullgraph", spec["fullgraph"], doc.key_position((*at, "fullgraph"))))
    options.extend(found)
    layer.targets[text] = (pattern, settings)


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


# -- compile options against the installed torch --------------------------------------------
