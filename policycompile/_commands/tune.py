"""``policycompile tune`` (docs/tune.md): pick a compile strategy for the program's outer compile
entry by measuring it. One observing run finds the entries and their repeated layers; then
each candidate (the policy as it is; each layer regional; each layer nested) runs in a fresh
process with empty compile caches, and the one that does best on the goal, with the same
output and no more breaks or recompiles, is written into the policy."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from typing import Any, TextIO

from .._policy.load import load
from .._runtime.api import apply
from . import files
from . import suggest as write
from .program import EXIT_OK, EXIT_USAGE, Outcome, run_program
from .suggesting import Suggesting
from .tuning import ENV

GOALS = ("cold", "steady", "memory")


@dataclass
class Candidate:
    """A strategy: ``targets`` are the rules added to the policy (an ``extends`` of it)."""

    name: str
    kind: str  # "policy", "regional" or "nested"
    layer: str | None
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Measured:
    """What one candidate's run did."""

    candidate: Candidate
    status: int
    seconds: float  # the whole run
    cold: float | None  # from the process's start to the end of the entry's first call
    steady: float | None  # median seconds per call after the first
    calls: int
    graphs: int
    recompiles: int
    breaks: int
    peak_mib: float
    output: str | None  # the saved tensors of the first call
    error: str = ""
    rejected: str | None = None

    def value(self, goal: str) -> float | None:
        return {"cold": self.cold, "steady": self.steady, "memory": self.peak_mib}[goal]

    def row(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "candidate": c.name,
            "kind": c.kind,
            "layer": c.layer,
            "rules": c.targets,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "cold_s": None if self.cold is None else round(self.cold, 3),
            "steady_ms": None if self.steady is None else round(self.steady * 1e3, 3),
            "calls": self.calls,
            "graphs": self.graphs,
            "recompiles": self.recompiles,
            "graph_breaks": self.breaks,
            "peak_mib": round(self.peak_mib, 1),
            "rejected": self.rejected,
        }


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
    mains: list[types.ModuleType] = []

    def conclude(outcome: Outcome) -> int:
        suggesting.stop()
        if outcome.report is not None:
            seen.append(suggesting.findings(outcome.report, "tune", mains[0] if mains else None))
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
    suggesting.start()
    try:
        status = run_program(
            run_args, handle, conclude, on_main=lambda m: mains.append(m) if not mains else None
        )
    finally:
        suggesting.stop()
        plans = {name: r.plan for name, r in handle.observer.regions.items()}
        handle.undo()
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


# -- one candidate in a fresh process
#: what a launcher (torchrun) tells the processes it starts: a candidate's own launcher sets
#: them afresh for its ranks
_LAUNCHER_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
    "GROUP_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def ranks() -> tuple[int, int, int]:
    """(rank, world size, ranks on this node) of a torchrun job; (0, 1, 1) outside one."""

    def number(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, "") or default)
        except ValueError:
            return default

    world = number("WORLD_SIZE", 1)
    return number("RANK", 0), world, number("LOCAL_WORLD_SIZE", world)


def _launcher(world: int) -> list[str]:
    """How a candidate starts: one process, or a torchrun job of ``world`` ranks on a port of
    its own, so that every rank runs the same candidate."""
    if world <= 1:
        return [sys.executable]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(world),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
    ]


def run_candidate(
    candidate: Candidate,
    args: argparse.Namespace,
    policy_path: str,
    entry: str,
    scratch: str,
    world: int = 1,
) -> Measured:
    folder = tempfile.mkdtemp(prefix="candidate-", dir=scratch)
    file = os.path.join(folder, "policy.yaml")
    doc: dict[str, Any] = {"version": 1, "extends": [policy_path], "targets": candidate.targets}
    with open(file, "w", encoding="utf-8") as f:
        json.dump(doc, f)  # JSON is YAML
    report, timing = os.path.join(folder, "report.json"), os.path.join(folder, "timing.json")
    command = [*_launcher(world), "-m", "policycompile", "run", file, "--report-json", report]
    command += ["--no-rank-check", *(["--profile", args.profile] if args.profile else [])]
    command += ["-m", args.module] if args.module else [args.program]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _LAUNCHER_ENV and not k.startswith(("TORCHELASTIC_", "TORCHRUN_"))
    }
    env |= {  # a cold start: compile caches of its own, empty
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(folder, "inductor"),
        "TRITON_CACHE_DIR": os.path.join(folder, "triton"),
        ENV: json.dumps({"entry": entry, "out": timing}),
    }
    log = os.path.join(folder, "stderr.txt")
    started = time.time()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [*command, *args.program_args], env=env, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            _, wait_status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(wait_status)
    seconds = time.time() - started
    times = _json(timing) or {}
    calls = list(times.get("calls") or [])
    first = times.get("first_done")
    rep = _json(report) or {}
    regions = rep.get("regions") or []
    output = timing + ".pt"
    return Measured(
        candidate,
        proc.returncode,
        seconds,
        None if first is None else float(first) - started,
        statistics.median(calls[1:]) if len(calls) > 1 else None,
        len(calls),
        sum(int(r.get("graphs", 0)) for r in regions),
        sum(int(r.get("recompiles", 0)) for r in regions),
        len(rep.get("graph_breaks") or []),
        usage.ru_maxrss / 1024,
        output if os.path.exists(output) else None,
        _last_error(log),
    )


def _json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _last_error(log: str) -> str:
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if "Error" in ln or "Unsupported" in ln]
    return (errors or lines or [""])[-1][:300]


def judge(measured: Measured, base: Measured) -> str | None:
    """Why a candidate is rejected against the policy as it is; None when it is not."""
    if measured.status != 0:
        return f"the program failed (exit status {measured.status}): {measured.error}"
    if measured.cold is None:
        return "the outer entry never completed a call"
    if measured.breaks > base.breaks:
        return f"adds graph breaks ({measured.breaks} sites, against {base.breaks})"
    if measured.recompiles > base.recompiles:
        return f"adds recompiles ({measured.recompiles}, against {base.recompiles})"
    return _same_output(measured.output, base.output)


def _same_output(a: str | None, b: str | None) -> str | None:
    import torch

    if a is None or b is None:
        return "its output could not be compared"
    mine, theirs = torch.load(a), torch.load(b)
    if len(mine) != len(theirs):
        return f"changes the output ({len(mine)} tensors, against {len(theirs)})"
    for x, y in zip(mine, theirs, strict=True):
        if x.shape != y.shape or x.dtype != y.dtype:
            mine_, theirs_ = f"{x.dtype} {tuple(x.shape)}", f"{y.dtype} {tuple(y.shape)}"
            return f"changes the output (a {mine_} tensor, against {theirs_})"
        if not x.is_floating_point():
            if not torch.equal(x, y):
                return "changes the output (integer tensors differ)"
            continue
        low = x.dtype in (torch.float16, torch.bfloat16)
        rtol, atol = (1e-2, 1e-2) if low else (1e-4, 1e-5)
        if not torch.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            diff = (x.float() - y.float()).abs().max().item()
            return f"changes the output (largest difference {diff:.3g}, {x.dtype})"
    return None


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
        chain = {os.path.realpath(s) for s in load(policy_path, profile=args.profile).sources}
        if os.path.realpath(target) in chain:
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
    try:
        _candidates(args, observed, policy_path, scratch, began, world, measured)
    except KeyboardInterrupt:  # wherever it lands: the candidate running is stopped
        _say(f"interrupted: keeping the {len(measured)} candidate(s) measured")
        return measured, True
    return measured, False


def _candidates(
    args: argparse.Namespace,
    observed: Observed,
    policy_path: str,
    scratch: str,
    began: float,
    world: int,
    measured: list[Measured],
) -> None:
    estimate = observed.seconds
    total = len(observed.candidates)
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
                f"the policy as it is failed in a fresh process (exit status {result.status}): "
                f"{result.error or 'its entry never completed a call'}"
            )
            measured.clear()
            return
        else:
            estimate = max(result.seconds, 1.0)
        measured.append(result)
        verdict = f"rejected: {result.rejected}" if result.rejected else "ok"
        cold = "-" if result.cold is None else f"{result.cold:.2f} s"
        _say(f"[{i}/{total}] {candidate.name}: cold {cold}, {verdict}")


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
