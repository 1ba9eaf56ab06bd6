"""A first policy from a run: ``policycompile suggest`` (docs/suggest.md).

The program runs as under ``policycompile run``, in audit mode, so that one run sees every
graph break. Its own ``torch.compile`` calls get an observing backend (:class:`ProgramCompiles`)
like the policy's compile entries, so their graphs, recompiles and ``nn.Module`` instances are
counted too. From what was seen, :func:`suggest` writes a new policy and :func:`update` merges
the findings into an existing one, through ruamel.yaml's round trip, which keeps comments,
key order and formatting.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import PolicyError, PolicySyntaxError, Position
from .._observe.attribution import shown_path
from .._observe.report import BreakReport
from .._policy.load import load
from .._policy.validate import validate_file
from .._torch.logs import RESUME
from . import files
from .findings import _UNNAMED, Findings

#: The modeline's schema, and the first line of every suggested file.
MODELINE = "# yaml-language-server: $schema={}"
#: Every comment ``--update`` writes starts so, which is how it knows its own.
MARK = "suggest:"
#: The guard failures that say a tensor's shape changed (Dynamo's wording, torch 2.9-2.13).
_SHAPE = re.compile(r"(size|stride|rank) mismatch|\.size\(\)")
_COMPILE_ID = re.compile(r"^\[?\d+/\d+\]?:\s*")
_OBJECT_ID = re.compile(r"(?<![.\d])\d{9,}\b")


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
    resume = RESUME.match(name)
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
    from .._policy.schema import schema_path

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
            "reuse the code (docs/regional.md)\n"
            "  not measured: this run compiled the entries whole, and a layer compiled as an "
            "entry\n  of its own may meet graph breaks this run could not see; measure it "
            "with\n  `policycompile tune` before you use it (docs/tune.md)",
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
        text, _style = files.read(path)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise PolicyError(f"cannot read {path}: {why or exc}", path=path) from None
    try:
        doc = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = Position(path, mark.line + 1, mark.column + 1) if mark is not None else None
        raise PolicySyntaxError(f"invalid YAML: {exc.problem}", position=where) from None
    if not isinstance(doc, dict):
        raise PolicySyntaxError("the policy is not a mapping", path=path)
    return doc


@dataclass
class _Update:
    """One policy file being updated: its round-trip document, the text it had, and its
    targets by normalised name."""

    path: str
    shown: str  # the file as the user named it
    doc: Any
    before: str
    targets: Any
    indent: int
    names: dict[str, str]
    notes: list[str] = field(default_factory=list)


def update(
    findings: Findings, path: str, policy: Any, *, shown: str | None = None
) -> tuple[str, list[str]]:
    """``path``'s policy with the findings merged in, and what the user should know.

    Nothing written by hand is removed or changed: a rule that forbids an observed break
    keeps forbidding it (it gets a comment, and the break is listed); new rules are added
    for allowed breaks and untouched own modules; the strict profile gains the observed
    breaks; rules that matched nothing get a comment.
    """
    from ruamel.yaml.comments import CommentedMap

    doc = read_for_update(path)
    _unshare(doc)
    before, _style = files.read(path)
    targets = doc.get("targets")
    if not isinstance(targets, CommentedMap):
        targets = doc["targets"] = _map()
    names = {_norm(k): k for k in targets}
    u = _Update(path, shown or path, doc, before, targets, _indent_of(targets, 2), names)
    hand = set(names)
    by_rule = findings.by_rule()
    _add_breaks(u, by_rule)
    _add_own_modules(u, findings.own_modules, by_rule, hand, policy)
    _extend_strict(u, by_rule)
    _mark_unused(u, findings)
    return _dump_update(doc), u.notes


def _unshare(doc: Any) -> None:
    """Give each profile its own copy of any node it shares with the top-level targets
    (``targets: &common`` and ``strict: {targets: *common}``): a rule added to the targets
    must never reach a profile through an alias, where it would allow what the profile
    forbids."""
    import copy

    shared: set[int] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict | list):
            shared.add(id(node))
            for child in node.values() if isinstance(node, dict) else node:
                collect(child)

    def unshare(parent: Any) -> None:
        keys = parent.keys() if isinstance(parent, dict) else range(len(parent))
        for key in list(keys):
            child = parent[key]
            if id(child) in shared:
                own = copy.deepcopy(child)
                if getattr(own, "anchor", None) is not None:
                    own.anchor.value = None
                parent[key] = own
            elif isinstance(child, dict | list):
                unshare(child)

    collect(doc.get("targets"))
    profiles = doc.get("profiles")
    if isinstance(profiles, dict):
        unshare(profiles)


def _add_breaks(u: _Update, by_rule: Mapping[str, list[BreakReport]]) -> None:
    """A rule allowing each observed break where no rule of its own is written; breaks the
    policy forbids are listed and commented, never loosened."""
    for name, breaks in by_rule.items():
        forbidden = [b for b in breaks if not b.allowed]
        for b in forbidden:
            by = str(b.rule).replace(os.path.abspath(u.path), u.shown)
            u.notes.append(
                f"{shown_path(b.file)}:{b.line}: {b.reason}: forbidden by {by}; left as written"
            )
        if forbidden:
            rule = forbidden[0].rule
            pattern = rule.pattern if rule is not None and not rule.site else None
            if pattern is not None and _norm(pattern) in u.names:
                text = (
                    f"{MARK} forbids graph break(s) observed in {name}: {_reason(forbidden)}\n"
                    f"  to allow them, add:  {name}: {{error_on_graph_break: false}}"
                )
                if text.splitlines()[0] not in u.before:
                    _comment(u.targets, u.names[_norm(pattern)], text, u.indent)
            continue
        if name in u.names:
            continue  # a rule of its own is there: what it says stands
        u.targets[name] = _map([("error_on_graph_break", False), ("reason", _reason(breaks))])
        u.names[name] = name
        _comment(u.targets, name, _observed(name, breaks), u.indent)


def _add_own_modules(
    u: _Update,
    own_modules: Sequence[str],
    by_rule: Mapping[str, list[BreakReport]],
    hand: set[str],
    policy: Any,
) -> None:
    """``error_on_graph_break: true`` on the program's own modules no rule governs yet."""
    for module in own_modules:
        if module in u.names or policy.resolve(module).get("error_on_graph_break") is not None:
            continue
        if any(
            n.startswith(module + ".")
            and n in hand
            and policy.resolve(n).get("error_on_graph_break") is None
            for n in by_rule
        ):
            continue  # a hand rule there says nothing of breaks: the module's would decide
        u.targets[module] = _map([("error_on_graph_break", True)])
        u.names[module] = module
        _comment(u.targets, module, f"{MARK} the program's own code that Dynamo traced", u.indent)


def _extend_strict(u: _Update, by_rule: Mapping[str, list[BreakReport]]) -> None:
    """The strict profile forbids every observed break."""
    from ruamel.yaml.comments import CommentedMap

    profiles = u.doc.get("profiles")
    if not isinstance(profiles, CommentedMap):
        profiles = u.doc["profiles"] = _map()
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


def _mark_unused(u: _Update, findings: Findings) -> None:
    """A comment on each rule of this file that matched nothing in the run."""
    for unused in findings.report.unused_rules:
        pattern = unused.pattern
        ours = os.path.abspath(unused.file) == os.path.abspath(u.path)
        if not ours or pattern not in u.targets:
            continue
        text = f"{MARK} {pattern} matched nothing in the last run"
        if text not in u.before:
            _comment(u.targets, pattern, text, u.indent)
        u.notes.append(f"{u.shown}: {pattern} matched nothing in the run")


def write_checked(text: str, path: str, *, style: files.Style | None = None) -> None:
    """Write ``text`` to ``path`` once it validates as written there (relative ``extends``
    and all, and extending no file it would replace); an invalid suggestion is a bug, and
    leaves ``path`` as it was (see :func:`files.write_checked`)."""

    def check(temp: str) -> list[str]:
        errors = [str(d) for d in validate_file(temp) if d.severity == "error"]
        if not errors:
            sources = load(temp, profile="").sources[1:]
            if os.path.realpath(path) in {os.path.realpath(s) for s in sources}:
                errors.append(f"it extends {path}, the very file it would replace")
        return errors

    files.write_checked(text, path, check, style=style)


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
