"""The report of a run under a policy, as data, text and JSON (SPEC section 6)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._handle import PolicyHandle


@dataclass(frozen=True)
class RegionReport:
    """One compile entry: frames compiled, graphs, recompiles and why."""

    name: str
    rule: str | None
    frames: int
    graphs: int
    recompiles: int
    recompile_reasons: tuple[str, ...]
    failed_compiles: int = 0
    recompile_limit_hit: bool = False  # Dynamo gave up compiling a frame: it runs eagerly
    nested_entries: tuple[str, ...] = ()  # other compile entries traced inside this one
    # merged across ranks only: where it ran, (rank, frames, graphs, recompiles) of each,
    # and whether those counts differ between ranks (rank-dependent control flow)
    ranks: tuple[int, ...] | None = None
    by_rank: tuple[tuple[int, int, int, int], ...] = ()
    divergent: bool = False
    stance_errors: int = 0  # calls that set_stance("fail_on_recompile") stopped from compiling


@dataclass(frozen=True)
class BreakReport:
    """A graph-break site, the function it is in, and the rule that governed it."""

    function: str
    file: str
    line: int
    reason: str
    rule: str | None
    allowed: bool
    region: str | None
    count: int
    raised: bool
    tests: tuple[str, ...]
    ranks: tuple[int, ...] | None = None  # merged across ranks only: where it occurred

    @property
    def key(self) -> tuple[str, str, int, str, str | None, str | None]:
        """What makes two observations the same break site."""
        return (self.function, self.file, self.line, self.reason, self.rule, self.region)


@dataclass(frozen=True)
class Report:
    """What torch.compile did under a policy."""

    policy_path: str
    profile: str | None
    sha256: str
    torch_version: str
    audit: bool
    regions: tuple[RegionReport, ...]
    graph_breaks: tuple[BreakReport, ...]
    unused_rules: tuple[tuple[str, str], ...]  # (pattern, file:line)
    patched: tuple[tuple[str, int], ...]  # (rule, objects patched)
    warnings: tuple[str, ...]
    #: merged across ranks: the ranks reported (None: one process and its children)
    ranks: tuple[int, ...] | None = None
    #: processes whose observations this report joins (a run, its children, other ranks)
    processes: int = 1

    @property
    def violations(self) -> tuple[BreakReport, ...]:
        """Breaks the policy forbids (recorded instead of raised in audit mode)."""
        return tuple(b for b in self.graph_breaks if not b.allowed)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, as plain data. ``ranks`` (top level, and on each region and
        break) appear only in a report merged across ranks."""
        doc: dict[str, Any] = {
            "policy": {"path": self.policy_path, "profile": self.profile, "sha256": self.sha256},
            "torch": {"version": self.torch_version},
            "audit": self.audit,
            "processes": self.processes,
            "regions": [_region(r) for r in self.regions],
            "graph_breaks": [_break(b) for b in self.graph_breaks],
            "violations": [_break(b) for b in self.violations],
            "unused_rules": [{"pattern": p, "rule": r} for p, r in self.unused_rules],
            "patched": [{"rule": r, "objects": n} for r, n in self.patched],
            "warnings": list(self.warnings),
        }
        if self.ranks is not None:
            doc["ranks"] = list(self.ranks)
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Report:
        """The report a :meth:`to_dict` document describes (one written by another process)."""
        regions = []
        for r in doc["regions"]:
            r = dict(r)
            for key in ("recompile_reasons", "nested_entries"):
                r[key] = tuple(r.get(key, ()))
            r["by_rank"] = tuple(
                (e["rank"], e["frames"], e["graphs"], e["recompiles"]) for e in r.get("by_rank", ())
            )
            r["ranks"] = _ranks(r.get("ranks"))
            regions.append(RegionReport(**_known(RegionReport, r)))
        breaks = []
        for b in doc["graph_breaks"]:
            b = dict(b)
            b["tests"] = tuple(b.get("tests", ()))
            b["ranks"] = _ranks(b.get("ranks"))
            breaks.append(BreakReport(**_known(BreakReport, b)))
        return cls(
            policy_path=doc["policy"]["path"],
            profile=doc["policy"]["profile"],
            sha256=doc["policy"]["sha256"],
            torch_version=doc["torch"]["version"],
            audit=doc["audit"],
            regions=tuple(regions),
            graph_breaks=tuple(breaks),
            unused_rules=tuple((u["pattern"], u["rule"]) for u in doc["unused_rules"]),
            patched=tuple((p["rule"], p["objects"]) for p in doc["patched"]),
            warnings=tuple(doc["warnings"]),
            ranks=_ranks(doc.get("ranks")),
            processes=doc.get("processes", 1),
        )

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (``schemas/report.schema.json``)."""
        return json.dumps(self.to_dict(), indent=indent)

    def text(self, *, verbose: bool = False) -> str:
        """A readable report: a table of regions, then breaks grouped by rule.

        :param verbose: give each recompile reason in full (the user stack Dynamo adds),
            not only the guard that failed.
        """
        mode = " (audit)" if self.audit else ""
        profile = f", profile {self.profile}" if self.profile else ""
        lines = [
            f"policycompile report{mode}: {self.policy_path}{profile}, torch {self.torch_version}"
        ]
        if self.ranks is not None:
            lines.append(
                f"  merged from {len(self.ranks)} rank(s) ({_span(self.ranks)}), "
                f"{self.processes} process(es)"
            )
        elif self.processes > 1:
            lines.append(f"  joined from {self.processes} processes (this one and its children)")
        if self.regions:
            width = max(len(r.name) for r in self.regions)
            lines.append("")
            lines.append(f"  {'region':<{width}}  frames  graphs  recompiles")
            for r in self.regions:
                lines.append(
                    f"  {r.name:<{width}}  {r.frames:>6}  {r.graphs:>6}  {r.recompiles:>10}"
                )
                if r.failed_compiles:
                    lines.append(
                        f"  {'':<{width}}    raised while compiling: {r.failed_compiles} time(s)"
                    )
                pad = f"  {'':<{width}}    "
                for reason in r.recompile_reasons:
                    first, *rest = reason.strip().splitlines() or ["?"]
                    lines.append(f"{pad}recompiled: {first.strip()}")
                    if verbose:
                        lines.extend(f"{pad}    {line}" for line in rest)
                if r.stance_errors:
                    lines.append(
                        f"{pad}stopped by stance fail_on_recompile: {r.stance_errors} time(s)"
                    )
                if r.recompile_limit_hit:
                    lines.append(
                        f"{pad}HIT recompile_limit: Dynamo runs the frame eagerly from then on"
                    )
                if r.divergent:
                    counts = "; ".join(
                        f"rank {rank}: {g} graph(s), {n} recompile(s)"
                        for rank, _f, g, n in r.by_rank
                    )
                    absent = sorted(set(self.ranks or ()) - set(r.ranks or ()))
                    if absent:
                        counts += f"; not compiled on rank(s) {_span(absent)}"
                    lines.append(f"{pad}DIVERGENT between ranks: {counts}")
                for inner in r.nested_entries:
                    lines.append(
                        f"{pad}traces {inner}, itself a compile entry: torch ignores that "
                        "entry's own options (fullgraph) inside this region"
                    )
        else:
            lines.append("  no compile entry ran")
        by_rule: dict[str | None, list[BreakReport]] = defaultdict(list)
        for b in self.graph_breaks:
            by_rule[b.rule].append(b)
        lines.append("")
        lines.append(
            f"  graph breaks: {len(self.graph_breaks)}, violations: {len(self.violations)}"
        )
        for rule in sorted(by_rule, key=lambda r: (r is None, r or "")):
            lines.append(f"  governed by {rule or 'no rule (torch defaults)'}:")
            for b in by_rule[rule]:
                status = "allowed" if b.allowed else "VIOLATION"
                where = f"{b.file}:{b.line}"
                lines.append(f"    {status:<9} {b.function} at {where}: {b.reason}")
                if b.ranks is not None and self.ranks is not None and b.ranks != self.ranks:
                    lines.append(f"              on rank(s) {_span(b.ranks)} only")
                if b.tests:
                    lines.append(f"              in {', '.join(b.tests)}")
        if self.unused_rules:
            lines.append("")
            lines.append("  unused rules (matched nothing):")
            lines.extend(f"    {p} ({r})" for p, r in self.unused_rules)
        for warning in self.warnings:
            lines.append(f"  {warning}")
        return "\n".join(lines) + "\n"


def _region(r: RegionReport) -> dict[str, Any]:
    d = asdict(r)
    d["recompile_reasons"] = list(r.recompile_reasons)
    d["nested_entries"] = list(r.nested_entries)
    if r.ranks is None:
        for key in ("ranks", "by_rank", "divergent"):
            del d[key]
    else:
        d["ranks"] = list(r.ranks)
        d["by_rank"] = [
            {"rank": rank, "frames": f, "graphs": g, "recompiles": n} for rank, f, g, n in r.by_rank
        ]
    return d


def _break(b: BreakReport) -> dict[str, Any]:
    d = asdict(b)
    d["tests"] = list(b.tests)
    if b.ranks is None:
        del d["ranks"]
    else:
        d["ranks"] = list(b.ranks)
    return d


def _ranks(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(v) for v in value)


def _known(cls: type, doc: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in doc.items() if k in names}


def _span(ranks: Iterable[int]) -> str:
    """``0-3,6``: sorted ranks with runs collapsed (one line, even for thousands of ranks)."""
    out: list[str] = []
    run: list[int] = []
    for r in sorted(set(ranks)):
        if run and r == run[-1] + 1:
            run.append(r)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [r]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def _unique(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


def _place(text: str) -> str:
    """A rule's ``file:line`` (alone, or in ``pattern (file:line)``) as every process of a run
    names it: a child process loads the policy by its absolute path where its parent may have
    been given a relative one."""
    head, paren, tail = text.rpartition("(")
    inner = tail[:-1] if paren and tail.endswith(")") else text
    path, colon, line = inner.rpartition(":")
    short = f"{os.path.basename(path)}:{line}" if colon else inner
    return f"{head}({short})" if inner is not text else short


def _named_as(parent: Report, child: Report) -> Report:
    """``child``'s rules named as ``parent`` names them (``_place``), so that a break that
    happened in both is one site, under one rule."""
    names: dict[str, str] = {}
    for rule in (
        *(r.rule for r in parent.regions),
        *(b.rule for b in parent.graph_breaks),
        *(rule for rule, _ in parent.patched),
    ):
        if rule:
            names.setdefault(_place(rule), rule)

    def at(rule: str) -> str:
        return names.get(_place(rule), rule)

    return replace(
        child,
        regions=tuple(replace(r, rule=r.rule and at(r.rule)) for r in child.regions),
        graph_breaks=tuple(replace(b, rule=b.rule and at(b.rule)) for b in child.graph_breaks),
        patched=tuple((at(rule), n) for rule, n in child.patched),
    )


def _common(reports: Sequence[Report]) -> dict[str, Any]:
    """What processes under one policy join the same way, merged or summed: rules unused
    everywhere, the most objects any process patched per rule, every warning once."""
    unused = {(p, _place(r)) for p, r in reports[0].unused_rules}
    for report in reports[1:]:
        unused &= {(p, _place(r)) for p, r in report.unused_rules}
    patched: dict[str, int] = {}
    named: dict[str, str] = {}  # each rule as the first process names it
    for report in reports:
        for rule, n in report.patched:
            key = named.setdefault(_place(rule), rule)
            patched[key] = max(n, patched.get(key, 0))
    return {
        "unused_rules": tuple(u for u in reports[0].unused_rules if (u[0], _place(u[1])) in unused),
        "patched": tuple(sorted(patched.items())),
        "warnings": _unique(w for r in reports for w in r.warnings),
        "processes": sum(r.processes for r in reports),
    }


def _same_site(seen: BreakReport, b: BreakReport) -> BreakReport:
    """One break site observed twice (two processes): counts add up, a violation anywhere is
    a violation."""
    return replace(
        seen,
        count=seen.count + b.count,
        allowed=seen.allowed and b.allowed,
        raised=seen.raised or b.raised,
        tests=_unique([*seen.tests, *b.tests]),
    )


def join_processes(report: Report, others: Sequence[Report]) -> Report:
    """This process's report joined with its children's (multiprocessing workers,
    subprocesses under ``policycompile run``): counts add up, as if one process had done it
    all; a break site keeps one entry."""
    if not others:
        return report
    everyone = [report, *(_named_as(report, o) for o in others)]
    regions: dict[str, RegionReport] = {}
    for rep in everyone:
        for r in rep.regions:
            seen = regions.get(r.name)
            regions[r.name] = (
                r
                if seen is None
                else replace(
                    seen,
                    frames=seen.frames + r.frames,
                    graphs=seen.graphs + r.graphs,
                    recompiles=seen.recompiles + r.recompiles,
                    recompile_reasons=seen.recompile_reasons + r.recompile_reasons,
                    failed_compiles=seen.failed_compiles + r.failed_compiles,
                    recompile_limit_hit=seen.recompile_limit_hit or r.recompile_limit_hit,
                    nested_entries=tuple(sorted({*seen.nested_entries, *r.nested_entries})),
                    stance_errors=seen.stance_errors + r.stance_errors,
                )
            )
    breaks: dict[tuple[Any, ...], BreakReport] = {}
    for rep in everyone:
        for b in rep.graph_breaks:
            seen_b = breaks.get(b.key)
            breaks[b.key] = b if seen_b is None else _same_site(seen_b, b)
    return replace(
        report,
        regions=tuple(regions.values()),
        graph_breaks=tuple(breaks.values()),
        **_common(everyone),
    )


def merge_ranks(by_rank: Mapping[int, Report]) -> Report:
    """One report for a job: each region and break with the ranks where it occurred. A
    region's counts are the largest any rank had; it is divergent when its graph or recompile
    counts differ between the ranks (a rank that never compiled it counts zero)."""
    ranks = tuple(sorted(by_rank))
    reports = [by_rank[r] for r in ranks]
    names = _unique(r.name for rep in reports for r in rep.regions)
    regions = []
    for name in names:
        present = [(rank, r) for rank in ranks for r in by_rank[rank].regions if r.name == name]
        first = present[0][1]
        counts = {(r.graphs, r.recompiles) for _, r in present}
        regions.append(
            replace(
                first,
                frames=max(r.frames for _, r in present),
                graphs=max(r.graphs for _, r in present),
                recompiles=max(r.recompiles for _, r in present),
                recompile_reasons=_unique(x for _, r in present for x in r.recompile_reasons),
                failed_compiles=max(r.failed_compiles for _, r in present),
                recompile_limit_hit=any(r.recompile_limit_hit for _, r in present),
                stance_errors=sum(r.stance_errors for _, r in present),
                nested_entries=tuple(sorted({x for _, r in present for x in r.nested_entries})),
                ranks=tuple(rank for rank, _ in present),
                by_rank=tuple((rank, r.frames, r.graphs, r.recompiles) for rank, r in present),
                divergent=len(counts) > 1 or len(present) < len(ranks),
            )
        )
    breaks: dict[tuple[Any, ...], BreakReport] = {}
    for rank in ranks:
        for b in by_rank[rank].graph_breaks:
            seen = breaks.get(b.key)
            breaks[b.key] = (
                replace(b, ranks=(rank,))
                if seen is None
                else replace(_same_site(seen, b), ranks=(*(seen.ranks or ()), rank))
            )
    return replace(
        reports[0],
        regions=tuple(regions),
        graph_breaks=tuple(breaks.values()),
        ranks=ranks,
        **_common(reports),
    )


def build_report(handle: PolicyHandle) -> Report:
    """Snapshot the handle's observer and journal into a Report."""
    import torch

    observer = handle.observer
    observer.record_failed_compiles()
    with observer.lock:
        stats = [
            s
            for s in observer.regions.values()
            if s.graphs or s.frames or s.failed or s.limit_hit or s.stance_errors
        ]
        breaks = tuple(
            BreakReport(
                e.function,
                e.file,
                e.line,
                e.reason,
                e.rule,
                e.allowed,
                e.region,
                e.count,
                e.raised,
                tuple(e.tests),
            )
            for e in observer.breaks.values()
        )
    regions = []
    for s in stats:
        again = observer.recompiles(s)
        regions.append(
            RegionReport(
                s.name,
                s.rule,
                len(s.frames),
                s.graphs,
                len(again),
                tuple(again),
                len(s.failed),
                s.limit_hit,
                tuple(sorted(s.inner)),
                stance_errors=s.stance_errors,
            )
        )
    counts: dict[str, int] = defaultdict(int)
    for record in handle.records:
        for rule in set(record.plan.rules.values()):
            counts[rule] += 1
    policy = handle.policy
    return Report(
        policy_path=policy.path,
        profile=policy.profile,
        sha256=policy.fingerprint,
        torch_version=str(torch.__version__),
        audit=handle.audit,
        regions=tuple(regions),
        graph_breaks=breaks,
        unused_rules=tuple((r.pattern.text, r.position.short) for r in handle.unused_rules()),
        patched=tuple(sorted(counts.items())),
        warnings=tuple(handle.warnings),
    )
