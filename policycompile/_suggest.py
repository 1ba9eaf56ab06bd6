"""A first policy from a run: ``policycompile suggest`` (SPEC section 10, docs/suggest.md).

The program runs as under ``policycompile run``, in audit mode, so that one run sees every
graph break. Its own ``torch.compile`` calls get an observing backend (:class:`ProgramCompiles`)
like the policy's compile entries, so their graphs, recompiles and ``nn.Module`` instances are
counted too. From what was seen, :func:`suggest` writes a new policy and :func:`update` merges
the findings into an existing one, through ruamel.yaml's round trip, which keeps comments,
key order and formatting.
"""

from __future__ import annotations

import functools
import inspect
import io
import os
import re
import site
import sys
import sysconfig
import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import PolicyError, PolicySyntaxError, Position
from ._observe import (
    _RESUME,
    ObservedBackend,
    Observer,
    Traced,
    _examples_dir,
    _internal_dirs,
)
from ._patch import Plan
from ._report import BreakReport, Report
from ._targets import Kind, Target, policy_module_name

#: The modeline's schema, and the first line of every suggested file.
MODELINE = "# yaml-language-server: $schema={}"
#: Every comment ``--update`` writes starts so, which is how it knows its own.
MARK = "suggest:"
#: A class is suggested as a regional compile entry from this many instances per step.
MIN_INSTANCES = 2
#: The guard failures that say a tensor's shape changed (Dynamo's wording, torch 2.9-2.13).
_SHAPE = re.compile(r"(size|stride|rank) mismatch|\.size\(\)")
_UNNAMED = re.compile(r"[/\\<:]")
#: what a rule can name: identifiers joined by dots (not ``train-model``, not ``<locals>``)
_NAMEABLE = re.compile(r"^[^\W\d]\w*(\.[^\W\d]\w*)*$")
_COMPILE_ID = re.compile(r"^\[?\d+/\d+\]?:\s*")
_OBJECT_ID = re.compile(r"(?<![.\d])\d{9,}\b")


# -- observing the program's own torch.compile calls
class ProgramCompiles:
    """While installed, ``torch.compile`` gives each program call an observing backend, as
    the policy's compile entries have: the region is named after the compiled function or
    the module class, and its rule is where the program called ``torch.compile``. Every
    argument is passed through unchanged; a call torch would refuse goes to torch as made."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.sites: dict[str, str] = {}  # region -> "file:line" of the torch.compile call
        #: region -> the options a layer's own entry would repeat (backend, mode, dynamic)
        self.options: dict[str, dict[str, Any]] = {}
        self._real: Any = None

    def install(self) -> None:
        import torch

        self._real = real = torch.compile
        signature = inspect.signature(real)

        @functools.wraps(real)
        def compile(*args: Any, **kwargs: Any) -> Any:
            return self._compile(real, signature, args, kwargs)

        torch.compile = compile

    def uninstall(self) -> None:
        import torch

        if self._real is not None and getattr(torch.compile, "__wrapped__", None) is self._real:
            torch.compile = self._real  # type: ignore[assignment]
        self._real = None

    def _compile(
        self,
        real: Callable[..., Any],
        signature: inspect.Signature,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        from . import _dynamo

        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return real(*args, **kwargs)
        given = dict(bound.arguments)
        model = given.pop("model", None)
        if model is None:  # @torch.compile(...) with options: the decorator comes next
            return lambda fn: self._compile(real, signature, (fn,), given)
        found = _entry(model)
        ours = isinstance(given.get("backend"), ObservedBackend)
        if found is None or given.get("disable") or ours:
            return real(*args, **kwargs)
        torch_itself = sys._getframe(2).f_code.co_filename.startswith(_internal_dirs()[0])
        if torch_itself and not found[1].is_forward:
            return real(*args, **kwargs)  # torch compiling for itself; m.compile() is the user's
        if given.get("mode") is not None and given.get("options") is not None:
            return real(*args, **kwargs)  # torch says why that is refused
        name, target = found
        site = _caller_site()
        options = {k: v for k, v in given.items() if k not in ("backend", "mode", "options")}
        shown = dict(options)
        for key in ("backend", "mode"):
            if isinstance(given.get(key), str) and given[key] != "inductor":
                shown[key] = given[key]
        plan = Plan(target, shown, False, None, {"compile": f"torch.compile at {site}"})
        region = self.observer.region(name, plan)
        self.sites.setdefault(name, site)
        self.options.setdefault(
            name, {k: v for k, v in shown.items() if k in ("backend", "mode", "dynamic")}
        )
        backend = _dynamo.make_backend(
            given.get("backend"),
            given.get("mode"),
            given.get("options"),
            given.get("dynamic"),
            options.pop("name", None),
        )
        return real(model, backend=ObservedBackend(self.observer, region, backend), **options)


def _entry(model: Any) -> tuple[str, Target] | None:
    """The region name and target of what the program compiles: a function, an
    ``nn.Module`` (its class's forward) or a module's bound ``_call_impl`` (``m.compile()``)."""
    import torch

    owner = getattr(model, "__self__", None)  # m._call_impl from m.compile(), m.method
    calls = getattr(getattr(model, "__func__", None), "__name__", None)
    whole = isinstance(owner, torch.nn.Module) and calls in ("_call_impl", "__call__", "forward")
    if isinstance(model, torch.nn.Module) or whole:
        cls = type(model if isinstance(model, torch.nn.Module) else owner)
        forward = getattr(cls, "forward", None)
        if not isinstance(forward, types.FunctionType):
            return None
        module = _module_name(cls.__module__)
        name = f"{module}:{cls.__qualname__}.forward"
        kind = Kind.METHOD
        target = Target(name, cls, "forward", forward, forward, kind, module, is_forward=True)
        return target.display, target
    func = getattr(model, "__func__", model)
    if not isinstance(func, types.FunctionType):
        return None
    # code made by exec() without a __name__ has no module: its file names it (<string>)
    owned = func.__module__
    module = _module_name(owned) if isinstance(owned, str) else func.__code__.co_filename
    name = f"{module}:{func.__qualname__}"
    kind = Kind.FUNCTION if "." not in func.__qualname__ else Kind.METHOD
    target = Target(name, sys.modules.get(func.__module__), func.__name__, func, func, kind, module)
    return target.display, target


def _module_name(name: str, main: types.ModuleType | None = None) -> str:
    """A module's name as policies give it (``train``, not ``__main__``); ``main`` is the
    program's main module, once the runner has put the interpreter's back."""
    module = main if main is not None and name in ("__main__", "__mp_main__") else None
    module = module or sys.modules.get(name)
    return (policy_module_name(module) if module is not None else None) or name


def _caller_site() -> str:
    """file:line of the program's call to torch.compile (past torch's own frames, as in
    ``nn.Module.compile``)."""
    skip = _internal_dirs()
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        if frame.f_code.co_filename.startswith(_examples_dir()):
            break
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?"
    return f"{shown_path(frame.f_code.co_filename)}:{frame.f_lineno}"


# -- what the run saw
@dataclass
class Findings:
    """What a run observed, as the policy writers need it."""

    report: Report
    command: str  # the run, as the user gave it: "policycompile suggest train.py ARGS"
    breaks: list[tuple[str | None, BreakReport]]  # (the rule's name, the break)
    own_modules: list[str]  # the program's own modules whose code Dynamo traced
    #: compile entry -> repeated module class -> its instances' paths ("" for a frame's own)
    instances: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    sites: dict[str, str] = field(default_factory=dict)  # program entry -> torch.compile site
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # program entry -> options
    base_entries: set[str] = field(default_factory=set)  # regions that are policy entries

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
    instances = {region: _repeated(traced.instances(region), main) for region in traced.seen}
    with observer.lock:
        base = set(observer.regions) - set(sites)  # the policy's own compile entries
    return Findings(report, command, breaks, own, instances, dict(sites), dict(options), base)


def _repeated(
    classes: Mapping[type, Sequence[str]], main: types.ModuleType | None
) -> dict[str, list[str]]:
    """Class name -> the paths of its instances, for classes with at least
    :data:`MIN_INSTANCES` instances, not torch's own (``Linear``), and none of them inside
    an instance of another such class (a layer's norm or MLP: the layer is the region)."""
    repeated = {
        cls: paths
        for cls, paths in classes.items()
        if len(paths) >= MIN_INSTANCES and not cls.__module__.startswith("torch.")
    }
    out = {}
    for cls, paths in repeated.items():
        outer = [p for other, ps in repeated.items() if other is not cls for p in ps]
        if any(any(p.startswith(o + ".") for o in outer if o) for p in paths):
            continue
        name = f"{_module_name(cls.__module__, main)}.{cls.__qualname__}"
        if _NAMEABLE.match(name):  # a class made in a function (<locals>) has no rule name
            out[name] = sorted(paths, key=_path_key)
    return dict(sorted(out.items()))


def _path_key(path: str) -> list[tuple[int, int | str]]:
    """``h.10`` after ``h.9``."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in path.split(".")]


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    """Where the standard library and installed packages live."""
    dirs = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.realpath(path))
    for path in [*site.getsitepackages(), site.getusersitepackages()]:
        dirs.add(os.path.realpath(path))
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
    if real.startswith(_examples_dir()):
        return True
    return not real.startswith((*_library_dirs(), *_internal_dirs()))


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


def shown_path(file: str) -> str:
    """``file`` as a reader finds it: relative to the current directory when inside it, else
    to the ``sys.path`` entry holding it (``transformers/models/...``)."""
    if file.startswith("<"):
        return file
    real = os.path.realpath(file)
    here = os.path.realpath(os.getcwd()) + os.sep
    if real.startswith(here):
        return os.path.relpath(real, here)
    roots = sorted(
        (os.path.realpath(p) + os.sep for p in sys.path if p and os.path.isdir(p)),
        key=len,
        reverse=True,
    )
    for root in roots:
        if real.startswith(root):
            return os.path.relpath(real, root)
    return file


# -- writing a policy
def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # a long reason stays on one line
    yaml.preserve_quotes = True
    return yaml


def _map(items: Iterable[tuple[str, Any]] = ()) -> Any:
    from ruamel.yaml.comments import CommentedMap

    return CommentedMap(items)


def _comment(mapping: Any, key: str, text: str, indent: int) -> None:
    """A comment (one or more lines) above ``key`` in ``mapping``."""
    mapping.yaml_set_comment_before_after_key(key, before=text, indent=indent)


def _reason(breaks: Sequence[BreakReport]) -> str:
    seen: list[str] = []
    for b in breaks:
        text = f"{b.reason} ({shown_path(b.file)}:{b.line})"
        if text not in seen:
            seen.append(text)
    return "graph break: " + "; ".join(seen)


def _unnamed(b: BreakReport) -> str:
    """The function of a break as a reader finds it: ``lam.py:<lambda>`` where a rule
    cannot name it (Dynamo's resume functions by the function they continue)."""
    if not _UNNAMED.search(b.function):
        return b.function
    name = b.function.rsplit(":", 1)[-1]
    resume = _RESUME.match(name)
    return f"{shown_path(b.file)}:{resume['name'] if resume else name}"


def _observed(name: str, breaks: Sequence[BreakReport]) -> str:
    """Where a break rule came from: how often, and the code it covers that no rule of its
    own can (a lambda or closure it calls or compiles, torch's own functions)."""
    n = sum(b.count for b in breaks)
    text = f"{MARK} graph break(s) observed in {n} compiled frame{'s' if n != 1 else ''}"
    elsewhere = sorted({_unnamed(b) for b in breaks if b.function != name})
    if elsewhere:
        text += f", in code it runs that no rule of its own can name: {', '.join(elsewhere)}"
    return text


def regional(findings: Findings) -> list[tuple[str, str, list[str]]]:
    """(class, compile entry, instance paths) of each repeated ``nn.Module`` class, by class;
    a class repeated in several entries is named once, with the entry where it had most."""
    best: dict[str, tuple[str, list[str]]] = {}
    for region, classes in sorted(findings.instances.items()):
        for cls, paths in sorted(classes.items()):
            if cls not in best or len(paths) > len(best[cls][1]):
                best[cls] = (region, paths)
    return [(cls, region, paths) for cls, (region, paths) in sorted(best.items())]


def _recompile_notes(findings: Findings) -> list[str]:
    lines = []
    for r in sorted(findings.report.regions, key=lambda r: r.name):
        if not r.recompiles:
            continue
        where = findings.sites.get(r.name) or (r.rule or "the policy")
        lines.append(f"  {r.name} ({where}): recompiled {r.recompiles}x")
        reasons = list(dict.fromkeys(_guard(x) for x in r.recompile_reasons))
        lines += [f"    guard failed: {x}" for x in reasons[:3]]
        if len(reasons) > 3:
            lines.append(f"    ... and {len(reasons) - 3} more")
        if any(_SHAPE.search(x) for x in reasons):
            if r.name in findings.sites:
                lines.append(
                    "    shapes changed: consider torch.compile(..., dynamic=True) there, or "
                    "torch._dynamo.mark_dynamic on the changing dimension"
                )
            else:
                rule = f"{r.name}: {{compile: {{dynamic: true}}}}"
                lines.append(f"    shapes changed: consider the rule  {rule}")
    return lines


def _guard(text: str) -> str:
    """A guard failure as one line that is the same from run to run: without the compile id
    in front, the source comment and user stack behind, and object ids."""
    first = text.strip().splitlines()[0] if text.strip() else "?"
    first = _COMPILE_ID.sub("", first).split("  # ", 1)[0]
    return _OBJECT_ID.sub("<id>", " ".join(first.split()))


def _header(findings: Findings, schema: str) -> str:
    report = findings.report
    graphs = sum(r.graphs for r in report.regions)
    recompiles = sum(r.recompiles for r in report.regions)
    lines = [
        MODELINE.format(schema),
        f"# Suggested from a run of `{findings.command}`",
        f"# from one run on torch {report.torch_version}: {len(report.regions)} compile "
        f"entr{'y' if len(report.regions) == 1 else 'ies'}, {graphs} graph(s), "
        f"{len(report.graph_breaks)} graph break site(s), {recompiles} recompile(s).",
        "# Read it, commit it, then gate CI on the strict profile:",
        "#   policycompile run POLICY --profile strict --audit ...   (exit 4 on any break)",
        "#   pytest --policy POLICY --policy-profile strict --policy-audit ...",
    ]
    if findings.unnamed:
        lines.append("# Graph breaks in code no rule can name (a lambda compiled at top level,")
        lines.append("# code made by exec(), a module whose name is not an identifier such as")
        lines.append("# train-model.py):")
        lines += [f"#   {shown_path(b.file)}:{b.line}: {b.reason}" for b in findings.unnamed]
    notes = _recompile_notes(findings)
    if notes:
        lines.append("# Recompiles:")
        lines += ["#" + n for n in notes]
    return "\n".join(lines)


def _folder(out: str | None) -> str:
    """Where paths in the written file are relative to: its folder (standard output: here)."""
    return os.path.dirname(os.path.abspath(out)) if out else os.getcwd()


def schema_ref(out: str | None) -> str:
    """The policy schema's path as the modeline gives it: relative to the written file."""
    from ._schema import schema_path

    path = str(schema_path())
    try:
        return os.path.relpath(path, _folder(out))
    except ValueError:  # another drive (Windows)
        return path


def suggest(findings: Findings, *, out: str | None, base: str | None = None) -> str:
    """The text of a new policy from ``findings`` (see the module's docstring)."""
    doc = _map()
    doc["version"] = 1
    if base is not None:
        doc["extends"] = [os.path.relpath(os.path.abspath(base), _folder(out))]
    targets = doc["targets"] = _map()
    by_rule = findings.by_rule()
    for module in findings.own_modules:
        targets[module] = _map([("error_on_graph_break", True)])
        _comment(
            targets,
            module,
            f"{MARK} the program's own code that Dynamo traced: a graph break in it is an "
            "error, except where a rule below allows one",
            2,
        )
    for name, breaks in by_rule.items():
        targets[name] = _map([("error_on_graph_break", False), ("reason", _reason(breaks))])
        _comment(targets, name, _observed(name, breaks), 2)
    profiles = doc["profiles"] = _map()
    strict = profiles["strict"] = _map()
    strict["targets"] = _map((name, _map([("error_on_graph_break", True)])) for name in by_rule)
    _comment(
        profiles,
        "strict",
        f"{MARK} for CI: every graph break the run observed is an error"
        + ("" if by_rule else " (none was observed)" if not findings.breaks else " (none named)"),
        2,
    )
    found = regional(findings)
    if found:
        regional_targets = _map()
        for cls, region, paths in found:
            options = _entry_options(findings, region)
            regional_targets[cls] = _map([("compile", options or True)])
            _comment(regional_targets, cls, _regional_note(findings, cls, region, paths), 6)
            if region in findings.base_entries and region not in regional_targets:
                regional_targets[region] = _map([("compile", False)])
        profiles["regional"] = _map([("targets", regional_targets)])
        _comment(
            profiles,
            "regional",
            f"{MARK} regional compilation: each repeated layer compiles once and its instances "
            "reuse the code (docs/regional.md)",
            2,
        )
    if not findings.own_modules and not by_rule:
        _comment(doc, "targets", f"{MARK} nothing of the program's own code was traced", 0)
    return _dump(doc, _header(findings, schema_ref(out)))


def _entry_options(findings: Findings, region: str) -> Any:
    """The program's compile options for the layers' own entries (its backend and mode, not
    fullgraph, which was the whole entry's); a policy entry's come through ``extends``."""
    options = findings.options.get(region) or {}
    return _map(sorted(options.items())) if options else None


def _regional_note(findings: Findings, cls: str, region: str, paths: list[str]) -> str:
    named = [p for p in paths if p]
    shown = ", ".join(named[:3]) + (", ..." if len(named) > 3 else "")
    lines = [
        f"{MARK} {len(paths)} instances of {cls} ran under {region}"
        + (f" ({shown})" if shown else "")
    ]
    site = findings.sites.get(region)
    if site is not None:
        lines.append(
            f"  takes effect where the program stops compiling {region} whole "
            f"(torch.compile at {site}): inside it these entries are inlined"
        )
    return "\n".join(lines)


def _dump(doc: Any, header: str) -> str:
    stream = io.StringIO()
    _yaml().dump(doc, stream)
    return header + "\n" + stream.getvalue()


# -- merging into an existing policy
def read_for_update(path: str) -> Any:
    """The policy at ``path`` as ruamel.yaml's round-trip document."""
    from ruamel.yaml.error import MarkedYAMLError

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror or exc}", path=path) from None
    try:
        doc = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = Position(path, mark.line + 1, mark.column + 1) if mark is not None else None
        raise PolicySyntaxError(f"invalid YAML: {exc.problem}", position=where) from None
    if not isinstance(doc, dict):
        raise PolicySyntaxError("the policy is not a mapping", path=path)
    return doc


def update(findings: Findings, path: str, policy: Any) -> tuple[str, list[str]]:
    """``path``'s policy with the findings merged in, and what the user should know.

    Nothing written by hand is removed or changed: a rule that forbids an observed break
    keeps forbidding it (it gets a comment, and the break is listed); new rules are added
    for allowed breaks and untouched own modules; the strict profile gains the observed
    breaks; rules that matched nothing get a comment.
    """
    from ruamel.yaml.comments import CommentedMap

    doc = read_for_update(path)
    with open(path, encoding="utf-8") as f:
        before = f.read()
    notes: list[str] = []
    targets = doc.get("targets")
    if not isinstance(targets, CommentedMap):
        targets = doc["targets"] = _map()
    indent = _indent_of(targets, 2)
    names = {_norm(k): k for k in targets}
    hand = set(names)
    by_rule = findings.by_rule()

    # breaks the policy forbids: listed, never loosened
    for name, breaks in by_rule.items():
        forbidden = [b for b in breaks if not b.allowed]
        for b in forbidden:
            by = (b.rule or "").replace(os.path.abspath(path), path)
            notes.append(
                f"{shown_path(b.file)}:{b.line}: {b.reason}: forbidden by {by}; left as written"
            )
        if forbidden:
            pattern = _rule_pattern(forbidden[0].rule)
            if pattern is not None and _norm(pattern) in names:
                key = names[_norm(pattern)]
                text = (
                    f"{MARK} forbids graph break(s) observed in {name}: {_reason(forbidden)}\n"
                    f"  to allow them, add:  {name}: {{error_on_graph_break: false}}"
                )
                if text.splitlines()[0] not in before:
                    _comment(targets, key, text, indent)
            continue
        if name in names:
            continue  # a rule of its own is there: what it says stands
        targets[name] = _map([("error_on_graph_break", False), ("reason", _reason(breaks))])
        names[name] = name
        _comment(targets, name, _observed(name, breaks), indent)

    # own modules no rule governs yet
    for module in findings.own_modules:
        if module in names or policy.resolve(module).get("error_on_graph_break") is not None:
            continue
        if any(
            n.startswith(module + ".")
            and n in hand
            and policy.resolve(n).get("error_on_graph_break") is None
            for n in by_rule
        ):
            continue  # a hand rule there says nothing of breaks: the module's would decide
        targets[module] = _map([("error_on_graph_break", True)])
        names[module] = module
        _comment(targets, module, f"{MARK} the program's own code that Dynamo traced", indent)

    # the strict profile
    profiles = doc.get("profiles")
    if not isinstance(profiles, CommentedMap):
        profiles = doc["profiles"] = _map()
    strict = profiles.get("strict")
    if not isinstance(strict, CommentedMap):
        strict = profiles["strict"] = _map()
        _comment(profiles, "strict", f"{MARK} for CI: every observed graph break is an error", 2)
    strict_targets = strict.get("targets")
    if not isinstance(strict_targets, CommentedMap):
        strict_targets = strict["targets"] = _map()
    strict_names = {_norm(k) for k in strict_targets}
    for name in by_rule:
        if name not in strict_names:
            strict_targets[name] = _map([("error_on_graph_break", True)])

    # rules that matched nothing
    for pattern, where in findings.report.unused_rules:
        ours = os.path.abspath(where.rpartition(":")[0]) == os.path.abspath(path)
        if not ours or pattern not in targets:
            continue
        text = f"{MARK} {pattern} matched nothing in the last run"
        if text not in before:
            _comment(targets, pattern, text, indent)
        notes.append(f"{path}: {pattern} matched nothing in the run")
    return _dump_update(doc), notes


def write_checked(text: str, path: str) -> None:
    """Write ``text`` to ``path`` once it validates as written there (relative ``extends``
    and all); an invalid suggestion is a bug, and leaves ``path`` as it was."""
    import contextlib
    import tempfile

    from ._cli import validate_file

    folder = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=".policycompile-", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        errors = [d for d in validate_file(temp) if d.severity == "error"]
        if errors:
            raise RuntimeError(f"the suggested policy does not validate: {errors[0]}")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _dump_update(doc: Any) -> str:
    stream = io.StringIO()
    _yaml().dump(doc, stream)
    return stream.getvalue()


def _indent_of(mapping: Any, default: int) -> int:
    for key in mapping:
        try:
            return int(mapping.lc.key(key)[1])
        except (AttributeError, KeyError, TypeError):
            break
    return default


def _norm(pattern: str) -> str:
    return str(pattern).replace(":", ".", 1)


def _rule_pattern(rule: str | None) -> str | None:
    """The pattern of a rule as reports name it: ``pattern (file:line)``."""
    if not rule:
        return None
    return rule.rsplit(" (", 1)[0]
