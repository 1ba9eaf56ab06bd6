"""The ``policycompile`` command line: validate, explain, plan, tree, run, schema."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn, TextIO

from .._engine.modules import plan_imported
from .._errors import PolicyError
from .._policy.lint import Diagnostic
from .._policy.load import MAX_BYTES, load
from .._policy.schema import schema_text
from .._policy.validate import validate_file
from .program import EXIT_INTERNAL, EXIT_INVALID, EXIT_OK, EXIT_USAGE, run_command
from .show import explain_json, explain_text, plan_json, plan_text, tree_text
from .suggesting import SUGGEST_OUT, suggest_command
from .tune import tune_command

if TYPE_CHECKING:
    pass


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

    p = sub.add_parser(
        "tune",
        help="measure compile strategies for the policy's outer entry in fresh processes, "
        "and write the best",
        usage="policycompile tune FILE [--profile P] [--goal cold|steady|memory] "
        "[--budget SECONDS] [-o OUT | --update] [--json] (-m MODULE | SCRIPT) [ARGS...]",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--profile", default=None)
    p.add_argument("--goal", default="cold", help="cold (default), steady or memory")
    p.add_argument("--budget", type=float, default=1800.0, metavar="SECONDS", help="default 1800")
    p.add_argument("-o", dest="out", default=None, metavar="OUT", help="write the tuned policy")
    p.add_argument("--update", action="store_true", help="write the tuned policy to FILE")
    p.add_argument("--json", action="store_true", help="the measurements as JSON")
    p.add_argument("-m", dest="module", default=None, metavar="MODULE")

    sub.add_parser("schema", help="print the JSON Schema of policy files")
    return parser


#: per command that runs a program: its options that take a value, and its positionals
#: before SCRIPT
_PROGRAM_COMMANDS = {
    "run": (("--profile", "--report-json"), 1),
    "suggest": (("-o", "--base", "--update", "--report-json"), 0),
    "tune": (("--profile", "--goal", "--budget", "-o"), 1),
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
    if argv[:1] in (["run"], ["suggest"], ["tune"]):
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


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    policy = load(args.file, profile=args.profile)
    explanation = policy.explain(args.name)
    if args.json:
        json.dump(explain_json(policy, explanation), out, indent=2)
        out.write("\n")
    else:
        out.write(explain_text(policy, explanation))
    return EXIT_OK


def _tree(args: argparse.Namespace, out: TextIO) -> int:
    out.write(tree_text(load(args.file, profile=args.profile)))
    return EXIT_OK


def _plan(args: argparse.Namespace, out: TextIO) -> int:
    import importlib

    policy = load(args.file, profile=args.profile)
    if "" not in sys.path:
        sys.path.insert(0, "")  # as `python -m` does: modules of the current directory
    for name in args.modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            print(f"policycompile: cannot import {name}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    planned = plan_imported(policy)
    if args.json:
        json.dump(plan_json(policy, planned), out, indent=2)
        out.write("\n")
    else:
        out.write(plan_text(policy, planned))
    return EXIT_INVALID if planned.problems and policy.strict else EXIT_OK


def _schema(args: argparse.Namespace, out: TextIO) -> int:
    out.write(schema_text())
    return EXIT_OK


_COMMANDS = {
    "validate": _validate,
    "explain": _explain,
    "plan": _plan,
    "run": run_command,
    "suggest": suggest_command,
    "tune": tune_command,
    "tree": _tree,
    "schema": _schema,
}


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
