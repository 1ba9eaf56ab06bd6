"""The report of a run under a policy, as data, text and JSON (docs/reports.md)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .._policy.tree import RuleRef

#: said in every audit report (docs/reports.md, "Audit mode"): audit relaxes
#: error_on_graph_break(True), and Dynamo skips a frame that traces no operation unless that
#: flag (or fullgraph) is on, where it compiles an empty graph
AUDIT_COUNTS = (
    "  audit counts: where a normal run's error_on_graph_break is true, Dynamo compiles a frame "
    "that traces no operation as an empty graph; audit turns it off, and Dynamo skips such "
    "frames: frames and graphs may count fewer than in a normal run, never more"
)


@dataclass(frozen=True)
class RegionReport:
    """One compile entry: frames compiled, graphs, recompiles and why."""

    name: str
    rule: RuleRef | None
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
    """A graph-break site, the function it is in, and the rule that governed it: the one
    event type for a break, from the observer to the report."""

    function: str
    file: str
    line: int
    reason: str
    rule: RuleRef | None
    allowed: bool
    region: str | None
    count: int
    raised: bool
    tests: tuple[str, ...]
    ranks: tuple[int, ...] | None = None  # merged across ranks only: where it occurred
    #: the innermost function on the break's stack that a policy rule can name (outside
    #: torch): where ``policycompile suggest`` puts the break's rule
    named: str | None = None
    #: the function whose wrapper set the setting in force, where it is not ``function``
    #: itself: no rule reaches ``function``, which inherits its caller's at run time
    under: str | None = None

    @property
    def key(self) -> tuple[str, str, int, str, RuleRef | None, str | None]:
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
    unused_rules: tuple[RuleRef, ...]
    patched: tuple[tuple[RuleRef, int], ...]  # (rule, objects patched)
    warnings: tuple[str, ...]
    #: merged across ranks: the ranks reported (None: one process and its children)
    ranks: tuple[int, ...] | None = None
    #: processes whose observations this report joins (a run, its children, other ranks)
    processes: int = 1
    #: what the observer could not see (a break it failed to attribute, an exchange with
    #: other ranks that failed): under audit, a verdict cannot pass with any of these
    failures: tuple[str, ...] = ()
    #: module-level places that hold an original function and could not be pointed at its
    #: wrapper (a tuple, a frozenset, a functools.partial): calls through them are not
    #: under the policy (docs/apply.md, "What a rule reaches")
    unreached: tuple[str, ...] = ()

    @property
    def violations(self) -> tuple[BreakReport, ...]:
        """Breaks the policy forbids (recorded instead of raised in audit mode)."""
        return tuple(b for b in self.graph_breaks if not b.allowed)

    @property
    def passes(self) -> bool:
        """The audit verdict: no violation, and nothing the observer failed to see."""
        return not self.violations and not self.failures

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
            "unused_rules": [
                {"pattern": r.pattern, "rule": r.where, "rule_ref": r.to_dict()}
                for r in self.unused_rules
            ],
            "patched": [
                {"rule": str(r), "rule_ref": r.to_dict(), "objects": n} for r, n in self.patched
            ],
            "warnings": list(self.warnings),
            "failures": list(self.failures),
            "unreached": list(self.unreached),
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
            r["rule"] = _ref(r.get("rule_ref"))
            regions.append(RegionReport(**_known(RegionReport, r)))
        breaks = []
        for b in doc["graph_breaks"]:
            b = dict(b)
            b["tests"] = tuple(b.get("tests", ()))
            b["ranks"] = _ranks(b.get("ranks"))
            b["rule"] = _ref(b.get("rule_ref"))
            breaks.append(BreakReport(**_known(BreakReport, b)))
        return cls(
            policy_path=doc["policy"]["path"],
            profile=doc["policy"]["profile"],
            sha256=doc["policy"]["sha256"],
            torch_version=doc["torch"]["version"],
            audit=doc["audit"],
            regions=tuple(regions),
            graph_breaks=tuple(breaks),
            unused_rules=tuple(RuleRef.from_dict(u["rule_ref"]) for u in doc["unused_rules"]),
            patched=tuple((RuleRef.from_dict(p["rule_ref"]), p["objects"]) for p in doc["patched"]),
            warnings=tuple(doc["warnings"]),
            ranks=_ranks(doc.get("ranks")),
            processes=doc.get("processes", 1),
            failures=tuple(doc.get("failures", ())),
            unreached=tuple(doc.get("unreached", ())),
        )

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (``schemas/report.schema.json``)."""
        return json.dumps(self.to_dict(), indent=indent)

    def text(self, *, verbose: bool = False) -> str:
        """A readable report: a table of regions, then breaks grouped by rule.

        :param verbose: give each recompile reason in full (the user stack Dynamo adds),
            not only the guard that failed.
        """
        lines = [*self._head(), *self._regions(verbose), *self._breaks()]
        if self.unused_rules:
            lines.append("")
            lines.append("  unused rules (matched nothing):")
            lines.extend(f"    {r}" for r in self.unused_rules)
        lines.extend(f"  {warning}" for warning in self.warnings)
        lines.extend(
            f"  unreached: {where} (calls through it are not under the policy)"
            for where in self.unreached
        )
        lines.extend(f"  NOT SEEN: {failure}" for failure in self.failures)
        return "\n".join(lines) + "\n"

    def _head(self) -> list[str]:
        mode = " (audit)" if self.audit else ""
        profile = f", profile {self.profile}" if self.profile else ""
        lines = [
            f"policycompile report{mode}: {self.policy_path}{profile}, torch {self.torch_version}"
        ]
        if self.ranks is not None:
            lines.append(
                f"  merged from {len(self.ranks)} rank(s) ({span(self.ranks)}), "
                f"{self.processes} process(es)"
            )
        elif self.processes > 1:
            lines.append(f"  joined from {self.processes} processes (this one and its children)")
        if self.audit:
            lines.append(AUDIT_COUNTS)
        return lines

    def _regions(self, verbose: bool) -> list[str]:
        if not self.regions:
            return ["  no compile entry ran"]
        width = max(len(r.name) for r in self.regions)
        lines = ["", f"  {'region':<{width}}  frames  graphs  recompiles"]
        for r in self.regions:
            lines.append(f"  {r.name:<{width}}  {r.frames:>6}  {r.graphs:>6}  {r.recompiles:>10}")
            lines.extend(f"  {'':<{width}}    {note}" for note in self._region_notes(r, verbose))
        return lines

    def _region_notes(self, r: RegionReport, verbose: bool) -> list[str]:
        notes = []
        if r.failed_compiles:
            notes.append(f"raised while compiling: {r.failed_compiles} time(s)")
        for reason in r.recompile_reasons:
            first, *rest = reason.strip().splitlines() or ["?"]
            notes.append(f"recompiled: {first.strip()}")
            if verbose:
                notes.extend(f"    {line}" for line in rest)
        if r.stance_errors:
            notes.append(f"stopped by stance fail_on_recompile: {r.stance_errors} time(s)")
        if r.recompile_limit_hit:
            notes.append("HIT recompile_limit: Dynamo runs the frame eagerly from then on")
        if r.divergent:
            counts = "; ".join(
                f"rank {rank}: {g} graph(s), {n} recompile(s)" for rank, _f, g, n in r.by_rank
            )
            absent = sorted(set(self.ranks or ()) - set(r.ranks or ()))
            if absent:
                counts += f"; not compiled on rank(s) {span(absent)}"
            notes.append(f"DIVERGENT between ranks: {counts}")
        notes.extend(
            f"traces {inner}, itself a compile entry: torch ignores that entry's own options "
            "(fullgraph) inside this region"
            for inner in r.nested_entries
        )
        return notes

    def _breaks(self) -> list[str]:
        by_rule: dict[RuleRef | None, list[BreakReport]] = defaultdict(list)
        for b in self.graph_breaks:
            by_rule[b.rule].append(b)
        lines = [
            "",
            f"  graph breaks: {len(self.graph_breaks)}, violations: {len(self.violations)}",
        ]
        for rule in sorted(by_rule, key=lambda r: (r is None, str(r or ""))):
            lines.append(f"  governed by {rule or 'no rule (torch defaults)'}:")
            for b in by_rule[rule]:
                status = "allowed" if b.allowed else "VIOLATION"
                lines.append(f"    {status:<9} {b.function} at {b.file}:{b.line}: {b.reason}")
                if b.under is not None and rule is not None:
                    lines.append(
                        f"              in force from its caller {b.under} (no rule of its own "
                        "reaches it)"
                    )
                if b.ranks is not None and self.ranks is not None and b.ranks != self.ranks:
                    lines.append(f"              on rank(s) {span(b.ranks)} only")
                if b.tests:
                    lines.append(f"              in {', '.join(b.tests)}")
        return lines


def _rule_fields(d: dict[str, Any], rule: RuleRef | None) -> dict[str, Any]:
    """``d`` with its rule as the text a reader reads and as data another process reads."""
    d["rule"] = None if rule is None else str(rule)
    d["rule_ref"] = None if rule is None else rule.to_dict()
    return d


def _region(r: RegionReport) -> dict[str, Any]:
    d = _rule_fields(asdict(r), r.rule)
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
    d = _rule_fields(asdict(b), b.rule)
    d["tests"] = list(b.tests)
    if b.ranks is None:
        del d["ranks"]
    else:
        d["ranks"] = list(b.ranks)
    return d


def _ref(doc: Mapping[str, Any] | None) -> RuleRef | None:
    return None if doc is None else RuleRef.from_dict(doc)


def _ranks(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(v) for v in value)


def _known(cls: type, doc: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in doc.items() if k in names}


def span(ranks: Iterable[int]) -> str:
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
