"""The one merge of reports: a process and its children, or the ranks of a job.

Every field has one rule, written in the tables below (docs/reports.md, "One report"). Along
the two axes the counting rule differs on purpose: the processes of one run add up, as if
one process had done it all; the ranks of a job each compile the same program, so a region's
counts are the largest any rank had, with each rank's own counts beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from .._policy.tree import RuleRef
from .report import BreakReport, RegionReport, Report

Combine = Callable[[list[Any], bool], Any]


def _count(values: list[Any], ranks: bool) -> Any:
    """Processes add up; ranks: the largest."""
    return max(values) if ranks else sum(values)


def _total(values: list[Any], ranks: bool) -> Any:
    return sum(values)


def _first(values: list[Any], ranks: bool) -> Any:
    return values[0]


def _any(values: list[Any], ranks: bool) -> Any:
    return any(values)


def _all(values: list[Any], ranks: bool) -> Any:
    return all(values)


def _each(values: list[Any], ranks: bool) -> Any:
    """Every item of every process in order; across ranks, each once."""
    items = [x for v in values for x in v]
    return _unique(items) if ranks else tuple(items)


def _once(values: list[Any], ranks: bool) -> Any:
    return _unique(x for v in values for x in v)


def _sorted_union(values: list[Any], ranks: bool) -> Any:
    return tuple(sorted({x for v in values for x in v}))


#: how each field of a region joins: recompile reasons are listed once per process that
#: recompiled (once in all across ranks); ``ranks``, ``by_rank`` and ``divergent`` say where
#: it ran, and are made by the merge across ranks itself
REGION: dict[str, Combine] = {
    "name": _first,
    "rule": _first,
    "frames": _count,
    "graphs": _count,
    "recompiles": _count,
    "recompile_reasons": _each,
    "failed_compiles": _count,
    "recompile_limit_hit": _any,
    "nested_entries": _sorted_union,
    "stance_errors": _count,
    "ranks": _first,
    "by_rank": _first,
    "divergent": _first,
}

#: how each field of a break site joins: every compiled frame that hit it counts, on every
#: process and rank; a violation anywhere is a violation
BREAK: dict[str, Combine] = {
    "function": _first,
    "file": _first,
    "line": _first,
    "reason": _first,
    "rule": _first,
    "region": _first,
    "count": _total,
    "allowed": _all,
    "raised": _any,
    "tests": _once,
    "ranks": _first,
    "named": _first,
    "under": _first,
}


def join_processes(report: Report, others: Sequence[Report]) -> Report:
    """This process's report joined with its children's (multiprocessing workers,
    subprocesses under ``policycompile run``)."""
    return merge([report, *others]) if others else report


def merge_ranks(by_rank: Mapping[int, Report]) -> Report:
    """One report for a job: each region and break with the ranks where it occurred; a
    region is divergent when its graph or recompile counts differ between the ranks (a rank
    that never compiled it counts zero)."""
    ranks = sorted(by_rank)
    return merge([by_rank[r] for r in ranks], ranks=ranks)


def merge(reports: Sequence[Report], *, ranks: Sequence[int] | None = None) -> Report:
    """One report from ``reports``: the processes of one run (``ranks`` None), or the ranks
    of a job, ``ranks[i]`` being the rank of ``reports[i]``."""
    across = ranks is not None
    reports = _named_alike(reports)
    regions: dict[str, list[tuple[int, RegionReport]]] = {}
    breaks: dict[tuple[Any, ...], list[tuple[int, BreakReport]]] = {}
    for i, report in enumerate(reports):
        rank = ranks[i] if ranks is not None else -1
        for r in report.regions:
            regions.setdefault(r.name, []).append((rank, r))
        for b in report.graph_breaks:
            breaks.setdefault(b.key, []).append((rank, b))
    joined_regions = [_join(REGION, [r for _, r in seen], across) for seen in regions.values()]
    joined_breaks = [_join(BREAK, [b for _, b in seen], across) for seen in breaks.values()]
    if ranks is not None:
        joined_regions = [
            _where(region, seen, len(ranks))
            for region, seen in zip(joined_regions, regions.values(), strict=True)
        ]
        joined_breaks = [
            replace(b, ranks=tuple(rank for rank, _ in seen))
            for b, seen in zip(joined_breaks, breaks.values(), strict=True)
        ]
    return replace(
        reports[0],
        regions=tuple(joined_regions),
        graph_breaks=tuple(joined_breaks),
        ranks=tuple(ranks) if ranks is not None else reports[0].ranks,
        unused_rules=_unused(reports),
        patched=_patched(reports),
        warnings=_unique(w for r in reports for w in r.warnings),
        failures=_unique(f for r in reports for f in r.failures),
        unreached=_unique(u for r in reports for u in r.unreached),
        processes=sum(r.processes for r in reports),
    )


def _named_alike(reports: Sequence[Report]) -> list[Report]:
    """Every rule as the first report names it: a rule is the same rule in every process
    (``RuleRef`` identity), but a child that loaded the policy by its absolute path shows
    another file name."""
    names: dict[RuleRef, RuleRef] = {}
    for report in reports:
        for ref in (
            *(r.rule for r in report.regions),
            *(b.rule for b in report.graph_breaks),
            *(rule for rule, _ in report.patched),
            *report.unused_rules,
        ):
            if ref is not None:
                names.setdefault(ref, ref)

    def named(ref: RuleRef | None) -> RuleRef | None:
        return None if ref is None else names[ref]

    return [
        replace(
            report,
            regions=tuple(replace(r, rule=named(r.rule)) for r in report.regions),
            graph_breaks=tuple(replace(b, rule=named(b.rule)) for b in report.graph_breaks),
            patched=tuple((names[rule], n) for rule, n in report.patched),
            unused_rules=tuple(names[u] for u in report.unused_rules),
        )
        for report in reports
    ]


def _join(rules: Mapping[str, Combine], items: list[Any], across: bool) -> Any:
    if len(items) == 1:
        return items[0]
    values = {
        f.name: rules[f.name]([getattr(x, f.name) for x in items], across) for f in fields(items[0])
    }
    return type(items[0])(**values)


def _where(region: RegionReport, seen: list[tuple[int, RegionReport]], world: int) -> RegionReport:
    counts = {(r.graphs, r.recompiles) for _, r in seen}
    return replace(
        region,
        ranks=tuple(rank for rank, _ in seen),
        by_rank=tuple((rank, r.frames, r.graphs, r.recompiles) for rank, r in seen),
        divergent=len(counts) > 1 or len(seen) < world,
    )


def _unused(reports: Sequence[Report]) -> tuple[RuleRef, ...]:
    """Rules unused everywhere."""
    unused = set(reports[0].unused_rules)
    for r in reports[1:]:
        unused &= set(r.unused_rules)
    return tuple(u for u in reports[0].unused_rules if u in unused)


def _patched(reports: Sequence[Report]) -> tuple[tuple[RuleRef, int], ...]:
    """The most objects any process patched, per rule."""
    most: dict[RuleRef, int] = {}
    for r in reports:
        for rule, n in r.patched:
            most[rule] = max(n, most.get(rule, 0))
    return tuple(sorted(most.items(), key=lambda rn: str(rn[0])))


def _unique(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))
