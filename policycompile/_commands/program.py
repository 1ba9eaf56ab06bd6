"""Running a program under a policy, as ``run``, ``suggest`` and ``tune`` do: the policy
exported to child processes, the main module patched as it defines things, the report
joined with the children's and merged across ranks, and the exit status."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn, TextIO

from .._errors import PolicyError
from .._observe.merge import join_processes
from .._observe.report import Report
from .._policy.load import load
from .._runtime.api import apply
from .._runtime.children import exported, read
from .._runtime.compiles import ProgramCompiles
from .._runtime.handle import PolicyHandle
from .._runtime.runner import run_main
from .._runtime.startup import adopt_forks, forget_forks
from . import files
from .tuning import install_from_env

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL, EXIT_VIOLATIONS = 0, 1, 2, 3, 4


@dataclass
class Outcome:
    """How a program run under a policy ended, and its report where this process prints it."""

    status: int
    report: Report | None  # None on a rank other than 0: rank 0 prints the job's report
    violations: int
    failures: int = 0  # what the run could not see (attribution, the ranks' exchange)


def run_program(
    args: argparse.Namespace,
    handle: PolicyHandle,
    conclude: Callable[[Outcome], int],
    *,
    on_main: Callable[[types.ModuleType], object] = lambda module: None,
    strict: bool | None = None,
) -> int:
    """Run ``args``' program under ``handle``'s policy as ``run`` does: the policy exported to
    child processes, the main module patched as it defines things, the report joined with
    the children's and merged across ranks; then ``conclude`` (print, write, decide the exit
    status), also when the program leaves through ``os._exit`` (docs/reports.md). Returns
    the exit status, or the usage error's where the program cannot be found. ``strict``
    overrides the file's for the children as it was for ``handle`` (load())."""
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

        def defined(module: types.ModuleType, name: str, obj: Any) -> Any:
            on_main(module)
            return handle.define(module, name, obj)

        handle.ranks.local = local
        guard = ExitGuard(lambda status: conclude(_outcome(handle, status, local, False)))
        guard.install()
        adopt_forks(handle, session)
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
        finally:
            guard.uninstall()
            forget_forks()
        settle_children()
        return conclude(_outcome(handle, status, local, True))


def _outcome(
    handle: PolicyHandle, status: int, local: Callable[[], Report], gather: bool
) -> Outcome:
    """How the run ended: its report (merged over the ranks, where rank 0 has it) and what
    the verdict counts. ``gather``: merge over a process group still alive now."""
    ranks = handle.ranks
    if gather:
        ranks.gather()
    report: Report | None = local() if ranks.rank is None else ranks.merged
    lost = [ranks.failure] if ranks.failure else []
    if ranks.rank is not None and ranks.rank != 0:
        # rank 0 prints and writes the job's report; this rank's exit status still
        # says whether any rank saw a violation, or failed to see
        summary = ranks.summary
        if summary is None:
            mine = local()
            return Outcome(status, None, len(mine.violations), len(mine.failures) + 1)
        return Outcome(status, None, summary["violations"], summary.get("failures", 0) + len(lost))
    if report is None:  # rank 0 without a merged report (its group failed to agree)
        report = local()
    if lost:
        report = replace(report, failures=(*report.failures, *lost))
    return Outcome(status, report, len(report.violations), len(report.failures))


class ExitGuard:
    """While the program runs, ``os._exit`` (which skips ``finally`` blocks and ``atexit``)
    first has ``conclude`` finish what the command owes the run (the report, its JSON, the
    audit verdict, a suggested policy), then exits with the status it returns. Only in this
    process: a forked child inherits the guard and exits as it asked.

    :param conclude: the program's exit status -> the command's.
    """

    def __init__(self, conclude: Callable[[int], int]) -> None:
        self.conclude = conclude
        self.pid = os.getpid()
        self.real = os._exit
        self.done = False

    def install(self) -> None:
        os._exit = self._exit

    def uninstall(self) -> None:
        if os._exit is self._exit:
            os._exit = self.real

    def _exit(self, status: int) -> NoReturn:
        if os.getpid() == self.pid and not self.done:
            self.done = True  # once, whatever conclude does
            try:
                status = self.conclude(status)
            except BaseException as exc:  # the program is leaving: say it, do not hang
                print(
                    f"policycompile: the report could not be finished at os._exit: "
                    f"{type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )
                status = status or EXIT_INTERNAL
            sys.stdout.flush()
            sys.stderr.flush()
        self.real(status)


def run_command(args: argparse.Namespace, out: TextIO) -> int:
    """``policycompile run``."""
    policy = load(args.file, profile=args.profile)  # once: the refusal reads its files too
    if args.report_json:  # from where the command started: the program may change directory
        shown, args.report_json = args.report_json, files.anchored(args.report_json, os.getcwd())
        keep = [*policy.sources, *([args.program] if args.program else [])]
        refused = report_refusal(args.report_json, shown, keep)
        if refused is not None:
            print(f"policycompile run: {refused}", file=sys.stderr)
            return EXIT_USAGE
    handle = apply(policy, audit=args.audit, rank_check=not args.no_rank_check)
    install_from_env(handle)  # a candidate of `policycompile tune`

    def conclude(outcome: Outcome) -> int:
        print_report(outcome.report, args)
        return finish_ranks(handle, outcome, args.audit)

    # the program's own torch.compile calls are regions of the report too (docs/reports.md)
    compiles = ProgramCompiles(handle.observer)
    compiles.install()
    try:
        return run_program(args, handle, conclude)
    finally:
        compiles.uninstall()
        handle.undo()


def report_refusal(report: str, shown: str, keep: list[str]) -> str | None:
    """Why ``--report-json`` cannot be written: one of the files the run reads or writes
    (``keep``: the policy, what it extends, the program), or any reason a file cannot be."""
    if any(files.same_file(report, k) for k in keep):
        return f"--report-json {shown} would overwrite the policy or the program: give another file"
    return files.refusal(report, shown, policy=False)


def print_report(report: Report | None, args: argparse.Namespace) -> None:
    if report is None:
        return
    sys.stderr.write("\n" + report.text(verbose=getattr(args, "verbose", False)))
    if args.report_json:
        with open(args.report_json, "w", encoding="utf-8") as f:
            f.write(report.to_json() + "\n")


def finish_ranks(handle: PolicyHandle, outcome: Outcome, audit: bool) -> int:
    """The exit status; every rank says it reached the end (docs/distributed.md)."""
    ranks = handle.ranks
    failing = outcome.status == 0 and audit and bool(outcome.violations or outcome.failures)
    if failing and ranks.rank:
        # torchrun may stop this rank once another exits: say why it fails, first
        print(
            f"policycompile: rank {ranks.rank}: exit status {EXIT_VIOLATIONS}: the job's audit "
            f"found {outcome.violations} violation(s)"
            + (f" and could not see everything ({outcome.failures})" if outcome.failures else "")
            + " (rank 0 printed the report)",
            file=sys.stderr,
            flush=True,
        )
    elif failing and outcome.failures:
        print(
            f"policycompile: exit status {EXIT_VIOLATIONS}: the audit could not see everything "
            f"({outcome.failures} failure(s), listed under NOT SEEN in the report): it cannot "
            "pass",
            file=sys.stderr,
        )
    ranks.finish(failing=failing)
    return EXIT_VIOLATIONS if failing else outcome.status


def settle_children() -> None:
    """What the interpreter does at exit, done before the report so that children's reports
    are in it: collect garbage (a DataLoader iterator caught in a reference cycle shuts its
    workers down when collected), and wait for multiprocessing children that are not daemons."""

    gc.collect()
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None:
        for child in multiprocessing.active_children():
            if not child.daemon:
                child.join()
