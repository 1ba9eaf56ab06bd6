"""``policycompile tune`` (docs/tune.md): pick a compile strategy for the program's outer compile
entry by measuring it. One observing run finds the entries and their repeated layers; then
each candidate (the policy as it is; each layer regional; each layer nested) runs in a fresh
process with empty compile caches, and the one that does best on the goal, with the same
output and no more breaks or recompiles, is written into the policy."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from typing import Any, TextIO

from .._policy.load import load
from .._runtime.api import apply
from . import files
from . import suggest as write
from .candidates import Candidate, Measured, judge, run_candidate
from .program import EXIT_OK, EXIT_USAGE, Outcome
from .suggesting import Suggesting
from .tuning import ranks

GOALS = ("cold", "steady", "memory")


# -- the observing run
@dataclass
class Observed:
    entry: str
    seconds: float
    candidates: list[Candidate]
    skipped: list[str]


def observe(args: argparse.Namespace, policy_path: str) -> Observed | str:
    """Run the program once under the policy (audit mode, as ``suggest``), in this process:
    its outer compile entry and the repeated layers under it. A string says why not."""
    policy = load(policy_path, profile=args.profile)
    handle = apply(policy, audit=True, rank_check=False)
    suggesting = Suggesting(handle)
    seen: list[Any] = []
    plans: dict[str, Any] = {}

    def conclude(outcome: Outcome, main: types.ModuleType | None) -> int:
        plans.update((name, r.plan) for name, r in handle.observer.regions.items())
        if outcome.report is not None:
            seen.append(suggesting.findings(outcome.report, "tune", main))
        return outcome.status

    run_args = argparse.Namespace(
        module=args.module,
        program=args.program,
        program_args=args.program_args,
        report_json=None,
        no_rank_check=True,
        verbose=False,
    )
    start = time.perf_counter()
    status = suggesting.run(run_args, conclude)
    seconds = time.perf_counter() - start
    if status != 0:
        return f"the program failed under the policy as it is (exit status {status})"
    if not seen:  # a rank other than 0: rank 0 has the job's report, and decides
        return Observed("", seconds, [], [])
    findings = seen[0]
    entries = [r for r in findings.report.regions if r.name in findings.base_entries]
    if not entries:
        return (
            "no compile entry of the policy ran (tune measures the policy's entries; the "
            "program's own torch.compile calls are in its source)"
        )
    outer = max(entries, key=lambda r: r.graphs).name
    options = dict(plans[outer].compile) if outer in plans else {}
    candidates = [Candidate("policy (as it is)", "policy", None)]
    skipped: list[str] = []
    layers = dict(findings.instances.get(outer, {}))
    for cls, paths in findings.outermost.get(outer, {}).items():
        layers.setdefault(cls, paths)
    for cls in sorted(layers):
        short = cls.rsplit(".", 1)[-1]
        candidates.append(
            Candidate(
                f"regional {short}",
                "regional",
                cls,
                {cls: {"compile": options or True}, outer: {"compile": False}},
            )
        )
        candidates.append(
            Candidate(f"nested {short}", "nested", cls, {cls: {"nested_compile_region": True}})
        )
    if len(candidates) == 1:
        skipped.append(f"{outer} runs no repeated nn.Module class: no layer to compile alone")
    return Observed(outer, seconds, candidates, skipped)


# -- the command
def _say(text: str) -> None:
    print(f"policycompile tune: {text}", file=sys.stderr, flush=True)


def tune_command(args: argparse.Namespace, out: TextIO) -> int:
    """``policycompile tune``."""
    start = os.getcwd()
    policy_path = files.anchored(args.file, start)
    if args.goal not in GOALS:
        print(f"policycompile tune: --goal is one of {', '.join(GOALS)}", file=sys.stderr)
        return EXIT_USAGE
    target = None
    if args.out and args.update:
        print("policycompile tune: give -o OUT or --update, not both", file=sys.stderr)
        return EXIT_USAGE
    if args.update:
        target = policy_path
    elif args.out:
        target = files.anchored(args.out, start)
        if os.path.realpath(target) in files.extends_chain(policy_path, args.profile):
            print(
                f"policycompile tune: cannot write {args.out}: the policy is, or extends, "
                f"that file: give another -o, or --update",
                file=sys.stderr,
            )
            return EXIT_USAGE
        refused = files.refusal(target, args.out)
        if refused is not None:
            print(f"policycompile tune: {refused}", file=sys.stderr)
            return EXIT_USAGE
    rank, world, local = ranks()
    if world > 1 and local != world:
        print(
            f"policycompile tune: the job spans nodes ({world} ranks, {local} here): tune "
            "runs its candidates on one node",
            file=sys.stderr,
        )
        return EXIT_USAGE
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="policycompile-tune-") as scratch:
        observed = observe(args, policy_path)  # every rank: the program is the job's
        if isinstance(observed, str):
            print(f"policycompile tune: {observed}", file=sys.stderr)
            return EXIT_USAGE
        if rank != 0:
            _say(f"rank {rank}: rank 0 runs each candidate on all {world} ranks, and writes")
            return EXIT_OK
        if not observed.candidates:
            _say("the run left no report to tune from (the ranks could not agree on one)")
            return EXIT_USAGE
        _say(
            f"observed {observed.entry} in {observed.seconds:.1f} s; "
            f"{len(observed.candidates)} candidate(s)"
        )
        for line in observed.skipped:
            _say(f"skipped: {line}")
        measured, interrupted = _measure(args, observed, policy_path, scratch, began, world)
        if not measured:
            return EXIT_USAGE
        winner = _choose(measured, args.goal)
        _print(measured, winner, args, out, observed, interrupted)
        if winner is None or winner.candidate.kind == "policy" or target is None:
            return EXIT_OK
        return _write(winner, measured[0], args, target, policy_path)


def _measure(
    args: argparse.Namespace,
    observed: Observed,
    policy_path: str,
    scratch: str,
    began: float,
    world: int,
) -> tuple[list[Measured], bool]:
    """Run the candidates in turn within the budget: the policy as it is first (the
    baseline), then each other while its estimated cost fits; Ctrl-C keeps what was measured."""
    measured: list[Measured] = []
    estimate = observed.seconds
    total = len(observed.candidates)
    try:  # around the whole loop: wherever Ctrl-C lands, the candidate running is stopped
        for i, candidate in enumerate(observed.candidates, 1):
            left = args.budget - (time.perf_counter() - began)
            if measured and estimate > left:
                _say(
                    f"[{i}/{total}] {candidate.name}: skipped, about {estimate:.0f} s and "
                    f"{max(left, 0):.0f} s of the budget left"
                )
                continue
            _say(f"[{i}/{total}] {candidate.name}: running (about {estimate:.0f} s)")
            result = run_candidate(candidate, args, policy_path, observed.entry, scratch, world)
            if measured:
                result.rejected = judge(result, measured[0])
            elif result.status != 0 or result.cold is None:
                _say(
                    f"the policy as it is failed in a fresh process (exit status "
                    f"{result.status}): {result.error or 'its entry never completed a call'}"
                )
                return [], False
            else:
                estimate = max(result.seconds, 1.0)
            measured.append(result)
            verdict = f"rejected: {result.rejected}" if result.rejected else "ok"
            cold = "-" if result.cold is None else f"{result.cold:.2f} s"
            _say(f"[{i}/{total}] {candidate.name}: cold {cold}, {verdict}")
    except KeyboardInterrupt:
        _say(f"interrupted: keeping the {len(measured)} candidate(s) measured")
        return measured, True
    except SystemExit:  # SIGTERM while a candidate ran (docs/tune.md): it was stopped
        _say("terminated: the candidate running was stopped, and nothing is written")
        raise
    return measured, False


def _choose(measured: list[Measured], goal: str) -> Measured | None:
    accepted = [m for m in measured if m.rejected is None and m.value(goal) is not None]
    if not accepted:
        return None
    return min(accepted, key=lambda m: (m.value(goal), m.candidate.kind != "policy"))


def _print(
    measured: list[Measured],
    winner: Measured | None,
    args: argparse.Namespace,
    out: TextIO,
    observed: Observed,
    interrupted: bool,
) -> None:
    if args.json:
        doc = {
            "entry": observed.entry,
            "goal": args.goal,
            "interrupted": interrupted,
            "candidates": [m.row() for m in measured],
            "winner": winner.candidate.name if winner is not None else None,
        }
        out.write(json.dumps(doc, indent=2) + "\n")
        return
    base = measured[0]
    head = f"{'candidate':<34} {'cold s':>8} {'x':>6} {'steady ms':>10} {'graphs':>6} "
    head += f"{'recomp':>6} {'breaks':>6} {'peak MiB':>9}  verdict"
    lines = [f"policycompile tune: {observed.entry}, goal {args.goal}", head]
    for m in measured:
        ratio = "" if m.cold is None or not base.cold else f"{m.cold / base.cold:.2f}"
        lines.append(
            f"{m.candidate.name:<34} {_fmt(m.cold, 1):>8} {ratio:>6} {_fmt(m.steady, 1e3):>10} "
            f"{m.graphs:>6} {m.recompiles:>6} {m.breaks:>6} {m.peak_mib:>9.0f}  "
            + ("WINNER" if m is winner else f"rejected: {m.rejected}" if m.rejected else "ok")
        )
    if winner is None:
        lines.append("no candidate ran as the policy does: nothing to choose")
    elif winner.candidate.kind == "policy":
        lines.append("the policy as it is does best: nothing to change")
    out.write("\n".join(lines) + "\n")


def _fmt(value: float | None, scale: float) -> str:
    return "-" if value is None else f"{value * scale:.2f}"


def _write(
    winner: Measured, base: Measured, args: argparse.Namespace, target: str, policy_path: str
) -> int:
    """The policy with the winner's rules, through the comment-keeping round trip (the
    winner's own run was its verification: nothing is written that did not run)."""
    from ruamel.yaml.comments import CommentedMap

    doc = write.read_for_update(policy_path)
    targets = doc.get("targets")
    if not isinstance(targets, CommentedMap):
        targets = doc["targets"] = CommentedMap()
    note = _measurement(winner, base, args.goal)
    for name, settings in winner.candidate.targets.items():
        targets[name] = CommentedMap(settings)
        targets.yaml_set_comment_before_after_key(name, before=note, indent=2)
    text = write._dump_update(doc)
    shown = args.out or args.file
    try:
        write.write_checked(text, target, style=files.read(policy_path)[1])
    except (OSError, ValueError) as exc:
        print(f"policycompile tune: cannot write {shown}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"policycompile tune: wrote {shown} ({winner.candidate.name})", file=sys.stderr)
    return EXIT_OK


def _measurement(winner: Measured, base: Measured, goal: str) -> str:
    parts = [f"tune: {winner.candidate.name}, chosen for the {goal} goal"]
    if winner.cold is not None and base.cold:
        parts.append(
            f"cold first call {winner.cold:.2f} s against {base.cold:.2f} s "
            f"({winner.cold / base.cold:.2f}x)"
        )
    if winner.steady is not None and base.steady:
        parts.append(f"steady {winner.steady * 1e3:.2f} ms/call against {base.steady * 1e3:.2f} ms")
    parts.append(f"peak {winner.peak_mib:.0f} MiB against {base.peak_mib:.0f} MiB")
    parts.append(time.strftime("measured %Y-%m-%d"))
    return "; ".join(parts)
