"""Checks of a policy against the installed torch: compile options, backends, modes,
Inductor options, the per-function controls and ``torch._dynamo.config`` names, each a
located error naming the torch version (docs/policy.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._errors import PolicyError, PolicyOptionError, PolicySchemaError, Position
from .._torch import catalog
from .diagnose import _describe, _did_you_mean
from .keys import (
    COMPILE,
    CONFIG_PREFIX,
    DISABLE,
    EXCLUSIVE,
    OPTION_PREFIX,
    SECTION8_API,
    STANCE,
    thaw,
)
from .tree import Setting

#: a layer's targets: pattern text -> (pattern, key -> setting)
Targets = Mapping[str, tuple[Any, Mapping[str, Setting]]]


def check_options(
    options: Iterable[tuple[str, Any, Position]], backends: frozenset[str]
) -> list[PolicyError]:
    """Every compile option the installed ``torch.compile`` refuses, located."""
    version, accepted = catalog.torch_compile_keywords()
    problems: list[PolicyError] = []
    for name, value, position in sorted(options, key=lambda o: o[2]):
        if name not in accepted:
            newer = catalog.NEWER_OPTIONS.get(name)
            why = f"; torch {newer} has it" if newer else _did_you_mean(name, accepted)
            problems.append(
                PolicyOptionError(
                    f"unknown compile option {name!r}: torch.compile in torch {version} accepts "
                    f"{', '.join(sorted(accepted))}{why}",
                    position,
                )
            )
            continue
        problem = _check_value(name, value, backends)
        if problem is not None:
            problems.append(PolicyOptionError(f"{problem} (torch {version})", position))
    return problems


def _check_value(name: str, value: Any, backends: frozenset[str]) -> str | None:
    """What is wrong with compile option ``name: value`` for the installed torch, or None."""
    if name == "backend" and isinstance(value, str):
        known = set(catalog.torch_backends()) | backends
        if value not in known:
            return (
                f"unknown backend {value!r}{_did_you_mean(value, known)} (a backend the "
                "program registers itself must be registered before apply; `policycompile "
                "validate --backend NAME` accepts it)"
            )
    if name == "mode" and value is not None:
        modes = catalog.inductor_modes()
        if value not in modes:
            return f"unknown mode {value!r}{_did_you_mean(str(value), modes)}; modes: " + (
                ", ".join(modes)
            )
    if name == "options" and isinstance(value, dict):
        known_options = catalog.inductor_options()
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


def check_controls(targets: Targets) -> tuple[bool, list[PolicyError]]:
    """The per-function controls against the installed torch, and combinations within one
    rule that cannot mean anything: whether any such key is set, and every problem."""
    found = False
    problems: list[PolicyError] = []
    for text, (_pattern, settings) in sorted(targets.items()):
        for key, setting in sorted(settings.items(), key=lambda kv: kv[1].position):
            if key in SECTION8_API or key.startswith(CONFIG_PREFIX):
                found = True
                problem = _check_control(key, setting, text)
                if problem is not None:
                    problems.append(problem)
            elif key == DISABLE and not isinstance(setting.value, bool):
                found = True
                if "recursive" not in catalog.parameters("torch.compiler", "disable"):
                    problems.append(
                        PolicyOptionError(
                            "'disable: {recursive: ...}' needs torch.compiler.disable("
                            f"recursive=...), which torch {catalog.version()} does not have",
                            setting.position,
                            rule=text,
                        )
                    )
        problems.extend(_combinations(text, settings))
    return found, problems


def _combinations(text: str, settings: Mapping[str, Setting]) -> list[PolicyError]:
    """What one rule sets together that cannot mean anything."""
    problems: list[PolicyError] = []
    on = {k for k, s in settings.items() if s.value is not False}
    for a, b, why in (
        (COMPILE, DISABLE, "Dynamo would skip what it is asked to compile"),
        *EXCLUSIVE,
    ):
        if a in on and b in on:
            later = max(settings[a].position, settings[b].position)
            problems.append(
                PolicySchemaError(f"target {text!r} sets {a} and {b}: {why}", later, rule=text)
            )
    compile_ = settings.get(COMPILE)
    for key, setting in settings.items():
        entry_only = key == STANCE or key.startswith(CONFIG_PREFIX)
        if entry_only and compile_ is not None and compile_.value is False:
            problems.append(
                PolicySchemaError(
                    f"target {text!r} sets {key.split('.')[0]} with 'compile: false': it "
                    "only applies around a compile entry",
                    setting.position,
                    rule=text,
                )
            )
    return problems


def _check_control(key: str, setting: Setting, rule: str) -> PolicyError | None:
    version = catalog.version()
    if key in SECTION8_API:
        module, name = SECTION8_API[key]
        if catalog.api(module, name) is None:
            return PolicyOptionError(
                f"'{key}' needs {module}.{name}, which torch {version} does not have",
                setting.position,
                rule=rule,
            )
    if key == STANCE:
        stances = catalog.stances()
        if setting.value not in stances:
            return PolicyOptionError(
                f"unknown stance {setting.value!r}{_did_you_mean(str(setting.value), stances)}; "
                f"torch {version} has: {', '.join(stances)}",
                setting.position,
                rule=rule,
            )
    if key.startswith(CONFIG_PREFIX):
        name = key[len(CONFIG_PREFIX) :]
        config = catalog.dynamo_config_defaults()
        if name not in config:
            hint = _did_you_mean(name, config) or "; see torch._dynamo.config"
            return PolicyOptionError(
                f"unknown torch._dynamo.config name {name!r} in torch {version}{hint}",
                setting.position,
                rule=rule,
            )
        value = thaw(setting.value)
        if not _same_kind(value, config[name]):
            return PolicyOptionError(
                f"torch._dynamo.config.{name} takes {_kind(config[name])}, not "
                f"{_describe(value)} (torch {version})",
                setting.position,
                rule=rule,
            )
    return None


def check_mode_with_options(defaults: Mapping[str, Setting], targets: Targets) -> list[PolicyError]:
    """torch.compile raises "Either mode or options can be specified" for both at once:
    the same here, located, for the file's defaults and each target's own options."""

    def given(settings: Mapping[str, Setting], key: str) -> Setting | None:
        found = settings.get(OPTION_PREFIX + key)
        return found if found is not None and found.value is not None else None

    groups = [defaults] + [
        {**defaults, **settings}
        for _, settings in targets.values()
        if (entry := settings.get(COMPILE)) is not None and entry.value is True
    ]
    problems: list[PolicyError] = []
    for settings in groups:
        mode, options = given(settings, "mode"), given(settings, "options")
        if mode is not None and options is not None:
            problem = mode_with_options(mode.position, options.position)
            if str(problem) not in {str(p) for p in problems}:  # the defaults', once
                problems.append(problem)
    return problems


def mode_with_options(mode: Position, options: Position) -> PolicyOptionError:
    """The error for 'mode' and 'options' given together, located at the later of the two."""
    second = max(mode, options)
    return PolicyOptionError(
        f"'mode' ({mode.short}) and 'options' ({options.short}) together: torch.compile "
        "raises 'Either mode or options can be specified, but both can't be specified at the "
        "same time.'; give Inductor's options for the mode yourself, or only the mode",
        second,
    )
