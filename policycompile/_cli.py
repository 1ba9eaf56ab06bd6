"""The ``policycompile`` command line: validate, explain, plan, tree, run, schema."""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from ._errors import PolicyError
from ._lint import Diagnostic, lint
from ._load import MAX_BYTES, load
from ._policy import Policy
from ._schema import schema_text
from ._tree import COMPILE, OPTION_PREFIX, Explanation, thaw

if TYPE_CHECKING:
    from ._handle import PolicyHandle
    from ._report import Report

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL, EXIT_VIOLATIONS = 0, 1, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="policycompile",
        description="torch.compile settings for whole codebases, from one YAML policy.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check policy files; exit 1 if any has an error")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="diagnostics as JSON")
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="largest file accepted")
    p.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="NAME",
        help="accept this backend name too (one the program registers before apply)",
    )

    p = sub.add_parser("explain", help="which rule sets each key of NAME, and what lost")
    p.add_argument("file", metavar="FILE")
    p.add_argument("name", metavar="NAME", help="pkg.mod.Class.method or pkg.mod:Class.method")
    p.add_argument("--profile", default=None)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "plan", help="import modules and list what would be wrapped, without patching"
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--import", dest="modules", nargs="+", required=True, metavar="MODULE")
    p.add_argument("--profile", default=None)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("tree", help="print the rules as a tree of dotted segments")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--profile", default=None)

    p = sub.add_parser(
        "run",
        help="run a program (python SCRIPT or -m MODULE) with the policy applied; print a report",
        usage="policycompile run FILE [--profile P] [--audit] [--report-json OUT] "
        "[--verbose] [--no-rank-check] (-m MODULE | SCRIPT) [ARGS...]",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--profile", default=None)
    p.add_argument("--audit", action="store_true", help="record forbidden breaks, do not raise")
    p.add_argument("--report-json", metavar="OUT", default=None)
    p.add_argument("--verbose", action="store_true", help="recompile reasons with the user stack")
    p.add_argument(
        "--no-rank-check",
        action="store_true",
        help="do not check that all ranks of a torch.distributed job apply the same policy",
    )
    p.add_argument("-m", dest="module", default=None, metavar="MODULE")

    p = sub.add_parser(
        "suggest",
        help="run a program and write a first policy from what torch.compile did",
        usage="policycompile suggest [-o OUT] [--base FILE | --update FILE] [--report-json OUT] "
        "[--no-rank-check] (-m MODULE | SCRIPT) [ARGS...]",
    )
    p.add_argument(
        "-o",
        dest="out",
        default=None,
        metavar="OUT",
        help=f"where to write the policy ('-' for standard output; default {SUGGEST_OUT}, "
        "which must not exist yet; with --update, FILE itself)",
    )
    p.add_argument("--base", default=None, metavar="FILE", help="apply this policy in the run")
    p.add_argument(
        "--update",
        default=None,
        metavar="FILE",
        help="run under this policy and merge the findings into it (comments and rules kept)",
    )
    p.add_argument("--report-json", metavar="OUT", default=None)
    p.add_argument("--no-rank-check", action="store_true")
    p.add_argument("-m", dest="module", default=None, metavar="MODULE")

    sub.add_parser("schema", help="print the JSON Schema of policy files")
    return parser


#: ``suggest`` writes here when given no ``-o``.
SUGGEST_OUT = "policy.yaml"


#: per command that runs a program: its options that take a value, and its positionals
#: before SCRIPT
_PROGRAM_COMMANDS = {
    "run": (("--profile", "--report-json"), 1),
    "suggest": (("-o", "--base", "--update", "--report-json"), 0),
}


def _split_run(argv: list[str], command: str = "run") -> tuple[list[str], str | None, list[str]]:
    """Split ``run`` (or ``suggest``) arguments into ours, the SCRIPT, and the program's:
    everything after ``-m MODULE`` or SCRIPT belongs to the program, as with the python
    command."""
    valued, before = _PROGRAM_COMMANDS[command]
    ours: list[str] = []
    i = 0
    positional = 0
    while i < len(argv):
        arg = argv[i]
        if arg in valued and i + 1 < len(argv):
            ours += argv[i : i + 2]
            i += 2
            continue
        if arg == "-m" and i + 1 < len(argv):
            return ours + argv[i : i + 2], None, argv[i + 2 :]
        if not arg.startswith("-"):
            positional += 1
            if positional == before + 1:  # FILE, then SCRIPT (run); SCRIPT (suggest)
                return ours, arg, argv[i + 1 :]
        ours.append(arg)
        i += 1
    return ours, None, []


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status: 0 ok, 1 invalid policy, 2 usage, 3 a bug
    in policycompile, 4 audit violations (``run --audit``); ``run`` otherwise exits with the
    program's own status."""
    out = out if out is not None else sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    program: str | None = None
    program_args: list[str] = []
    if argv[:1] in (["run"], ["suggest"]):
        ours, program, program_args = _split_run(argv[1:], argv[0])
        argv = [argv[0], *ours]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, usage errors are 2
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    args.program, args.program_args = program, program_args
    if args.command in _PROGRAM_COMMANDS and (args.module is None) == (args.program is None):
        print(f"policycompile {args.command}: give either -m MODULE or SCRIPT", file=sys.stderr)
        return EXIT_USAGE
    try:
        handler = _COMMANDS[args.command]
        return handler(args, out)
    except PolicyError as exc:
        print(exc, file=out if args.command == "validate" else sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(
            f"policycompile: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in policycompile, not in your policy; please report it with the "
            "command you ran.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    diagnostics: list[tuple[str, Diagnostic]] = []
    for path in args.files:
        found = validate_file(path, max_bytes=args.max_bytes, backends=args.backend)
        diagnostics.extend((path, d) for d in found)
    if args.json:
        rows = [
            {
                "file": d.position.path,
                "line": d.position.line,
                "column": d.position.column,
                "severity": d.severity,
                "message": d.message,
            }
            for _, d in diagnostics
        ]
        json.dump({"diagnostics": rows}, out, indent=2)
        out.write("\n")
    else:
        for _, d in diagnostics:
            print(d, file=out)
    return EXIT_INVALID if any(d.severity == "error" for _, d in diagnostics) else EXIT_OK


def _as_diagnostic(exc: PolicyError, path: str) -> Diagnostic:
    from ._errors import Position

    where = exc.position or Position(exc.path or path, 1, 1)
    return Diagnostic(where, exc.severity, exc.message)


def validate_file(
    path: str, *, max_bytes: int = MAX_BYTES, backends: Sequence[str] = ()
) -> list[Diagnostic]:
    """Errors and provable warnings for one policy file and each of its profiles.

    :param backends: backend names to accept besides those torch knows.
    """
    try:
        base = load(path, profile="", max_bytes=max_bytes, backends=backends)
    except PolicyError as exc:
        nested: list[PolicyError] = getattr(exc, "diagnostics", [exc])
        return [_as_diagnostic(e, path) for e in nested]
    found: set[Diagnostic] = set(lint(base))
    for name in base.profiles:
        try:
            found.update(lint(load(path, profile=name, max_bytes=max_bytes, backends=backends)))
        except PolicyError as exc:
            found.add(_as_diagnostic(exc, path))
    return sorted(found)


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    policy = load(args.file, profile=args.profile)
    explanation = policy.explain(args.name)
    if args.json:
        json.dump(explain_json(policy, explanation), out, indent=2)
        out.write("\n")
    else:
        out.write(explain_text(policy, explanation))
    return EXIT_OK


def explain_json(policy: Policy, explanation: Explanation) -> dict[str, Any]:
    """The ``explain --json`` document (SPEC section 6)."""
    settings: dict[str, Any] = {}
    for key, decision in sorted(explanation.resolution.decisions.items()):
        win = decision.winner
        settings[key] = {
            "value": thaw(decision.value),
            "rule": decision.position.short,
            "pattern": win.source,
            "reason": win.setting.reason,
            "inherited": not decision.direct and win.rule is not None,
            "lost": [
                {
                    "pattern": loser.candidate.source,
                    "rule": loser.candidate.setting.position.short,
                    "value": thaw(loser.candidate.setting.value),
                    "why": loser.why,
                }
                for loser in explanation.losers.get(key, ())
            ],
        }
    return {
        "name": explanation.resolution.name,
        "policy": policy.path,
        "profile": policy.profile,
        "settings": settings,
    }


def _fmt(value: Any) -> str:
    return json.dumps(thaw(value))


def explain_text(policy: Policy, explanation: Explanation) -> str:
    """A readable explanation: each key, its value, the winning rule, and the losers."""
    res = explanation.resolution
    profile = f" (profile {policy.profile})" if policy.profile else ""
    lines = [f"{res.name}{profile}"]
    if not res.decisions:
        lines.append("  no rule of the policy reaches this name")
    if COMPILE not in res.decisions:
        lines.append("  compile: not a compile entry")
    for key, decision in sorted(res.decisions.items()):
        win = decision.winner
        how = "" if decision.direct or win.rule is None else ", inherited"
        line = (
            f"  {key} = {_fmt(decision.value)}    {win.source!r} at {decision.position.short}{how}"
        )
        if win.setting.reason:
            line += f"  # {win.setting.reason}"
        lines.append(line)
        for loser in explanation.losers.get(key, ()):
            c = loser.candidate
            lines.append(
                f"      lost: {c.source!r} at {c.setting.position.short} "
                f"({_fmt(c.setting.value)}): {loser.why}"
            )
    return "\n".join(lines) + "\n"


def _tree(args: argparse.Namespace, out: TextIO) -> int:
    out.write(tree_text(load(args.file, profile=args.profile)))
    return EXIT_OK


def tree_text(policy: Policy) -> str:
    """The rules as a tree of dotted segments, each node with the keys it sets."""
    root: dict[str, Any] = {}
    for rule in policy.rules:
        node = root
        for i, seg in enumerate(rule.pattern.segments):
            label = (":" if rule.pattern.module_end == i else "") + seg
            node = node.setdefault(label, {})
        node[""] = rule
    profile = f" (profile {policy.profile})" if policy.profile else ""
    lines = [f"{policy.path}{profile}: {len(policy.rules)} rules"]
    if policy.defaults:
        opts = ", ".join(f"{s.key[len(OPTION_PREFIX) :]}={_fmt(s.value)}" for s in policy.defaults)
        lines.append(f"compile defaults: {opts}")

    def walk(node: dict[str, Any], prefix: str) -> None:
        children = sorted(k for k in node if k)
        for i, label in enumerate(children):
            last = i == len(children) - 1
            child = node[label]
            text = f"{prefix}{'└── ' if last else '├── '}{label}"
            rule = child.get("")
            if rule is not None:
                keys = ", ".join(f"{s.key}={_fmt(s.value)}" for s in rule.settings)
                text += f"    [{keys}]  {rule.position.short}"
                reasons = {s.reason for s in rule.settings if s.reason}
                if reasons:
                    text += f"  # {'; '.join(sorted(reasons))}"
            lines.append(text)
            walk(child, prefix + ("    " if last else "│   "))

    walk(root, "")
    return "\n".join(lines) + "\n"


def _plan(args: argparse.Namespace, out: TextIO) -> int:
    import importlib
    import types

    from ._patch import plan_module
    from ._targets import policy_module_name

    policy = load(args.file, profile=args.profile)
    if "" not in sys.path:
        sys.path.insert(0, "")  # as `python -m` does: modules of the current directory
    for name in args.modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            print(f"policycompile: cannot import {name}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    matched: set[Any] = set()
    plans = []
    problems = []
    named = [
        (name, m)
        for m in list(sys.modules.values())
        if isinstance(m, types.ModuleType) and (name := policy_module_name(m)) is not None
    ]
    seen_problems: set[str] = set()
    for name, module in sorted(named, key=lambda nm: nm[0]):
        if policy.tree.covers_module(name):
            mp = plan_module(policy, module, matched)
            plans.extend(mp.plans)
            for problem in mp.problems:  # one module may reach a rule by several paths
                if str(problem) not in seen_problems:
                    seen_problems.add(str(problem))
                    problems.append(problem)
    nested = nested_entries(plans)
    unused = [r for r in policy.rules if r not in matched]
    if args.json:
        doc = {
            "policy": policy.path,
            "profile": policy.profile,
            "wrapped": [
                {
                    "name": p.target.display,
                    "kind": p.target.kind.value,
                    "decorators": p.decorators,
                    "rules": dict(p.rules),
                    "notes": list(p.notes),
                }
                for p in plans
            ],
            "problems": [str(e) for e in problems],
            "nested_entries": [{"outer": o, "inner": i} for o, i in nested],
            "unused_rules": [f"{r.pattern.text} ({r.position.short})" for r in unused],
        }
        json.dump(doc, out, indent=2)
        out.write("\n")
    else:
        out.write(f"{len(plans)} objects would be wrapped by {policy.path}\n")
        for p in plans:
            out.write(f"\n{p.target.display}  [{p.target.kind.value}]\n")
            for decorator in p.decorators:
                out.write(f"    {decorator}\n")
            for key, text in sorted(p.rules.items()):
                out.write(f"      {key}: {text}\n")
            for note in p.notes:
                out.write(f"      note: {note}\n")
        for outer, inner in nested:
            out.write(
                f"warning: {inner} is a compile entry built inside {outer}, also a compile "
                "entry: when that one is compiled, Dynamo traces this one inside it and torch "
                "ignores its own options (fullgraph) there; compile one level, not both\n"
            )
        for problem in problems:
            severity = "error" if policy.strict else "warning"
            out.write(str(problem).replace(": error: ", f": {severity}: ", 1) + "\n")
        for rule in unused:
            out.write(f"unused rule: {rule.pattern.text} ({rule.position.short})\n")
    return EXIT_INVALID if problems and policy.strict else EXIT_OK


def nested_entries(plans: Sequence[Any]) -> list[tuple[str, str]]:
    """(outer, inner) compile entries where the outer one is an ``nn.Module`` forward whose
    class's ``__init__`` names the inner one's class (``GPT2Model`` builds ``GPT2Block``s):
    compiling the outer traces the inner and ignores the inner's options."""
    entries = [p for p in plans if p.compile is not None and p.target.is_forward]
    by_name = {p.target.owner.__name__: p for p in entries}
    found = []
    for outer in entries:
        init = vars(outer.target.owner).get("__init__")
        todo = [getattr(init, "__code__", None)]
        names: set[str] = set()
        while todo:  # the method's code and the code nested in it (comprehensions)
            code = todo.pop()
            if isinstance(code, types.CodeType):
                names.update(code.co_names)
                todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        for name in sorted(names & set(by_name)):
            inner = by_name[name]
            if inner is not outer:
                found.append((outer.target.display, inner.target.display))
    return found


@dataclass
class _Outcome:
    """How a program run under a policy ended, and its report where this process prints it."""

    status: int
    report: Report | None  # None on a rank other than 0: rank 0 prints the job's report
    violations: int


def _run_program(
    args: argparse.Namespace,
    handle: PolicyHandle,
    *,
    on_main: Callable[[types.ModuleType], object] = lambda module: None,
    strict: bool | None = None,
) -> _Outcome | int:
    """Run ``args``' program under ``handle``'s policy as ``run`` does: the policy exported to
    child processes, the main module patched as it defines things, the report joined with
    the children's and merged across ranks. Returns the usage error's status where the
    program cannot be found. ``strict`` overrides the file's for the children as it was for
    ``handle`` (load())."""
    from ._children import exported, read
    from ._report import join_processes
    from ._runner import run_main

    policy = handle.policy
    with exported(
        policy=policy.path,
        profile=policy.profile,
        audit=handle.audit,
        sha256=policy.fingerprint,
        rank_check=handle.ranks.check,
        strict=strict,
    ) as session:

        def local() -> Report:
            """This process's report, joined with what its children left in the spool."""
            children, problems = read(session.spool)
            report = join_processes(handle.report(), children)
            if problems:
                report = replace(report, warnings=(*report.warnings, *problems))
            return report

        def defined(module: types.ModuleType, name: str) -> object:
            on_main(module)
            return handle.patch_module(module, only=name)

        handle.ranks.local = local
        try:
            status = run_main(
                args.module or args.program,
                args.program_args,
                as_module=args.module is not None,
                on_defined=defined,
                on_error=handle.record_exception,
                quiet=(PolicyError,),
            )
        except (FileNotFoundError, ModuleNotFoundError) as exc:
            print(f"policycompile {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        _settle_children()
        ranks = handle.ranks
        ranks.gather()  # a process group still alive at the end: merge over it now
        report: Report | None = local() if ranks.rank is None else ranks.merged
        if ranks.rank is not None and ranks.rank != 0:
            # rank 0 prints and writes the job's report; this rank's exit status still
            # says whether any rank saw a violation
            summary = ranks.summary
            return _Outcome(
                status, None, summary["violations"] if summary else len(local().violations)
            )
        if report is None:  # rank 0 without a merged report (its group failed to agree)
            report = local()
    return _Outcome(status, report, len(report.violations))


def _print_report(report: Report | None, args: argparse.Namespace) -> None:
    if report is None:
        return
    sys.stderr.write("\n" + report.text(verbose=getattr(args, "verbose", False)))
    if args.report_json:
        with open(args.report_json, "w", encoding="utf-8") as f:
            f.write(report.to_json() + "\n")


def _finish_ranks(handle: PolicyHandle, outcome: _Outcome, audit: bool) -> int:
    """The exit status; every rank says it reached the end (docs/distributed.md)."""
    ranks = handle.ranks
    failing = outcome.status == 0 and audit and bool(outcome.violations)
    if failing and ranks.rank:
        # torchrun may stop this rank once another exits: say why it fails, first
        print(
            f"policycompile: rank {ranks.rank}: exit status {EXIT_VIOLATIONS}: the job's audit "
            f"found {outcome.violations} violation(s) (rank 0 printed the report)",
            file=sys.stderr,
            flush=True,
        )
    ranks.finish(failing=failing)
    return EXIT_VIOLATIONS if failing else outcome.status


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from ._api import apply

    handle = apply(
        args.file, profile=args.profile, audit=args.audit, rank_check=not args.no_rank_check
    )
    try:
        outcome = _run_program(args, handle)
    finally:
        handle.undo()
    if isinstance(outcome, int):
        return outcome
    _print_report(outcome.report, args)
    return _finish_ranks(handle, outcome, args.audit)


def _suggest(args: argparse.Namespace, out: TextIO) -> int:
    """``policycompile suggest``: run the program in audit mode under ``--base`` (or
    ``--update``'s file, or nothing), observing its own torch.compile calls too, and write
    the policy the run suggests (docs/suggest.md)."""
    import os
    import tempfile

    from . import _suggest
    from ._api import apply
    from ._observe import Traced

    if args.base and args.update:
        print("policycompile suggest: give --base or --update, not both", file=sys.stderr)
        return EXIT_USAGE
    target = args.out or args.update or SUGGEST_OUT
    if args.out is None and args.update is None and os.path.exists(target):
        print(
            f"policycompile suggest: {target} exists: give -o OUT to replace it, or "
            f"--update {target} to merge this run into it",
            file=sys.stderr,
        )
        return EXIT_USAGE
    folder = os.path.dirname(os.path.abspath(target))
    if target != "-" and not os.path.isdir(folder):
        print(f"policycompile suggest: cannot write {target}: no folder {folder}", file=sys.stderr)
        return EXIT_USAGE
    if target != "-" and os.path.isdir(target):
        print(f"policycompile suggest: cannot write {target}: it is a folder", file=sys.stderr)
        return EXIT_USAGE
    if args.update:
        # an invalid policy: its located error before the run, and the file left alone
        load(args.update, profile="")
        _suggest.read_for_update(args.update)
    with tempfile.TemporaryDirectory(prefix="policycompile-") as scratch:
        policy_file = args.update or args.base
        if policy_file is None:
            policy_file = os.path.join(scratch, "empty.yaml")
            with open(policy_file, "w", encoding="utf-8") as f:
                f.write("version: 1\ntargets: {}\n")
        # --update's file runs leniently: a rule naming a function that is gone is what the
        # update marks, where `strict` would stop the run at the import
        strict = False if args.update else None
        policy = load(policy_file, profile="", strict=strict)
        handle = apply(policy, audit=True, rank_check=not args.no_rank_check)
        traced = handle.observer.traced = Traced()
        compiles = _suggest.ProgramCompiles(handle.observer)
        mains: list[types.ModuleType] = []

        def main_module(module: types.ModuleType) -> None:
            if not mains:
                mains.append(module)

        compiles.install()
        try:
            outcome = _run_program(args, handle, on_main=main_module, strict=strict)
        finally:
            compiles.uninstall()
            handle.undo()
        if isinstance(outcome, int):
            return outcome
        if outcome.report is not None:
            # the report names the policy the user gave, not the run's scratch files
            shown = args.update or args.base or "(no policy)"
            outcome = replace(outcome, report=replace(outcome.report, policy_path=shown))
        _print_report(outcome.report, args)
        status = _finish_ranks(handle, replace(outcome, violations=0), audit=False)
        if outcome.report is None:
            return status  # rank 0 writes the job's policy
        command = ["policycompile suggest", *(["--base", args.base] if args.base else [])]
        command += ["-m", args.module] if args.module else [args.program]
        findings = _suggest.collect(
            outcome.report,
            handle.observer,
            traced,
            " ".join([*command, *args.program_args]),
            main=mains[0] if mains else None,
            sites=compiles.sites,
            options=compiles.options,
        )
        if args.update:
            text, notes = _suggest.update(findings, args.update, handle.policy)
        else:
            text = _suggest.suggest(findings, out=None if target == "-" else target, base=args.base)
            notes = []
        if findings.unnamed:
            notes.append(
                f"{len(findings.unnamed)} graph break(s) in code no rule can name; the "
                "policy's header lists them (run a script whose name is not an identifier "
                "as -m, give the lambda a name, define exec()'d code in a module)"
            )
        for note in notes:
            print(f"policycompile suggest: {note}", file=sys.stderr)
        if target == "-":
            out.write(text)
        else:
            try:
                _suggest.write_checked(text, target)
            except OSError as exc:
                print(
                    f"policycompile suggest: cannot write {target}: {exc.strerror or exc}",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            print(
                f"policycompile suggest: wrote {target} "
                f"({len(findings.breaks)} graph break site(s), "
                f"{len(findings.own_modules)} own module(s) traced)",
                file=sys.stderr,
            )
    if status != 0:
        print(
            f"policycompile suggest: the program exited with status {status}; the policy "
            "covers what ran before that",
            file=sys.stderr,
        )
    return status


def _settle_children() -> None:
    """What the interpreter does at exit, done before the report so that children's reports
    are in it: collect garbage (a DataLoader iterator caught in a reference cycle shuts its
    workers down when collected), and wait for multiprocessing children that are not daemons."""
    import gc

    gc.collect()
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None:
        for child in multiprocessing.active_children():
            if not child.daemon:
                child.join()


def _schema(args: argparse.Namespace, out: TextIO) -> int:
    out.write(schema_text())
    return EXIT_OK


_COMMANDS = {
    "validate": _validate,
    "explain": _explain,
    "plan": _plan,
    "run": _run,
    "suggest": _suggest,
    "tree": _tree,
    "schema": _schema,
}


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
