"""What a run observed, as ``suggest`` needs it: each break with the function its rule goes
on, the program's own modules that Dynamo traced, and the repeated ``nn.Module`` classes."""

from __future__ import annotations

import functools
import os
import re
import sys
import types
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._engine.targets import policy_module_name, policy_name_of
from .._observe.attribution import examples_dir, internal_dirs, stdlib_dirs
from .._observe.observer import Observer
from .._observe.report import BreakReport, Report
from .._observe.traced import Traced

#: A class is suggested as a regional compile entry from this many instances per step.
MIN_INSTANCES = 2


_UNNAMED = re.compile(r"[/\\<:]")


#: what a rule can name: identifiers joined by dots (not ``train-model``, not ``<locals>``)
_NAMEABLE = re.compile(r"^[^\W\d]\w*(\.[^\W\d]\w*)*$")


# -- what the run saw
@dataclass
class Findings:
    """What a run observed, as the policy writers need it."""

    report: Report
    command: str  # the run, as the user gave it: "policycompile suggest train.py ARGS"
    breaks: list[tuple[str | None, BreakReport]]  # (the rule's name, the break)
    own_modules: list[str]  # the program's own modules whose code Dynamo traced
    #: compile entry -> repeated layer class -> its instances' paths ("" for a frame's own):
    #: the regional candidates (:func:`layers`)
    instances: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    sites: dict[str, str] = field(default_factory=dict)  # program entry -> torch.compile site
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # program entry -> options
    base_entries: set[str] = field(default_factory=set)  # regions that are policy entries
    #: compile entry -> the outermost repeated classes (``T5Stack`` around ``T5Block``)
    outermost: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def by_rule(self) -> dict[str, list[BreakReport]]:
        """Breaks grouped by the name their rule goes on."""
        out: dict[str, list[BreakReport]] = defaultdict(list)
        for name, b in self.breaks:
            if name is not None:
                out[name].append(b)
        return {k: sorted(v, key=_break_order) for k, v in sorted(out.items())}

    @property
    def unnamed(self) -> list[BreakReport]:
        return [b for name, b in self.breaks if name is None]


def _break_order(b: BreakReport) -> tuple[str, int, str]:
    return (b.file, b.line, b.reason)


def collect(
    report: Report,
    observer: Observer,
    traced: Traced,
    command: str,
    *,
    main: types.ModuleType | None,
    sites: Mapping[str, str],
    options: Mapping[str, dict[str, Any]],
) -> Findings:
    """Findings from the run's report (joined with its children's) and this process's
    observer: the breaks, each with the function its rule goes on, and the program's own
    modules that were traced."""
    with observer.lock:
        named = {(e.function, e.file, e.line, e.reason): e.named for e in observer.breaks.values()}
    breaks = []
    for b in report.graph_breaks:
        key = (b.function, b.file, b.line, b.reason)
        name = named[key] if key in named else (None if _UNNAMED.search(b.function) else b.function)
        breaks.append((name if name is not None and _NAMEABLE.match(name) else None, b))
    breaks.sort(key=lambda nb: _break_order(nb[1]))
    main_dir = os.path.dirname(getattr(main, "__file__", None) or "") or None
    files = set(traced.files) | {b.file for b in report.graph_breaks}
    own = sorted(
        {
            name
            for name in (_module_of(f, main) for f in files if _is_own(f, main_dir))
            if name is not None and _NAMEABLE.match(name)
        }
    )
    layers, outer = {}, {}
    for region in traced.seen:
        classes = traced.instances(region)
        layers[region] = _named(layers_of(classes), main)
        outer[region] = _named(_outermost(classes), main)
    with observer.lock:
        base = set(observer.regions) - set(sites)  # the policy's own compile entries
    return Findings(
        report, command, breaks, own, layers, dict(sites), dict(options), base, outermost=outer
    )


def _candidates(classes: Mapping[type, Sequence[str]]) -> dict[type, Sequence[str]]:
    """Classes with at least :data:`MIN_INSTANCES` instances, not torch's own (``Linear``)."""
    return {
        cls: paths
        for cls, paths in classes.items()
        if len(paths) >= MIN_INSTANCES and not cls.__module__.startswith("torch.")
    }


def _inside(paths: Sequence[str], others: Iterable[str]) -> bool:
    outer = [o for o in others if o]
    return any(p.startswith(o + ".") for p in paths for o in outer)


def _not_inside(classes: Mapping[type, Sequence[str]]) -> dict[type, Sequence[str]]:
    """Those of ``classes`` none of whose instances is inside an instance of another."""
    return {
        cls: paths
        for cls, paths in classes.items()
        if not _inside(paths, [p for other, ps in classes.items() if other is not cls for p in ps])
    }


def _outermost(classes: Mapping[type, Sequence[str]]) -> dict[type, Sequence[str]]:
    """The outermost repeated classes."""
    return _not_inside(_candidates(classes))


def layers_of(classes: Mapping[type, Sequence[str]]) -> dict[type, Sequence[str]]:
    """The repeated layers: classes whose instances are items of a container (their paths end
    in an index, ``encoder.block.3``) and not inside an instance of another such class;
    ``T5Block``, not ``T5Stack`` (the encoder and the decoder) around it nor ``T5LayerFF``
    inside it; both ``WhisperEncoderLayer`` and ``WhisperDecoderLayer``. A model without
    such containers has its outermost repeated classes as layers."""
    indexed = {
        cls: paths
        for cls, paths in _candidates(classes).items()
        if all(p.rsplit(".", 1)[-1].isdigit() for p in paths)
    }
    return _not_inside(indexed) or _outermost(classes)


def _named(
    classes: Mapping[type, Sequence[str]], main: types.ModuleType | None
) -> dict[str, list[str]]:
    """Each class by its rule name (a class made in a function, ``<locals>``, has none)."""
    out = {}
    for cls, paths in classes.items():
        name = f"{policy_name_of(cls.__module__, main)}.{cls.__qualname__}"
        if _NAMEABLE.match(name):
            out[name] = sorted(paths, key=_path_key)
    return dict(sorted(out.items()))


def _path_key(path: str) -> list[tuple[int, int | str]]:
    """``h.10`` after ``h.9``."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in path.split(".")]


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    """Where the standard library and installed packages live."""
    std, packages = stdlib_dirs()
    dirs = {os.path.realpath(d) for d in (*std, *packages)}
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        dirs.add(os.path.join(os.path.realpath(prefix), "lib"))
    return tuple(sorted(d + os.sep for d in dirs))


def _is_own(file: str, main_dir: str | None) -> bool:
    """Whether ``file`` is the program's own code: not the standard library, not an installed
    package, not torch or policycompile; the main module's own directory always is."""
    if file.startswith("<"):
        return False
    real = os.path.realpath(file)
    if main_dir is not None and real.startswith(os.path.realpath(main_dir) + os.sep):
        return True
    if real.startswith(examples_dir()):
        return True
    return not real.startswith((*_library_dirs(), *internal_dirs()))


def _module_of(file: str, main: types.ModuleType | None) -> str | None:
    """The policy name of the module whose source is ``file``."""
    real = os.path.realpath(file)
    candidates: list[types.ModuleType] = [main] if main is not None else []
    candidates += [m for m in list(sys.modules.values()) if isinstance(m, types.ModuleType)]
    for module in candidates:
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and os.path.realpath(path) == real:
            return policy_module_name(module)
    return None
