"""No failure hidden (docs/architecture.md, "Rules of the house"): a bug of policycompile's
while attributing a graph break is never the program's failure, and never a silent gap in
the report; under audit it fails the verdict, in the API, under `run` and under pytest. A
program that leaves through os._exit still gets its report and verdict."""

from __future__ import annotations

import importlib
import io
import json
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from policycompile._commands.cli import main
from policycompile._observe.attribution import FunctionIndex

from ..conftest import python
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


LEAVING = """
import os
import multiprocessing as mp
import torch

def step(x):
    x = x + 1
    torch._dynamo.graph_break()
    return x * 2

def child():
    torch.compile(step, backend="eager")(torch.ones(2))
    os._exit(0)  # a worker that leaves without cleaning up

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=child)
    p.start()
    p.join()
    torch.compile(step, backend="eager")(torch.ones(2))
    print("done", flush=True)
    os._exit(0)  # as scripts do to avoid hangs at exit
"""


def test_a_program_that_leaves_through_os_exit_gets_its_report_and_verdict(
    tmp_path: Path,
) -> None:
    """os._exit skips finally blocks and atexit: the report, its JSON and the audit verdict
    survive it, in the main process and in a child, as for the same program ending normally;
    and so does suggest's policy."""
    (tmp_path / "leaving.py").write_text(LEAVING)
    (tmp_path / "staying.py").write_text(LEAVING.replace("os._exit(0)", "pass"))
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  leaving.**: {error_on_graph_break: true}\n"
    )
    (tmp_path / "q.yaml").write_text(
        "version: 1\ntargets:\n  staying.**: {error_on_graph_break: true}\n"
    )
    reports = {}
    for name, policy in (("leaving", "p.yaml"), ("staying", "q.yaml")):
        out = f"{name}.json"
        done = python(
            "-m",
            "policycompile",
            "run",
            policy,
            "--audit",
            "--report-json",
            out,
            f"{name}.py",
            cwd=tmp_path,
        )
        assert done.returncode == 4, done.stderr[-3000:]
        assert done.stdout == "done\n" and f"VIOLATION {name}.step" in done.stderr
        reports[name] = json.loads((tmp_path / out).read_text())
    leaving, staying = reports["leaving"], reports["staying"]
    assert leaving["processes"] == staying["processes"] >= 2  # the child's report survived too

    def violations(report: dict[str, Any]) -> list[tuple[str, int, int, str | None]]:
        return sorted(
            (v["function"].split(".", 1)[1], v["line"], v["count"], v["region"] and "region")
            for v in report["violations"]
        )

    assert violations(leaving) == violations(staying) and violations(leaving)
    # the child's own compile is the same region as its parent's: one break site, one region
    (region,) = leaving["regions"]
    assert region["name"] == "leaving.step" and len(leaving["graph_breaks"]) == 1
    done = python("-m", "policycompile", "suggest", "-o", "s.yaml", "leaving.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    suggested = yaml.safe_load((tmp_path / "s.yaml").read_text())
    assert suggested["targets"]["leaving.step"]["error_on_graph_break"] is False
