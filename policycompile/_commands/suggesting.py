"""One ``suggest`` run, from the command line or the pytest plugin: observe the program's own
compile entries besides the policy's, then write what the run suggests (docs/suggest.md)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types
from dataclasses import replace
from typing import TextIO

from .._observe.report import Report
from .._observe.traced import Traced
from .._policy.load import load
from .._runtime.api import apply
from .._runtime.handle import PolicyHandle
from . import suggest as write
from .compiles import ProgramCompiles
from .findings import Findings, collect
from .program import EXIT_USAGE, finish_ranks, print_report, run_program

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
    target = args.out or args.update or SUGGEST_OUT
    refused = _refuse(args, target)
    if refused is not None:
        print(f"policycompile suggest: {refused}", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="policycompile-") as scratch:
        status = _suggest(args, out, target, scratch)
    if status != 0:
        print(
            f"policycompile suggest: the program exited with status {status}; the policy "
            "covers what ran before that",
            file=sys.stderr,
        )
    return status


def _refuse(args: argparse.Namespace, target: str) -> str | None:
    """Why the command cannot run as given, before the program runs; None when it can."""
    if args.base and args.update:
        return "give --base or --update, not both"
    if args.out is None and args.update is None and os.path.exists(target):
        return (
            f"{target} exists: give -o OUT to replace it, or --update {target} to merge this "
            "run into it"
        )
    folder = os.path.dirname(os.path.abspath(target))
    if target != "-" and not os.path.isdir(folder):
        return f"cannot write {target}: no folder {folder}"
    if target != "-" and os.path.isdir(target):
        return f"cannot write {target}: it is a folder"
    return None


def _suggest(args: argparse.Namespace, out: TextIO, target: str, scratch: str) -> int:
    policy_file = args.update or args.base
    if policy_file is None:
        policy_file = os.path.join(scratch, "empty.yaml")
        with open(policy_file, "w", encoding="utf-8") as f:
            f.write("version: 1\ntargets: {}\n")
    # --update's file runs leniently: a rule naming a function that is gone is what the
    # update marks, where `strict` would stop the run at the import
    strict = False if args.update else None
    policy = load(policy_file, profile="", strict=strict)
    if args.update:  # what update() will read: its located error before the run
        write.read_for_update(args.update)
    handle = apply(policy, audit=True, rank_check=not args.no_rank_check)
    suggesting = Suggesting(handle)
    mains: list[types.ModuleType] = []
    suggesting.start()
    try:
        outcome = run_program(
            args, handle, on_main=lambda m: mains.append(m) if not mains else None, strict=strict
        )
    finally:
        suggesting.stop()
        handle.undo()
    if isinstance(outcome, int):
        return outcome
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
        outcome.report, " ".join([*command, *args.program_args]), mains[0] if mains else None
    )
    written = _write(findings, args, out, target, handle)
    return status if written else EXIT_USAGE


def _write(
    findings: Findings, args: argparse.Namespace, out: TextIO, target: str, handle: PolicyHandle
) -> bool:
    """Write the suggested policy (or the updated one) and say what the user should know."""
    if args.update:
        text, notes = write.update(findings, args.update, handle.policy)
    else:
        text = write.suggest(findings, out=None if target == "-" else target, base=args.base)
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
            f"policycompile suggest: cannot write {target}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return False
    print(
        f"policycompile suggest: wrote {target} "
        f"({len(findings.breaks)} graph break site(s), "
        f"{len(findings.own_modules)} own module(s) traced)",
        file=sys.stderr,
    )
    return True
