"""The report of a run under a policy, as data, text and JSON (SPEC section 6)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
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

    @property
    def violations(self) -> tuple[BreakReport, ...]:
        """Breaks the policy forbids (recorded instead of raised in audit mode)."""
        return tuple(b for b in self.graph_breaks if not b.allowed)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, as plain data."""
        return {
            "policy": {"path": self.policy_path, "profile": self.profile, "sha256": self.sha256},
            "torch": {"version": self.torch_version},
            "audit": self.audit,
            "regions": [
                {
                    **asdict(r),
                    "recompile_reasons": list(r.recompile_reasons),
                    "nested_entries": list(r.nested_entries),
                }
                for r in self.regions
            ],
            "graph_breaks": [_break(b) for b in self.graph_breaks],
            "violations": [_break(b) for b in self.violations],
            "unused_rules": [{"pattern": p, "rule": r} for p, r in self.unused_rules],
            "patched": [{"rule": r, "objects": n} for r, n in self.patched],
            "warnings": list(self.warnings),
        }

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
                if r.recompile_limit_hit:
                    lines.append(
                        f"{pad}HIT recompile_limit: Dynamo runs the frame eagerly from then on"
                    )
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
                if b.tests:
                    lines.append(f"              in {', '.join(b.tests)}")
        if self.unused_rules:
            lines.append("")
            lines.append("  unused rules (matched nothing):")
            lines.extend(f"    {p} ({r})" for p, r in self.unused_rules)
        for warning in self.warnings:
            lines.append(f"  {warning}")
        return "\n".join(lines) + "\n"


def _break(b: BreakReport) -> dict[str, Any]:
    d = asdict(b)
    d["tests"] = list(b.tests)
    return d


def build_report(handle: PolicyHandle) -> Report:
    """Snapshot the handle's observer and journal into a Report."""
    import torch

    observer = handle.observer
    observer.record_failed_compiles()
    with observer.lock:
        stats = [
            s for s in observer.regions.values() if s.graphs or s.frames or s.failed or s.limit_hit
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
