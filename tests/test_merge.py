"""Joining and merging reports (children of a run, ranks of a job), and the ranks' policy
comparison, as data: the torchrun and multiprocessing tests check them end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest

from policycompile._observe.merge import join_processes, merge_ranks
from policycompile._observe.report import BreakReport, RegionReport, Report
from policycompile._observe.report import span as _span
from policycompile._policy.tree import RuleRef
from policycompile._runtime.ranks import differences

SCHEMA = json.loads((Path(__file__).parent.parent / "schemas/report.schema.json").read_text())


def _rule(pattern: str, line: int, file: str = "p.yaml") -> RuleRef:
    """A rule of p.yaml, as a process that names the file ``file`` names it."""
    return RuleRef(pattern, file, line, "p.yaml")


R = _rule("r", 3)


def _region(name: str, graphs: int, recompiles: int = 0) -> RegionReport:
    reasons = tuple(f"0/{i}: shape" for i in range(recompiles))
    return RegionReport(name, R, 1, graphs, recompiles, reasons)


def _break(function: str, count: int = 1, *, allowed: bool = True) -> BreakReport:
    return BreakReport(
        function,
        "m.py",
        7,
        "Call to graph_break()",
        R,
        allowed,
        "m.E",
        count,
        not allowed,
        (),
    )


def _report(
    regions: tuple[RegionReport, ...] = (),
    breaks: tuple[BreakReport, ...] = (),
    unused: tuple[RuleRef, ...] = (_rule("a.*", 5), _rule("b.*", 6)),
) -> Report:
    return Report(
        "p.yaml", None, "0" * 64, "2.13.0", False, regions, breaks, unused, ((R, 2),), ("w",)
    )


def test_children_add_up_into_one_process_view() -> None:
    parent = _report((_region("m.E", 2),), (_break("m.f"),))
    child = _report(
        (_region("m.E", 1, recompiles=1), _region("m.F", 1)),
        (_break("m.f", 2), _break("m.g", allowed=False)),
        unused=(_rule("b.*", 6),),
    )
    joined = join_processes(parent, [child])
    assert joined.processes == 2 and joined.ranks is None
    regions = {r.name: (r.graphs, r.recompiles) for r in joined.regions}
    assert regions == {"m.E": (3, 1), "m.F": (1, 0)}
    assert {b.function: b.count for b in joined.graph_breaks} == {"m.f": 3, "m.g": 1}
    assert [v.function for v in joined.violations] == ["m.g"]
    # unused only if unused everywhere
    assert [(u.pattern, u.where) for u in joined.unused_rules] == [("b.*", "p.yaml:6")]
    assert joined.warnings == ("w",)
    assert join_processes(parent, []) is parent


def test_a_child_naming_the_policy_by_its_absolute_path_joins_the_same_rules() -> None:
    """``run p.yaml`` gives its children the policy's absolute path: their rules, breaks and
    unused rules are the parent's all the same."""
    parent = replace(_report(breaks=(_break("m.f"),)), patched=((R, 2),))
    there = _rule("r", 3, "/job/p.yaml")
    absolute = replace(_break("m.f"), rule=there)
    child = replace(
        _report(
            (replace(_region("m.E", 1), rule=there),),
            (absolute,),
            unused=(_rule("b.*", 6, "/job/p.yaml"),),
        ),
        patched=((there, 3),),
    )
    joined = join_processes(parent, [child])
    assert [(b.function, str(b.rule), b.count) for b in joined.graph_breaks] == [
        ("m.f", "r (p.yaml:3)", 2)
    ]
    assert [str(r.rule) for r in joined.regions] == ["r (p.yaml:3)"]
    assert [(u.pattern, u.where) for u in joined.unused_rules] == [("b.*", "p.yaml:6")]
    assert [(str(r), n) for r, n in joined.patched] == [("r (p.yaml:3)", 3)]


def test_ranks_merge_with_where_and_divergence() -> None:
    same = _report((_region("m.E", 2), _region("m.F", 1)), (_break("m.f"),))
    more = _report(
        (_region("m.E", 3, recompiles=1), _region("m.F", 1)), (_break("m.g", allowed=False),)
    )
    merged = merge_ranks({0: same, 1: more, 2: same, 3: _report((_region("m.E", 2),))})
    assert merged.ranks == (0, 1, 2, 3) and merged.processes == 4
    e, f = merged.regions
    assert (e.name, e.graphs, e.recompiles, e.divergent) == ("m.E", 3, 1, True)
    assert e.by_rank == ((0, 1, 2, 0), (1, 1, 3, 1), (2, 1, 2, 0), (3, 1, 2, 0))
    # the same counts where it ran, but rank 3 never compiled it: divergent too
    assert (f.ranks, f.divergent) == ((0, 1, 2), True)
    (violation,) = merged.violations
    assert violation.ranks == (1,)
    allowed = next(b for b in merged.graph_breaks if b.function == "m.f")
    assert (allowed.ranks, allowed.count) == ((0, 2), 2)
    text = merged.text()
    assert "merged from 4 rank(s) (0-3), 4 process(es)" in text
    assert "DIVERGENT between ranks: rank 0: 2 graph(s), 0 recompile(s); rank 1: 3" in text
    assert "not compiled on rank(s) 3" in text and "on rank(s) 1 only" in text

    steady = merge_ranks({0: same, 1: same})
    assert not any(r.divergent for r in steady.regions)


def test_merged_report_round_trips_through_json_and_the_schema() -> None:
    merged = merge_ranks(
        {0: _report((_region("m.E", 2),), (_break("m.f"),)), 1: _report((_region("m.E", 2),))}
    )
    doc = merged.to_dict()
    jsonschema.validate(doc, SCHEMA)
    assert doc["ranks"] == [0, 1] and doc["regions"][0]["by_rank"][1]["rank"] == 1
    assert Report.from_dict(json.loads(json.dumps(doc))) == merged
    single = _report((_region("m.E", 2),), (_break("m.f"),))
    doc = single.to_dict()
    jsonschema.validate(doc, SCHEMA)
    assert "ranks" not in doc and "ranks" not in doc["regions"][0]
    assert Report.from_dict(doc) == single
    assert Report.from_dict(replace(single, processes=3).to_dict()).processes == 3


def test_differences_name_each_field_and_its_ranks() -> None:
    base = {
        "sha256": "a" * 64,
        "profile": None,
        "audit": False,
        "policycompile": "0.1.0",
        "torch": "2.13.0",
        "path": "p.yaml",
    }
    assert differences({r: dict(base) for r in range(8)}) == ""
    # the same policy at another path on each node: the same policy
    assert differences({r: {**base, "path": f"/node{r}/p.yaml"} for r in range(8)}) == ""
    odd = {r: dict(base) for r in range(8)}
    odd[5] = {**base, "sha256": "b" * 64, "profile": "strict"}
    odd[6] = {**base, "torch": "2.12.0"}
    told = differences(odd)
    assert f"sha256: {'a' * 12} (p.yaml) on rank(s) 0-4,6-7; {'b' * 12} (p.yaml) on rank(s) 5" in (
        told
    )
    assert 'profile: null on rank(s) 0-4,6-7; "strict" on rank(s) 5' in told
    assert 'torch: "2.13.0" on rank(s) 0-5,7; "2.12.0" on rank(s) 6' in told
    assert "audit" not in told


def test_span_collapses_runs() -> None:
    assert _span([3, 0, 1, 2, 6, 8, 9]) == "0-3,6,8-9"
    assert _span([]) == "" and _span([4]) == "4"
    assert _span(range(4096)) == "0-4095"


def test_a_store_that_fails_is_said_and_stops_every_rank() -> None:
    """A failure of the job's store is the store's error, never taken for a rank that sent
    no policy, and never a pass: the agreement raises with what the store raised."""
    import torch.distributed as tdist

    from policycompile._errors import PolicyRankError
    from policycompile._runtime.ranks import Ranks

    server = tdist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    client = tdist.TCPStore("127.0.0.1", server.port, is_master=False, timeout=timedelta(seconds=2))
    ranks = Ranks({"sha256": "a" * 64, "path": "p.yaml"}, check=True)
    ranks.rank, ranks.world = 0, 2
    del server
    with pytest.raises(
        PolicyRankError, match="the exchange through the job's store failed"
    ) as info:
        ranks._agree(client)
    assert "sent no policy" not in str(info.value)
