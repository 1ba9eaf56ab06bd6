"""One ``suggest`` run, from the command line or the pytest plugin: observe the program's own
compile entries besides the policy's, then write what the run suggests (docs/suggest.md)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TextIO

from .._observe.report import Report
from .._observe.traced import Traced
from .._policy.load import load
from .._runtime.api import apply
from .._runtime.compiles import ProgramCompiles
from .._runtime.handle import PolicyHandle
from . import files
from . import suggest as write
from .findings import Findings, collect
from .program import (
    EXIT_USAGE,
    Outcome,
    finish_ranks,
    print_report,
    report_refusal,
    run_program,
)

#: ``suggest`` writes here when given no ``-o``.
SUGGEST_OUT = "policy.yaml"


class Suggesting:
    """What one suggest run observes under ``handle``'s policy (applied in audit mode, so
    that one run sees every break): each graph's traced files and module instances, and the
    program's own ``torch.compile`` calls, while started."""

    def __init__(self, handle: PolicyHandle) -> None:
        self.handle = handle
        self.traced = Traced()
        self.compiles = ProgramCompiles(handle.observer)

    def start(self) -> None:
        self.handle.observer.traced = self.traced
        self.compiles.install()

    def stop(self) -> None:
        self.compiles.uninstall()
        self.handle.observer.traced = None

    def run(
        self,
        args: argparse.Namespace,
        conclude: Callable[[Outcome, types.ModuleType | None], int],
        *,
        strict: bool | None = None,
    ) -> int:
        """Run ``args``' program observed (``run_program``), then ``conclude`` with how it
        ended and its main module; the policy is undone at the end, whatever happens."""
        mains: list[types.ModuleType] = []

        def concluded(outcome: Outcome) -> int:
            self.stop()
            return conclude(outcome, mains[0] if mains else None)

        self.start()
        try:
            return run_program(
                args,
                self.handle,
                concluded,
                on_main=lambda m: mains.append(m) if not mains else None,
                strict=strict,
            )
        finally:
            self.stop()
            self.handle.undo()

    def findings(
        self, report: Report, command: str, main: types.ModuleType | None = None
    ) -> Findings:
        """What the run saw, from its report (joined with children and ranks)."""
        return collect(
            report,
            self.handle.observer,
            self.traced,
            command,
            main=main,
            sites=self.compiles.sites,
            options=self.compiles.options,
        )


def suggest_command(args: argparse.Namespace, out: TextIO) -> int:
    """``policycompile suggest``: run the program in audit mode under ``--base`` (or
    ``--update``'s file, or nothing), observing its own torch.compile calls too, and write
    the policy the run suggests."""
    start = os.getcwd()
    shown = args.out or args.update or SUGGEST_OUT
    paths = _Paths(
        shown,
        files.anchored(shown, start),
        args.update and files.anchored(args.update, start),
        args.base and files.anchored(args.base, start),
    )
    refused = _refuse(args, paths)
    if refused is None and args.report_json:
        report, shown_report = files.anchored(args.report_json, start), args.report_json
        keep = [paths.target, *(p for p in (paths.update, paths.base) if p)]
        if paths.base:
            keep += load(paths.base, profile="").sources
        if args.program:
            keep.append(args.program)
        refused = report_refusal(report, shown_report, keep)
        args.report_json = report
    if refused is not None:
        print(f"policycompile suggest: {refused}", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="policycompile-") as scratch:
        status = _suggest(args, out, paths, scratch)
    if status != 0:
        print(
            f"policycompile suggest: the program exited with status {status}; the policy "
            "covers what ran before that",
            file=sys.stderr,
        )
    return status


@dataclass(frozen=True)
class _Paths:
    """The files of one suggest run, as given (for messages) and from where it started (for
    reading and writing: the program may change directory, as Hydra does)."""

    shown: str  # the output as the user named it
    target: str
    update: str | None
    base: str | None


def _refuse(args: argparse.Namespace, paths: _Paths) -> str | None:
    """Why the command cannot run as given, before the program runs; None when it can."""
    if args.base and args.update:
        return "give --base or --update, not both"
    shown, target = paths.shown, paths.target
    if args.out is None and args.update is None and os.path.lexists(target):
        return (
            f"{shown} exists: give -o OUT to replace it, or --update {shown} to merge this "
            "run into it"
        )
    update_chain: set[str] = set()
    if paths.update is not None:  # its own located errors first (a FIFO, bad YAML): exit 1
        update_chain = files.extends_chain(paths.update)
    if target == "-":
        return None
    if paths.base is not None and os.path.realpath(target) in files.extends_chain(paths.base):
        return (
            f"cannot write {shown}: the --base policy is, or extends, that file (the "
            f"suggestion extends the base): give another -o, or --update {args.base}"
        )
    extended = update_chain - {os.path.realpath(paths.update or "")}  # not the file itself
    if os.path.realpath(target) in extended:
        return f"cannot write {shown}: --update {args.update} extends it"
    return files.refusal(target, shown)


def _suggest(args: argparse.Namespace, out: TextIO, paths: _Paths, scratch: str) -> int:
    policy_file = args.update or args.base  # loaded now, before the program can move
    if policy_file is None:
        policy_file = os.path.join(scratch, "empty.yaml")
        with open(policy_file, "w", encoding="utf-8") as f:
            f.write("version: 1\ntargets: {}\n")
    # --update's file runs leniently: a rule naming a function that is gone is what the
    # update marks, where `strict` would stop the run at the import
    strict = False if args.update else None
    policy = load(policy_file, profile="", strict=strict)
    if paths.update:  # what update() will read: its located error before the run
        write.read_for_update(paths.update)
    handle = apply(policy, audit=True, rank_check=not args.no_rank_check)
    suggesting = Suggesting(handle)

    def conclude(outcome: Outcome, main: types.ModuleType | None) -> int:
        """Print the run's report and write its policy (also at the program's os._exit)."""
        if outcome.report is not None:
            # the report names the policy the user gave, not the run's scratch files
            shown = args.update or args.base or "(no policy)"
            outcome = replace(outcome, report=replace(outcome.report, policy_path=shown))
        print_report(outcome.report, args)
        status = finish_ranks(handle, replace(outcome, violations=0, failures=0), audit=False)
        if outcome.report is None:
            return status  # rank 0 writes the job's policy
        command = ["policycompile suggest", *(["--base", args.base] if args.base else [])]
        command += ["-m", args.module] if args.module else [args.program]
        findings = suggesting.findings(
            outcome.report, " ".join([*command, *args.program_args]), main
        )
        return status if _write(findings, args, out, paths, handle) else EXIT_USAGE

    return suggesting.run(args, conclude, strict=strict)


def _write(
    findings: Findings, args: argparse.Namespace, out: TextIO, paths: _Paths, handle: PolicyHandle
) -> bool:
    """Write the suggested policy (or the updated one) and say what the user should know."""
    shown, target = paths.shown, paths.target
    report = findings.report
    if not report.regions and not report.graph_breaks and os.path.lexists(target):
        print(
            f"policycompile suggest: the run observed nothing (no compile entry ran): {shown} "
            "is left as it was",
            file=sys.stderr,
        )
        return True
    if paths.update is not None:
        text, notes = write.update(findings, paths.update, handle.policy, shown=args.update)
    else:
        text = write.suggest(findings, out=None if target == "-" else target, base=paths.base)
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
        return True
    try:
        write.write_checked(text, target)
    except OSError as exc:
        print(
            f"policycompile suggest: cannot write {shown}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return False
    print(
        f"policycompile suggest: wrote {shown} "
        f"({len(findings.breaks)} graph break site(s), "
        f"{len(findings.own_modules)} own module(s) traced)",
        file=sys.stderr,
    )
    return True
