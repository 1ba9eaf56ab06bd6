"""No failure hidden (docs/architecture.md, "Rules of the house"): a bug of policycompile's
while attributing a graph break is never the program's failure, and never a silent gap in
the report; under audit it fails the verdict, in the API, under `run` and under pytest."""

from __future__ import annotations

import importlib
import io
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import pytest
import torch

from policycompile._commands.cli import main
from policycompile._observe.attribution import FunctionIndex

from .conftest import BACKEND, Modules, apply

PROGRAM = """
import torch

def step(x):
    x = x + 1
    torch._dynamo.graph_break()
    return x * 2

def main():
    return step(torch.ones(2))

if __name__ == "__main__":
    print("result", main().tolist())
"""


@pytest.fixture
def attribution_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in attribution, as one would be: an exception from deep inside the observer."""

    def entered(self: FunctionIndex, *args: Any) -> list[Any]:
        raise RuntimeError("attribution bug")

    monkeypatch.setattr(FunctionIndex, "entered", entered)


def policy(modules: Modules, name: str) -> Path:
    return modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n"
        f"  {name}.step: {{compile: true}}\n"
        f"  {name}.**: {{error_on_graph_break: true}}\n"
    )


def test_a_failed_attribution_is_in_the_report_and_fails_the_audit(
    modules: Modules, attribution_fails: None
) -> None:
    name = modules.write(modules.name("prog"), PROGRAM)
    with apply(policy(modules, name), audit=True) as handle:
        out = importlib.import_module(name).main()
        report = handle.report()
    assert torch.equal(out, torch.full((2,), 4.0))  # the program itself is untouched
    assert report.failures, "the break that could not be attributed is not reported"
    assert (
        "could not attribute a graph break: RuntimeError: attribution bug" in (report.failures[0])
    )
    assert not report.passes
    assert "NOT SEEN: could not attribute a graph break" in report.text()
    assert report.to_dict()["failures"] == list(report.failures)


def test_run_audit_exits_4_when_it_could_not_see(
    modules: Modules, attribution_fails: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = modules.write(modules.name("prog"), PROGRAM)
    monkeypatch.chdir(modules.root)
    err = io.StringIO()
    with redirect_stderr(err):
        status = main(["run", str(policy(modules, name)), "--audit", "-m", name], out=io.StringIO())
    assert status == 4, err.getvalue()
    assert "the audit could not see everything" in err.getvalue()
    assert "NOT SEEN: could not attribute a graph break" in err.getvalue()


def test_pytest_audit_fails_the_session_when_it_could_not_see(
    pytester: pytest.Pytester, attribution_fails: None
) -> None:
    pytester.makepyfile(
        prog=PROGRAM,
        test_prog="import prog\n\ndef test_step():\n    assert prog.main().sum() == 8\n",
    )
    pytester.makefile(
        ".yaml",
        p=f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n"
        "  prog.step: {compile: true}\n  prog.**: {error_on_graph_break: true}\n",
    )
    result = pytester.runpytest_inprocess(
        "--policy", "p.yaml", "--policy-audit", "-p", "tests.apply.conftest"
    )
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*could not be seen*the audit cannot pass*"])
