"""The shape of the house (docs/architecture.md): no import cycle, small modules, a rule for
every report field in the one merge, and a repository that cites only itself."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import grimp
import pytest

from policycompile._observe import merge
from policycompile._observe.report import BreakReport, RegionReport

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "policycompile"


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("policycompile")  # TYPE_CHECKING imports count too
    cycles = [
        (module, imported)
        for module in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if graph.chain_exists(importer=imported, imported=module)
    ]
    assert cycles == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_no_module_is_over_500_lines(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 500, path


@pytest.mark.parametrize(
    ("kind", "rules"), [(RegionReport, merge.REGION), (BreakReport, merge.BREAK)]
)
def test_every_report_field_has_one_merge_rule(kind: type, rules: dict[str, object]) -> None:
    assert {f.name for f in dataclasses.fields(kind)} == set(rules)


def test_the_repository_cites_only_itself() -> None:
    # the names are spelt in pieces, so that this test does not cite them itself
    outside = re.compile(
        "|".join(["SPEC" + r"(\.md| section)", "TORCH" + "_FACTS", r"\.\./" + "shared"])
    )
    cited = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("policycompile", "tests", "docs", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*"))
        if path.suffix in (".py", ".md")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line)
    ]
    assert cited == []
