"""The pytest plugin, driven by pytester in a subprocess as a user would run it."""

from __future__ import annotations

import json

import pytest

CODE = """
import torch

def clean(x):
    return x * 2

def dirty(x):
    x = x + 1
    torch._dynamo.graph_break()
    return x

def entry(x):
    return dirty(clean(x))
"""

TESTS = """
import torch
import mylib

def test_clean():
    assert mylib.clean(torch.ones(1)).item() == 2.0

def test_entry():
    assert mylib.entry(torch.ones(1)).item() == 3.0
"""

POLICY = """
version: 1
compile: {backend: eager}
targets:
  mylib.entry: {compile: true}
  mylib.dirty: {error_on_graph_break: %s}
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(mylib=CODE, test_mylib=TESTS)
    pytester.syspathinsert()
    return pytester


def test_passing_session_with_summary(project: pytest.Pytester) -> None:
    project.makefile(".yaml", policy=POLICY % "false")
    result = project.runpytest_subprocess("--policy", "policy.yaml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*policycompile*", "*mylib.entry*", "*allowed   mylib.dirty at *"])


def test_forbidden_break_fails_the_test(project: pytest.Pytester) -> None:
    project.makefile(".yaml", policy=POLICY % "true")
    result = project.runpytest_subprocess("--policy", "policy.yaml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*VIOLATION mylib.dirty at *", "*test_mylib.py::test_entry*"])


def test_audit_runs_everything_then_fails_the_session(project: pytest.Pytester) -> None:
    project.makefile(".yaml", policy=POLICY % "true")
    result = project.runpytest_subprocess(
        "--policy",
        "policy.yaml",
        "--policy-audit",
        "--policy-report-json",
        "report.json",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=2)  # the tests themselves pass: breaks were recorded
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*policycompile audit: 1 graph break(s) the policy forbids*"])
    report = json.loads((project.path / "report.json").read_text())
    (violation,) = report["violations"]
    assert violation["function"] == "mylib.dirty"
    assert violation["tests"] == ["test_mylib.py::test_entry"]
    assert report["audit"] is True


def test_profile_option(project: pytest.Pytester) -> None:
    project.makefile(
        ".yaml",
        policy=POLICY % "false"
        + "profiles:\n  ci:\n    targets:\n      mylib.dirty: {error_on_graph_break: true}\n",
    )
    result = project.runpytest_subprocess(
        "--policy", "policy.yaml", "--policy-profile", "ci", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, failed=1)


def test_without_policy_the_plugin_does_nothing(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert "policycompile report" not in result.stdout.str()


def test_the_tests_own_compile_is_a_region_and_paths_are_from_the_start(
    project: pytest.Pytester,
) -> None:
    """A test that compiles for itself is a region of the report, as under ``run``; and the
    report lands where pytest started, though a test changes directory."""
    project.makepyfile(
        test_own="""
        import os
        import torch
        import mylib

        def test_own_compile(tmp_path):
            os.chdir(tmp_path)
            assert torch.compile(mylib.dirty, backend="eager")(torch.ones(1)).item() == 2.0
        """
    )
    project.makefile(".yaml", policy=POLICY % "false")
    result = project.runpytest_subprocess(
        "--policy",
        "policy.yaml",
        "--policy-report-json",
        "r.json",
        "-p",
        "no:cacheprovider",
        "test_own.py",
    )
    result.assert_outcomes(passed=1)
    report = json.loads((project.path / "r.json").read_text())
    (region,) = report["regions"]
    assert region["name"] == "mylib.dirty" and region["graphs"] >= 1
    assert region["rule"].startswith("torch.compile at ")
